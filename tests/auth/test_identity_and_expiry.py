"""Identities are key ids and token subjects, never display names; keys expire; names
are unique; JWTs carry a jti and can be revoked. Real SQLite files, real argon2 (cheap
parameters), the sample factory's models and safety policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.durations import parse_duration
from twinforge.auth.errors import InvalidInput, Unauthenticated
from twinforge.auth.token_revocations import TokenRevocations
from twinforge.auth.tokens import TokenIssuer
from twinforge.runtime.commands import (
    ApprovalError,
    AuditLog,
    CommandService,
    CommandStatus,
    SafetyPolicy,
)
from twinforge.sim.factory import MODELS_DIR, SAFETY_POLICY
from twinforge.twin_models import parse_models

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SECRET = b"s" * 32
IMM = "dtmi:com:twinforge:factory:InjectionMoldingMachine;1"


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[ApiKeyStore]:
    with ApiKeyStore(tmp_path / "api_keys.sqlite3", hasher=CHEAP) as store:
        yield store


def test_key_names_are_unique_among_live_keys(keys: ApiKeyStore) -> None:
    first = keys.create("line-3 panel", ["viewer"])
    with pytest.raises(InvalidInput) as caught:
        keys.create("line-3 panel", ["admin"])
    assert caught.value.field == "name"
    assert str(caught.value).startswith("name: must be unique")
    assert first.key_id in str(caught.value)
    keys.revoke(first.key_id)
    again = keys.create("line-3 panel", ["viewer"])  # the name is free once revoked
    assert again.key_id != first.key_id


def test_an_expired_key_is_refused_like_a_revoked_one(keys: ApiKeyStore) -> None:
    soon = keys.create("temp", ["viewer"], expires=datetime.now(UTC) + timedelta(seconds=1))
    auth = Authenticator(keys, TokenIssuer(SECRET))
    assert auth.authenticate({"X-API-Key": soon.secret}).id == f"key:{soon.key_id}"
    assert keys.get(soon.key_id).expires == soon.expires
    time.sleep(1.1)
    assert keys.verify(soon.secret) is None
    with pytest.raises(Unauthenticated, match=f"API key {soon.key_id} expired at"):
        auth.authenticate({"X-API-Key": soon.secret})
    for bad, rule in (
        (datetime.now(UTC) - timedelta(seconds=1), "future"),
        (datetime.now() + timedelta(days=1), "time zone"),
    ):
        with pytest.raises(InvalidInput, match=rule) as caught:
            keys.create("late", ["viewer"], expires=bad)
        assert caught.value.field == "expires"


def test_durations_name_the_field() -> None:
    assert parse_duration("30d", field="expiresIn") == timedelta(days=30)
    assert parse_duration(" 90m", field="expiresIn") == timedelta(minutes=90)
    for text in ("30", "soon", "0s", "-1d", "99999w"):
        with pytest.raises(InvalidInput, match="expiresIn: ") as caught:
            parse_duration(text, field="expiresIn")
        assert caught.value.field == "expiresIn"


def test_a_revoked_jwt_fails_and_old_rows_are_pruned(tmp_path: Path) -> None:
    with TokenRevocations(tmp_path / "api_keys.sqlite3", keep_s=0) as revocations:
        issuer = TokenIssuer(SECRET, revocations=revocations, leeway_s=0)
        issued = issuer.issue_token("ada", ["engineer"])
        assert jwt.decode(issued.token, options={"verify_signature": False})["jti"] == issued.jti
        assert issuer.verify(issued.token).id == "jwt:ada"
        assert revocations.revoke(issued.jti)
        assert not revocations.revoke(issued.jti)  # once
        assert not revocations.revoke("not-a-token-of-ours")
        with pytest.raises(Unauthenticated, match=f"token {issued.jti} was revoked"):
            issuer.verify(issued.token)
        # Another process (the CLI) sees the same list.
        other = TokenIssuer(SECRET, revocations=TokenRevocations(revocations.path))
        with pytest.raises(Unauthenticated, match="was revoked"):
            other.verify(issued.token)
        other.revocations.close()  # type: ignore[union-attr]
        short = issuer.issue_token("vic", ["viewer"], ttl_s=1)
        assert len(revocations) == 2
        time.sleep(2.1)
        issuer.issue_token("eve", ["viewer"])  # issuing prunes what has expired
        assert revocations.get(short.jti) is None
        # A revoked row stays while its token could still verify.
        assert revocations.get(issued.jti).revoked is not None
        assert len(revocations) == 2
        without_jti = jwt.encode(
            {
                "sub": "x",
                "roles": ["admin"],
                "iss": "twinforge",
                "iat": int(time.time()),
                "exp": int(time.time()) + 60,
            },
            SECRET,
        )
        with pytest.raises(Unauthenticated, match="lacks the required jti claim"):
            issuer.verify(without_jti)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CommandService]:
    models = parse_models(p.read_text() for p in sorted(MODELS_DIR.glob("*.json")))

    def unreachable(twin: str) -> None:
        raise AssertionError(f"nothing may be sent to {twin} in this test")

    class NoAlarms:
        def active_alarms(self, twin_id: str) -> list[object]:
            return []

    with AuditLog(tmp_path / "audit.sqlite") as audit:
        yield CommandService(
            lambda _twin: models.interfaces[IMM],
            unreachable,  # type: ignore[arg-type]
            SafetyPolicy.from_file(SAFETY_POLICY),
            audit,
            NoAlarms(),  # type: ignore[arg-type]
        )


def test_separation_of_duties_compares_ids_not_names(
    keys: ApiKeyStore, service: CommandService
) -> None:
    auth = Authenticator(keys, TokenIssuer(SECRET))
    ada_key = keys.create("ada", ["engineer"])
    ada = auth.authenticate({"X-API-Key": ada_key.secret})
    second = auth.authenticate({"X-API-Key": keys.create("ada (laptop)", ["engineer"]).secret})
    # A token whose subject is the key's name (or reads like its id) is not that key.
    namesake = auth.authenticate(
        {"Authorization": f"Bearer {auth.tokens.issue('ada', ['engineer'])}"}
    )
    lookalike = auth.tokens.issue(ada.id, ["engineer"])
    assert auth.authenticate({"Authorization": f"Bearer {lookalike}"}).id == f"jwt:{ada.id}"
    assert len({ada.id, second.id, namesake.id}) == 3
    assert namesake.name == ada.name == "ada"

    def pending() -> str:
        record = asyncio.run(service.invoke(ada, "imm-1", "setBarrelTemperature", 300))
        assert record.status is CommandStatus.PENDING_APPROVAL, record.reason
        assert record.user == f"key:{ada_key.key_id}"
        return record.id

    first = pending()
    with pytest.raises(ApprovalError, match=f"key:{ada_key.key_id} invoked the command"):
        asyncio.run(service.approve(ada, first))
    # Rejecting is allowed to anyone else: the record shows who, by id.
    rejected = asyncio.run(service.reject(second, first, "not now"))
    assert rejected.approver == second.id
    by_namesake = asyncio.run(service.reject(namesake, pending(), "no"))
    assert by_namesake.approver == "jwt:ada"  # a second identity, not ada's withdrawal
    withdrawn = asyncio.run(service.reject(ada, pending(), "mine"))
    assert withdrawn.approver is None
    whos = {(e.action, e.user, e.approver) for e in service.audit.query()}
    assert ("reject", ada.id, "jwt:ada") in whos
