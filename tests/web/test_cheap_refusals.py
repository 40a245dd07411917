"""Wrong secrets are cheap to refuse: a failed key is remembered (one argon2 per window,
not per request), and an address that keeps failing gets 429 before any argon2 work,
while other addresses and valid keys go on working. A real server over real sockets."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from support.api_server import running_api

from twinforge.graphql.rate_limit import RateLimiter
from twinforge.runtime.stores import FalkorDBStore

ME = {"query": "{ me { id } }"}


def _client(local_address: str) -> httpx.Client:
    # The whole of 127/8 is loopback on Linux: a second address for the same machine.
    return httpx.Client(transport=httpx.HTTPTransport(local_address=local_address), timeout=10)


def test_wrong_secrets_cost_a_few_argon2_and_then_429(
    embedded_store: FalkorDBStore, tmp_path: Path
) -> None:
    limiter = RateLimiter(0.01, 40)  # 40 failures at once, then hardly any
    with running_api(embedded_store, tmp_path, failure_limiter=limiter) as api:
        good = api.keys.create("panel", ["viewer"])
        wrong = good.secret[:-4] + ("AAAA" if not good.secret.endswith("AAAA") else "BBBB")
        with _client("127.0.0.1") as attacker, _client("127.0.0.2") as neighbour:
            # A valid key seen before stays cheap from the attacker's address too.
            assert attacker.post(api.url, json=ME, headers={"X-API-Key": good.secret}).json() == {
                "data": {"me": {"id": f"key:{good.key_id}"}}
            }
            before = api.hasher.verifications
            answers = [
                attacker.post(api.url, json=ME, headers={"X-API-Key": wrong}) for _ in range(40)
            ]
            assert {a.status_code for a in answers} == {200}
            assert all(
                a.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED" for a in answers
            )
            assert api.hasher.verifications - before == 1  # the negative cache answered 39

            started = time.perf_counter()
            refused = attacker.post(api.url, json=ME, headers={"X-API-Key": wrong})
            took = time.perf_counter() - started
            assert refused.status_code == 429, refused.text
            assert "too many failed authentications from 127.0.0.1" in refused.text
            assert took < 0.5
            # A key never seen needs argon2: not from this address now.
            fresh = api.keys.create("fresh", ["viewer"])
            hashed = api.hasher.verifications
            blocked = attacker.post(api.url, json=ME, headers={"X-API-Key": fresh.secret})
            assert blocked.status_code == 429 and api.hasher.verifications == hashed
            assert (
                attacker.post(api.url, json=ME, headers={"X-API-Key": good.secret}).json()["data"][
                    "me"
                ]["id"]
                == f"key:{good.key_id}"
            )
            # Another address is not held responsible.
            ok = neighbour.post(api.url, json=ME, headers={"X-API-Key": fresh.secret})
            assert ok.json() == {"data": {"me": {"id": f"key:{fresh.key_id}"}}}
            assert api.hasher.verifications == hashed + 1


def test_many_different_wrong_secrets_stop_at_the_burst(
    embedded_store: FalkorDBStore, tmp_path: Path
) -> None:
    with running_api(embedded_store, tmp_path, failure_limiter=RateLimiter(0.01, 5)) as api:
        good = api.keys.create("panel", ["viewer"])
        prefix = good.secret[:-43]
        statuses = []
        with _client("127.0.0.1") as attacker:
            for i in range(40):
                guess = prefix + f"{i:043d}"
                statuses.append(
                    attacker.post(api.url, json=ME, headers={"X-API-Key": guess}).status_code
                )
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
        assert api.hasher.verifications == 5
