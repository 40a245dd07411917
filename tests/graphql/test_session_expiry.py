"""A subscription's credentials are re-checked every ``session_check_s``: a revoked or
expired key, a revoked or expired JWT stops the stream with a GraphQL error saying why,
then the socket closes. A real server, a real WebSocket client, real events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.api_server import RunningApi, running_api
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from twinforge.auth.token_revocations import TokenRevocations
from twinforge.auth.tokens import TokenIssuer
from twinforge.runtime.events import EventKind
from twinforge.runtime.stores import FalkorDBStore

CHECK_S = 1.0
#: Scheduling slack on a loaded two-core machine, on top of the check interval.
SLACK_S = 0.8
SUBSCRIPTION = 'subscription { telemetry(twinId: "pump-9") { values } }'


@pytest.fixture
def api(embedded_store: FalkorDBStore, tmp_path: Path) -> Iterator[RunningApi]:
    revocations = TokenRevocations(tmp_path / "api_keys.sqlite3")
    tokens = TokenIssuer(b"k" * 32, revocations=revocations, leeway_s=0)
    with running_api(embedded_store, tmp_path, session_check_s=CHECK_S, tokens=tokens) as api:
        stop = threading.Event()

        def publish() -> None:
            n = 0
            while not stop.wait(0.05):
                n += 1
                api.services.live.publish(
                    EventKind.TELEMETRY,
                    "pump-9",
                    {"values": {"flowRate": n}, "sourceTime": time.time(), "kind": "telemetry"},
                )

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        yield api
        stop.set()
        publisher.join()
    revocations.close()


async def _stream_until_lapse(
    api: RunningApi, init: dict[str, Any], lapse: Callable[[], float]
) -> tuple[float, dict[str, Any], int, str]:
    """Subscribe with ``init``, see updates, call ``lapse`` (it returns when the
    credentials lapsed); the seconds from then to the error, the error, the close code
    and reason."""
    async with connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "next" and first["payload"]["data"]["telemetry"]["values"]
        lapsed_at = await asyncio.to_thread(lapse)
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), CHECK_S + 5))
            if message["type"] != "next":
                break
        took = time.monotonic() - lapsed_at
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code is not None
        return took, message, ws.close_code, ws.close_reason or ""


def _check(result: tuple[float, dict[str, Any], int, str], says: str) -> None:
    took, message, code, reason = result
    assert message["type"] == "error" and message["id"] == "1"
    error = message["payload"][0]
    assert says in error["message"] and error["extensions"]["code"] == "UNAUTHENTICATED"
    assert code == 4403 and says in reason
    assert took <= CHECK_S + SLACK_S, f"the stream went on {took:.2f} s after the lapse"


def test_a_revoked_key_ends_its_subscription(api: RunningApi) -> None:
    issued = api.keys.create("dashboard", ["viewer"])

    def revoke() -> float:
        time.sleep(0.3)
        assert api.keys.revoke(issued.key_id)
        return time.monotonic()

    _check(asyncio.run(_stream_until_lapse(api, {"apiKey": issued.secret}, revoke)), "revoked")


def test_an_expired_key_ends_its_subscription(api: RunningApi) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    issued = api.keys.create("temp", ["viewer"], expires=expires)

    def expiry() -> float:
        wait = (expires - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait))
        return time.monotonic()

    _check(asyncio.run(_stream_until_lapse(api, {"apiKey": issued.secret}, expiry)), "expired")


def test_a_revoked_jwt_ends_its_subscription(api: RunningApi) -> None:
    admin = api.keys.create("admin", ["admin"]).secret
    issued = api.tokens.issue_token("ada", ["viewer"])

    def revoke() -> float:
        time.sleep(0.3)
        answer = httpx.post(
            api.url,
            json={"query": f'mutation {{ revokeToken(jti: "{issued.jti}") }}'},
            headers={"X-API-Key": admin},
        ).json()
        assert answer == {"data": {"revokeToken": True}}
        return time.monotonic()

    init = {"Authorization": f"Bearer {issued.token}"}
    _check(asyncio.run(_stream_until_lapse(api, init, revoke)), "revoked")


def test_an_expired_jwt_ends_its_subscription(api: RunningApi) -> None:
    issued = api.tokens.issue_token("ada", ["viewer"], ttl_s=2)

    def expiry() -> float:
        time.sleep(max(0.0, issued.expires - time.time()))
        return time.monotonic()

    init = {"Authorization": f"Bearer {issued.token}"}
    _check(asyncio.run(_stream_until_lapse(api, init, expiry)), "token expired")
