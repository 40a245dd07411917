"""API keys: argon2 hashes only on disk, verification with a cache, revocation, hostile
input. Real SQLite files and real argon2 (cheap parameters except where the default
cost itself is under test)."""

from __future__ import annotations

import re
import stat
import threading
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from twinforge.auth.api_keys import ApiKeyInfo, ApiKeyStore, HashingNeeded
from twinforge.auth.errors import InvalidInput
from twinforge.auth.principal import Principal
from twinforge.graphql.errors import BAD_USER_INPUT

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    with ApiKeyStore(tmp_path / "keys.db", hasher=CHEAP) as keys:
        yield keys


def _stored_bytes(path: Path) -> bytes:
    """The database and its WAL and shared-memory files, as written on disk."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_a_key_verifies_to_its_principal(store: ApiKeyStore) -> None:
    issued = store.create("ci-deploy", ["operator"])

    assert re.fullmatch(r"tfk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", issued.secret)
    assert issued.secret.startswith(f"tfk_{issued.key_id}_")
    assert issued.roles == frozenset({"operator"})
    principal = store.verify(issued.secret)
    assert principal == Principal(f"key:{issued.key_id}", frozenset({"operator"}), "ci-deploy")
    assert principal.name == "ci-deploy"  # shown, never compared
    assert "tfk_" not in repr(issued)  # the secret stays out of logs


def test_only_an_argon2_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    # Default argon2 parameters: what a server uses when nobody passes a hasher.
    with ApiKeyStore(path) as keys:
        issued = keys.create("reporting", ["viewer"])
        secret_part = issued.secret.split("_", 2)[2]  # tfk_<id>_<secret>: it may hold "_"
        on_disk = _stored_bytes(path)

        assert issued.secret.encode() not in on_disk
        assert secret_part.encode() not in on_disk
        assert b"$argon2id$v=19$m=65536,t=3,p=4$" in on_disk
        assert keys.verify(issued.secret) is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_cache_spares_argon2_after_the_first_request(tmp_path: Path) -> None:
    with ApiKeyStore(tmp_path / "keys.db") as keys:  # argon2's real cost
        secret = keys.create("dashboard", ["viewer"]).secret

        started = time.perf_counter()
        assert keys.verify(secret) is not None
        first = time.perf_counter() - started

        started = time.perf_counter()
        for _ in range(20):
            assert keys.verify(secret) is not None
        twenty_cached = time.perf_counter() - started

    assert twenty_cached < first, (first, twenty_cached)


def test_without_hashing_only_a_key_verified_before_is_answered(store: ApiKeyStore) -> None:
    issued = store.create("dashboard", ["viewer"])
    with pytest.raises(HashingNeeded):
        store.verify(issued.secret, hashing=False)  # never verified: argon2 must tell
    forged = f"tfk_{issued.key_id}_{'A' * 43}"
    with pytest.raises(HashingNeeded):
        store.verify(forged, hashing=False)  # a live key id: only argon2 can refuse it
    assert store.verify("tfk_0000000000000000_" + "A" * 43, hashing=False) is None  # no row
    principal = store.verify(issued.secret)
    assert store.verify(issued.secret, hashing=False) == principal
    store.revoke(issued.key_id)
    assert store.verify(issued.secret, hashing=False) is None


def test_a_wrong_secret_for_a_real_key_id_fails(store: ApiKeyStore) -> None:
    issued = store.create("ci", ["operator"])
    forged = f"tfk_{issued.key_id}_{'A' * 43}"

    assert store.verify(forged) is None
    assert store.verify(issued.secret) is not None
    assert store.verify(forged) is None  # a cached good key doesn't vouch for a bad one


def test_revoke_takes_effect_at_once(store: ApiKeyStore) -> None:
    issued = store.create("ci", ["operator"])
    assert store.verify(issued.secret) is not None  # now cached

    assert store.revoke(issued.key_id) is True
    assert store.verify(issued.secret) is None
    assert store.revoke(issued.key_id) is False  # already revoked
    assert store.revoke("0000000000000000") is False
    info = store.get(issued.key_id)
    assert info is not None and info.revoked is not None


def test_revoking_in_another_process_is_seen_despite_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with ApiKeyStore(path, hasher=CHEAP) as server, ApiKeyStore(path, hasher=CHEAP) as admin:
        issued = server.create("ci", ["operator"])
        assert server.verify(issued.secret) is not None  # cached in the server

        assert admin.revoke(issued.key_id) is True
        assert server.verify(issued.secret) is None


def test_list_and_get_show_no_secrets(store: ApiKeyStore) -> None:
    first = store.create("alpha", ["viewer"])
    second = store.create("beta", ["admin", "viewer"])
    store.revoke(first.key_id)

    listed = store.list()

    assert [k.name for k in listed] == ["alpha", "beta"]
    assert all(isinstance(k, ApiKeyInfo) for k in listed)
    assert listed[0].revoked is not None and listed[1].revoked is None
    assert listed[1].roles == frozenset({"admin", "viewer"})
    assert listed[1].principal == Principal(
        f"key:{second.key_id}", frozenset({"admin", "viewer"}), "beta"
    )
    shown = repr(listed)
    assert first.secret not in shown and second.secret not in shown and "argon2" not in shown
    assert store.get(second.key_id) == listed[1]
    assert store.get("ffffffffffffffff") is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name: must not be empty"),
        ("   ", "name: must not be empty"),
        ("x" * 101, "name: at most 100 characters, not 101"),
        ("line\nbreak", "name: only printable characters"),
        ("nul\x00", "name: only printable characters"),
        (42, "name: expected a string, not int"),
    ],
)
def test_bad_names_are_refused(store: ApiKeyStore, name: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.create(name, ["viewer"])  # type: ignore[arg-type]

    assert caught.value.message.startswith(message)
    assert caught.value.extensions == {"code": BAD_USER_INPUT, "field": "name"}


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["root"], "roles: unknown role 'root'; the roles are viewer, operator, engineer, admin"),
        ([], "roles: at least one role is needed"),
        ("admin", "roles: expected a list of roles, not a single string"),
        ([1], "roles: each role is a string, not int"),
    ],
)
def test_bad_roles_are_refused(store: ApiKeyStore, roles: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        store.create("ci", roles)  # type: ignore[arg-type]
    assert store.list() == []


HOSTILE = [
    "",
    "tfk_",
    "tfk__",
    "x" * 10_000_000,
    "tfk_" + "a" * 10_000_000,
    "Bearer tfk_0123456789abcdef_" + "A" * 43,
    "tfk_0123456789ABCDEF_" + "A" * 43,  # upper-case hex is not ours
    "tfk_0123456789abcdef_" + "A" * 42 + "é",
    "tfk_0123456789abcdef_" + "A" * 43 + "\x00",
    "tfk_' OR '1'='1' --_" + "A" * 43,
    "tfk_0123456789abcdef_'; DROP TABLE api_keys; --" + "A" * 16,
    "tfk_\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669abcdef_" + "A" * 43,
    "😀" * 100,
]


def test_hostile_keys_are_refused_quickly(store: ApiKeyStore) -> None:
    real = store.create("ci", ["operator"])

    started = time.perf_counter()
    for text in [*HOSTILE, None, b"tfk_bytes", 12345]:
        assert store.verify(text) is None  # type: ignore[arg-type]
    assert time.perf_counter() - started < 1.0
    assert store.verify(real.secret) is not None  # the table survived the injections
    assert len(store.list()) == 1


def test_verify_from_many_threads(store: ApiKeyStore) -> None:
    secrets = [store.create(f"worker-{i}", ["viewer"]).secret for i in range(4)]
    results: list[Principal | None] = []
    lock = threading.Lock()

    def work(secret: str) -> None:
        for _ in range(20):
            principal = store.verify(secret)
            with lock:
                results.append(principal)

    threads = [threading.Thread(target=work, args=(s,)) for s in secrets * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 160 and all(r is not None for r in results)


def test_the_cache_stays_bounded(tmp_path: Path) -> None:
    with ApiKeyStore(tmp_path / "keys.db", hasher=CHEAP, cache_size=2) as keys:
        issued = [keys.create(f"k{i}", ["viewer"]) for i in range(5)]
        for key in issued:
            assert keys.verify(key.secret) is not None
        # Evicted entries verify again (through argon2), they don't fail.
        assert all(keys.verify(key.secret) is not None for key in issued)
        assert len(keys._cache) <= 2
