"""Roles, error codes, bearer tokens, the authenticator and the rate limiter."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import jwt
import pydantic
import pytest
import strawberry
from argon2 import PasswordHasher
from starlette.datastructures import Headers

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import NO_CREDENTIALS, Authenticator
from twinforge.auth.errors import InvalidInput
from twinforge.auth.principal import Principal
from twinforge.auth.roles import ROLES, has_role, parse_roles, require_role
from twinforge.auth.tokens import TokenIssuer, load_or_create_secret
from twinforge.graphql.errors import (
    ApiError,
    BadInput,
    ConflictError,
    ErrorCodes,
    Forbidden,
    Internal,
    NotFoundError,
    PayloadTooLarge,
    PreconditionFailedError,
    QueryTooComplex,
    QueryTooDeep,
    RateLimited,
    Unauthenticated,
    error_code_for,
    error_extensions,
)
from twinforge.graphql.query_rules import security_extensions
from twinforge.graphql.rate_limit import RateLimiter
from twinforge.runtime.commands import ApprovalError, CommandNotFound
from twinforge.runtime.twin_service.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PreconditionFailed,
    QueryRejected,
    TwinServiceError,
    invalid,
)
from twinforge.twin_models import ModelParsingError, ResolutionError

SECRET = b"k" * 32

# -- roles --------------------------------------------------------------------------------


def test_roles_rank_viewer_to_admin() -> None:
    assert ROLES == ("viewer", "operator", "engineer", "admin")
    engineer = Principal("ada", frozenset({"engineer"}))

    assert [has_role(engineer, role) for role in ROLES] == [True, True, True, False]
    assert not has_role(Principal("nobody"), "viewer")
    assert not has_role(Principal("odd", frozenset({"root"})), "viewer")


def test_require_role_says_what_is_needed_and_held() -> None:
    require_role(Principal("root", frozenset({"admin"})), "engineer")

    with pytest.raises(Forbidden) as caught:
        require_role(Principal("vic", frozenset({"viewer"})), "engineer")
    assert str(caught.value) == "forbidden: this needs the engineer role; you have viewer"
    assert caught.value.extensions == {"code": "FORBIDDEN"}

    with pytest.raises(Forbidden, match="you have no role"):
        require_role(Principal("nobody"), "viewer")


def test_parse_roles() -> None:
    assert parse_roles(["viewer", "admin", "viewer"]) == frozenset({"viewer", "admin"})
    with pytest.raises(InvalidInput, match=r"^roles: unknown role 'superuser'") as caught:
        parse_roles(["viewer", "superuser"])
    assert caught.value.field == "roles"
    with pytest.raises(InvalidInput, match="roles: at most 16 roles"):
        parse_roles(["viewer"] * 17)


# -- error codes --------------------------------------------------------------------------


def _pydantic_error() -> pydantic.ValidationError:
    class Point(pydantic.BaseModel):
        x: int

    try:
        Point(x="not a number")  # type: ignore[arg-type]
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("pydantic accepted a string for an int")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unauthenticated("no"), "UNAUTHENTICATED"),
        (Forbidden("no"), "FORBIDDEN"),
        (NotFoundError("no"), "NOT_FOUND"),
        (BadInput("no"), "BAD_USER_INPUT"),
        (InvalidInput("no"), "BAD_USER_INPUT"),
        (ConflictError("no"), "CONFLICT"),
        (PreconditionFailedError("no"), "PRECONDITION_FAILED"),
        (RateLimited("no", retry_after=1), "RATE_LIMITED"),
        (QueryTooDeep("no"), "QUERY_TOO_DEEP"),
        (QueryTooComplex("no"), "QUERY_TOO_COMPLEX"),
        (PayloadTooLarge("no"), "PAYLOAD_TOO_LARGE"),
        (Internal("no"), "INTERNAL_ERROR"),
        (NotFound("no twin"), "NOT_FOUND"),
        (AlreadyExists("exists"), "CONFLICT"),
        (Conflict("dependents"), "CONFLICT"),
        (PreconditionFailed("etag"), "PRECONDITION_FAILED"),
        (invalid("twin.temperature", "type", "not a number"), "BAD_USER_INPUT"),
        (QueryRejected("writes"), "BAD_USER_INPUT"),
        (TwinServiceError("store down"), "INTERNAL_ERROR"),
        (ModelParsingError([]), "BAD_USER_INPUT"),
        (ResolutionError(["dtmi:x:y;1"]), "BAD_USER_INPUT"),
        (_pydantic_error(), "BAD_USER_INPUT"),
        (CommandNotFound("no command"), "NOT_FOUND"),
        (ApprovalError("a second user must approve it"), "FORBIDDEN"),
        (RuntimeError("boom"), "INTERNAL_ERROR"),
        (KeyError("x"), "INTERNAL_ERROR"),
    ],
)
def test_error_code_for(error: BaseException, code: str) -> None:
    assert error_code_for(error) == code


def test_error_extensions_name_the_field_and_rule() -> None:
    failed = invalid("twin.temperature", "type", "expected a number")
    assert error_extensions(failed) == {
        "code": "BAD_USER_INPUT",
        "problems": [{"field": "twin.temperature", "rule": "type", "message": "expected a number"}],
    }
    assert error_extensions(_pydantic_error())["problems"][0]["field"] == "x"
    assert error_extensions(ResolutionError(["dtmi:a:b;1"]))["undefinedIds"] == ["dtmi:a:b;1"]
    assert RateLimited("slow down", retry_after=0.25).extensions == {
        "code": "RATE_LIMITED",
        "retryAfter": 0.25,
    }
    assert BadInput("first: too many", field="first").extensions == {
        "code": "BAD_USER_INPUT",
        "field": "first",
    }


@strawberry.type
class _Query:
    @strawberry.field
    def leak(self) -> str:
        raise RuntimeError("db password=hunter2 at 10.0.0.7")

    @strawberry.field
    def down(self) -> str:
        raise Internal("history store at postgres://admin:pw@db refused")

    @strawberry.field
    def missing(self) -> str:
        raise NotFound("no twin 'pump-1'")

    @strawberry.field
    def broken(self) -> str:
        raise invalid("twin.speed", "maximum", "at most 3000")

    @strawberry.field
    def secret(self) -> str:
        raise Forbidden("forbidden: this needs the admin role; you have viewer")

    @strawberry.field
    def null(self) -> str:
        return None  # type: ignore[return-value]

    @strawberry.field
    def echo(self, n: int) -> int:
        return n


@strawberry.type
class _Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncGenerator[int, None]:
        yield 1
        raise RuntimeError("socket path /var/run/secret")


SCHEMA = strawberry.Schema(_Query, subscription=_Subscription, extensions=security_extensions())


def _one_error(query: str, **variables: object) -> dict[str, object]:
    result = SCHEMA.execute_sync(query, variable_values=variables or None)
    assert result.errors and len(result.errors) == 1, result.errors
    return result.errors[0].formatted


def test_internal_errors_are_hidden_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="twinforge.graphql.errors"):
        error = _one_error("{ leak }")

    assert error["message"] == "internal error"
    assert error["extensions"] == {"code": "INTERNAL_ERROR"}
    assert "hunter2" not in json.dumps(error)
    logged = [r for r in caplog.records if r.name == "twinforge.graphql.errors"]
    assert len(logged) == 1 and logged[0].exc_info and "hunter2" in caplog.text
    down = _one_error("{ down }")
    assert down["message"] == "internal error" and "postgres" not in json.dumps(down)


def test_known_errors_keep_their_message_and_get_a_code() -> None:
    assert _one_error("{ missing }")["extensions"] == {"code": "NOT_FOUND"}
    assert _one_error("{ missing }")["message"] == "no twin 'pump-1'"
    assert _one_error("{ secret }")["extensions"] == {"code": "FORBIDDEN"}
    broken = _one_error("{ broken }")
    assert broken["extensions"]["code"] == "BAD_USER_INPUT"  # type: ignore[index]
    assert broken["extensions"]["problems"] == [  # type: ignore[index]
        {"field": "twin.speed", "rule": "maximum", "message": "at most 3000"}
    ]


def test_graphql_own_errors_get_codes() -> None:
    assert _one_error("{ nope }")["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert _one_error("{ leak ")["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}
    wrong = _one_error("query($n: Int!) { echo(n: $n) }", n="seven")
    assert wrong["extensions"] == {"code": "BAD_USER_INPUT"}
    assert "$n" in wrong["message"]  # type: ignore[operator]
    null = _one_error("{ null }")
    assert null == {**null, "message": "internal error", "extensions": {"code": "INTERNAL_ERROR"}}


def test_the_async_path_is_labelled_too() -> None:
    async def run(query: str) -> list[dict[str, object]]:
        result = await SCHEMA.execute(query)
        return [e.formatted for e in result.errors or ()]

    [missing] = asyncio.run(run("{ echo(n: 3) missing }"))
    assert missing["extensions"] == {"code": "NOT_FOUND"}
    [leak] = asyncio.run(run("{ leak }"))
    assert leak["message"] == "internal error" and "hunter2" not in json.dumps(leak)
    [unknown] = asyncio.run(run("{ nope }"))
    assert unknown["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


def test_subscription_errors_are_hidden_too() -> None:
    async def collect() -> list[dict[str, object]]:
        stream = await SCHEMA.subscribe("subscription { ticks }")
        return [
            {"data": r.data, "errors": [e.formatted for e in r.errors or ()]}
            async for r in stream  # type: ignore[union-attr]
        ]

    results = asyncio.run(collect())

    assert results[0] == {"data": {"ticks": 1}, "errors": []}
    assert results[-1]["errors"] == [
        {"message": "internal error", "extensions": {"code": "INTERNAL_ERROR"}, **_located(results)}
    ]
    assert "secret" not in json.dumps(results)


def _located(results: list[dict[str, object]]) -> dict[str, object]:
    """The error's locations and path, whatever they are: not what is under test."""
    error = results[-1]["errors"][0]  # type: ignore[index]
    return {k: v for k, v in error.items() if k in ("locations", "path")}


def test_error_codes_is_passed_as_a_class() -> None:
    # An instance would be shared by concurrent operations (and strawberry deprecates it).
    assert security_extensions()[0] is ErrorCodes
    assert isinstance(ErrorCodes(), ErrorCodes)


# -- tokens -------------------------------------------------------------------------------


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "ada",
        "roles": ["engineer"],
        "iss": "twinforge",
        "iat": now,
        "exp": now + 60,
        "jti": "0123456789abcdef0123456789abcdef",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _refused(issuer: TokenIssuer, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        issuer.verify(token)
    assert caught.value.code == "UNAUTHENTICATED"
    return caught.value.message


def test_a_token_round_trips() -> None:
    issuer = TokenIssuer(SECRET)
    token = issuer.issue("ada", ["engineer", "viewer"])

    assert issuer.verify(token) == Principal("jwt:ada", frozenset({"engineer", "viewer"}), "ada")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="twinforge")
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["roles"] == ["engineer", "viewer"]


def test_tokens_are_refused_with_the_reason() -> None:
    issuer = TokenIssuer(SECRET, leeway_s=0)
    expired = jwt.encode(_claims(iat=int(time.time()) - 100, exp=int(time.time()) - 10), SECRET)
    assert _refused(issuer, expired) == "token expired; sign in again for a new one"

    good = issuer.issue("vic", ["viewer"])
    header, payload, signature = good.split(".")
    promoted = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    promoted["roles"] = ["admin"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(promoted).encode()).rstrip(b"=")
    tampered = f"{header}.{forged_payload.decode()}.{signature}"
    assert "signature does not verify" in _refused(issuer, tampered)

    other_server = TokenIssuer(b"o" * 32).issue("vic", ["admin"])
    assert "signature does not verify" in _refused(issuer, other_server)
    assert _refused(issuer, TokenIssuer(SECRET, issuer="elsewhere").issue("vic", ["viewer"])) == (
        "token issuer is not twinforge"
    )
    unknown_role = jwt.encode(_claims(roles=["viewer", "root"]), SECRET)
    assert "unknown role 'root'" in _refused(issuer, unknown_role)
    assert _refused(issuer, jwt.encode(_claims(roles=None), SECRET)) == (
        "token lacks the required roles claim"
    )
    assert _refused(issuer, jwt.encode(_claims(roles="admin"), SECRET)).startswith(
        "token roles claim must be a list"
    )
    assert _refused(issuer, jwt.encode(_claims(exp=None), SECRET)) == (
        "token lacks the required exp claim"
    )
    assert "sub" in _refused(issuer, jwt.encode(_claims(sub=None), SECRET))
    unsigned = jwt.encode(_claims(roles=["admin"]), None, algorithm="none")  # type: ignore[arg-type]
    assert _refused(issuer, unsigned) == "token algorithm is not accepted"
    assert _refused(issuer, "not.a.jwt").startswith("token is malformed")
    assert _refused(issuer, "").startswith("token is empty")
    assert "longer than" in _refused(issuer, "e" * 100_000)


def test_issuer_refuses_weak_settings_and_bad_subjects() -> None:
    with pytest.raises(ValueError, match="secret: at least 32 bytes for HS256, not 6"):
        TokenIssuer("hunter")
    with pytest.raises(ValueError, match="algorithm"):
        TokenIssuer(SECRET, algorithm="none")
    with pytest.raises(InvalidInput, match="subject: must be a non-empty string"):
        TokenIssuer(SECRET).issue("", ["viewer"])
    with pytest.raises(InvalidInput, match="roles: unknown role 'god'"):
        TokenIssuer(SECRET).issue("ada", ["god"])


def test_the_secret_file_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "jwt.secret"
    secret = load_or_create_secret(path)

    assert len(secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = TokenIssuer(secret).issue("ada", ["viewer"])
    restarted = TokenIssuer(load_or_create_secret(path))
    assert restarted.verify(token).name == "ada"
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind

    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="the secret has 3 bytes, at least 32 needed"):
        load_or_create_secret(tmp_path / "short")


# -- the authenticator --------------------------------------------------------------------


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    keys = ApiKeyStore(tmp_path / "keys.db", hasher=PasswordHasher(time_cost=1, memory_cost=1024))
    yield Authenticator(keys, TokenIssuer(SECRET))
    keys.close()


def _refusal(call: object, *args: object) -> str:
    with pytest.raises(Unauthenticated) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.message


def test_every_header_form_authenticates(auth: Authenticator) -> None:
    token = auth.tokens.issue("ada", ["engineer"])
    issued = auth.keys.create("ci", ["operator"])
    key = issued.secret
    ada = Principal("jwt:ada", frozenset({"engineer"}), "ada")
    ci = Principal(f"key:{issued.key_id}", frozenset({"operator"}), "ci")

    assert auth.authenticate({"Authorization": f"Bearer {token}"}) == ada
    assert auth.authenticate({"authorization": f"bearer  {token} "}) == ada
    assert auth.authenticate({"AUTHORIZATION": f"Bearer {key}"}) == ci
    assert auth.authenticate({"X-API-Key": key}) == ci
    assert auth.authenticate({"x-api-key": key}) == ci
    raw = [(b"x-api-key", key.encode()), (b"accept", b"application/json")]
    assert auth.authenticate(Headers(raw=raw)) == ci
    assert auth.authenticate(Headers({"Authorization": f"Bearer {token}"})) == ada
    assert asyncio.run(auth.authenticate_async({"Authorization": f"Bearer {key}"})) == ci


def test_bad_credentials_say_why(auth: Authenticator) -> None:
    token = auth.tokens.issue("ada", ["engineer"])
    issued = auth.keys.create("ci", ["operator"])

    assert _refusal(auth.authenticate, {}) == NO_CREDENTIALS
    assert _refusal(auth.authenticate, {"Accept": "*/*"}) == NO_CREDENTIALS
    assert "Bearer" in _refusal(auth.authenticate, {"Authorization": "Basic YWRhOnB3"})
    assert "Bearer" in _refusal(auth.authenticate, {"Authorization": token})
    assert "empty" in _refusal(auth.authenticate, {"Authorization": "Bearer "})
    assert "not both" in _refusal(
        auth.authenticate, {"Authorization": f"Bearer {token}", "X-API-Key": issued.secret}
    )
    assert "not an API key" in _refusal(auth.authenticate, {"X-API-Key": token})
    assert "sent twice" in _refusal(
        auth.authenticate, Headers(raw=[(b"x-api-key", b"tfk_a"), (b"x-api-key", b"tfk_b")])
    )
    auth.keys.revoke(issued.key_id)
    assert "revoked" in _refusal(auth.authenticate, {"X-API-Key": issued.secret})
    assert "revoked" in _refusal(auth.authenticate, {"Authorization": f"Bearer {issued.secret}"})
    assert "signature" in _refusal(auth.authenticate, {"Authorization": f"Bearer {token}x"})


def test_websocket_connection_params(auth: Authenticator) -> None:
    token = auth.tokens.issue("ada", ["viewer"])
    key = auth.keys.create("panel", ["viewer"]).secret
    check = auth.authenticate_connection_params

    assert check({"Authorization": f"Bearer {token}"}).name == "ada"
    assert check({"authorization": token}).name == "ada"  # bare, as some clients send it
    assert check({"apiKey": key}).name == "panel"
    assert check({"X-API-Key": key}).name == "panel"
    assert check({"authorization": key, "other": 1}).name == "panel"
    assert _refusal(check, {}) == NO_CREDENTIALS
    assert _refusal(check, None) == NO_CREDENTIALS
    assert _refusal(check, ["Authorization", token]) == NO_CREDENTIALS
    assert "expected a string" in _refusal(check, {"Authorization": 5})
    connected = asyncio.run(auth.authenticate_connection_params_async({"apiKey": key}))
    assert connected.name == "panel"


# -- rate limits --------------------------------------------------------------------------


class _Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_refuses_after_the_burst_and_recovers() -> None:
    clock = _Clock()
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=clock)

    for _ in range(3):
        limiter.check("ada")
    with pytest.raises(RateLimited) as caught:
        limiter.check("ada")
    assert caught.value.retry_after == pytest.approx(0.5)
    assert caught.value.extensions == {"code": "RATE_LIMITED", "retryAfter": 0.5}
    assert "ada may send 3 requests at once and 2 per second" in caught.value.message
    limiter.check("bob")  # buckets are per principal

    clock.now += 0.5
    limiter.check("ada")
    with pytest.raises(RateLimited):
        limiter.check("ada")
    clock.now += 60
    for _ in range(3):
        limiter.check("ada")  # refilled to the burst, not beyond
    with pytest.raises(RateLimited):
        limiter.check("ada")


def test_rate_limiter_in_real_time() -> None:
    limiter = RateLimiter(rate_per_s=100, burst=1)
    limiter.check("ada")
    with pytest.raises(RateLimited) as caught:
        limiter.check("ada")
    time.sleep(caught.value.retry_after + 0.01)
    limiter.check("ada")


def test_rate_limiter_memory_is_bounded() -> None:
    clock = _Clock()
    limiter = RateLimiter(rate_per_s=1, burst=5, max_buckets=10, clock=clock)

    for i in range(100):
        limiter.check(f"user-{i}")
    assert len(limiter) <= 10
    clock.now += 10  # everyone refilled: idle buckets go first
    limiter.check("newcomer")
    assert len(limiter) == 1


def test_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(rate_per_s=0.001, burst=100)
    allowed = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(50):
            try:
                limiter.check("ada")
            except RateLimited:
                continue
            with lock:
                allowed.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 100


def test_rate_limiter_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s=0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(rate_per_s=1, burst=0)
    with pytest.raises(ValueError, match="cost"):
        RateLimiter(rate_per_s=1, burst=2).check("ada", cost=3)


def test_api_errors_are_exceptions_with_messages() -> None:
    error = BadInput("first: at most 1000 per page, not 5000", field="first")
    assert isinstance(error, ApiError) and str(error) == error.message
