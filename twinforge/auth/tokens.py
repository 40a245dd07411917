"""Signed bearer tokens (JWT, HMAC) for people signed in to the API.

A token carries who (``sub``) and what they may do (``roles``) for ``ttl_s`` seconds.
The signing secret lives in a file, so restarting the server keeps issued tokens valid.
Each token has a ``jti``; with a :class:`TokenRevocations` list, issued tokens are recorded
and a revoked one fails verification.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from twinforge.auth.errors import AuthError, InvalidInput, Unauthenticated
from twinforge.auth.principal import Principal
from twinforge.auth.roles import parse_roles
from twinforge.auth.token_revocations import TokenRevocations

__all__ = ["IssuedToken", "TokenIssuer", "load_or_create_secret"]

logger = logging.getLogger(__name__)

#: Symmetric algorithms only: the server both signs and checks, with one secret.
_HMAC = {"HS256": 32, "HS384": 48, "HS512": 64}
#: A real token is a few hundred bytes; far longer text is refused before decoding.
_MAX_TOKEN_CHARS = 8192
_MAX_SUBJECT_CHARS = 200
#: ``jti`` too: a token without one could never be revoked.
_REQUIRED = ["exp", "iat", "sub", "iss", "jti"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token; ``jti`` is what ``revokeToken`` and ``twinforge tokens revoke`` take."""

    token: str
    jti: str
    subject: str
    expires: float


def _problem(error: jwt.InvalidTokenError, issuer: str) -> str:
    """Why the token is refused, in words a client can act on."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token expired; sign in again for a new one"
    if isinstance(error, jwt.InvalidSignatureError):
        return "token signature does not verify (forged, altered, or from another server)"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"token issuer is not {issuer}"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the required {error.claim} claim"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "token is not valid yet (issued in the future)"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "token algorithm is not accepted"
    if isinstance(error, jwt.exceptions.InvalidSubjectError):
        return "token sub claim must be a non-empty string"
    if isinstance(error, jwt.exceptions.InvalidIssuedAtError):
        return "token iat claim must be a number"
    if isinstance(error, jwt.DecodeError):
        return "token is malformed (not a signed JWT)"
    return "token is not valid"


class TokenIssuer:
    """Issues and checks HMAC-signed JWTs; the secret must be at least as long as the
    algorithm's digest (32 bytes for HS256)."""

    def __init__(
        self,
        secret: str | bytes,
        *,
        issuer: str = "twinforge",
        ttl_s: float = 3600,
        algorithm: str = "HS256",
        leeway_s: float = 30,
        revocations: TokenRevocations | None = None,
    ) -> None:
        if algorithm not in _HMAC:
            raise ValueError(f"algorithm: one of {', '.join(_HMAC)}, not {algorithm!r}")
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < _HMAC[algorithm]:
            raise ValueError(
                f"secret: at least {_HMAC[algorithm]} bytes for {algorithm}, not {len(key)}"
            )
        if not issuer:
            raise ValueError("issuer: must not be empty")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: must be positive, not {ttl_s}")
        self._key = key
        self.issuer = issuer
        self.ttl_s = ttl_s
        self.algorithm = algorithm
        # Tolerates clock drift between the machines that issue and check tokens.
        self.leeway_s = leeway_s
        self.revocations = revocations

    def issue(self, subject: str, roles: Collection[str], *, ttl_s: float | None = None) -> str:
        """A token for ``subject`` with ``roles``, valid ``ttl_s`` (default: the issuer's)."""
        return self.issue_token(subject, roles, ttl_s=ttl_s).token

    def issue_token(
        self, subject: str, roles: Collection[str], *, ttl_s: float | None = None
    ) -> IssuedToken:
        """As :meth:`issue`, with the token's ``jti`` and expiry; recorded in the
        revocation list when there is one."""
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidInput("subject: must be a non-empty string", field="subject")
        if len(subject) > _MAX_SUBJECT_CHARS or not subject.isprintable():
            raise InvalidInput(
                f"subject: at most {_MAX_SUBJECT_CHARS} printable characters", field="subject"
            )
        role_set = parse_roles(roles)
        lifetime = self.ttl_s if ttl_s is None else ttl_s
        if not lifetime > 0:
            raise ValueError(f"ttl_s: must be positive, not {lifetime}")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "roles": sorted(role_set),
            "iss": self.issuer,
            "iat": now,
            "exp": now + max(1, round(lifetime)),
            # A unique id, so a token can be told apart in logs and revoked.
            "jti": uuid.uuid4().hex,
        }
        if self.revocations is not None:
            self.revocations.record(claims["jti"], subject, claims["exp"])
        token = jwt.encode(claims, self._key, algorithm=self.algorithm)
        return IssuedToken(token, claims["jti"], subject, claims["exp"])

    def verify(self, token: str) -> Principal:
        """The principal ``token`` names; raises :class:`Unauthenticated` saying why not."""
        if not isinstance(token, str) or not token:
            raise Unauthenticated("token is empty")
        if len(token) > _MAX_TOKEN_CHARS:
            raise Unauthenticated(f"token is longer than {_MAX_TOKEN_CHARS} characters")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": _REQUIRED},
            )
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(_problem(error, self.issuer)) from None
        except (ValueError, TypeError):
            # Odd bytes can surface from the base64 and JSON layers under PyJWT.
            raise Unauthenticated("token is malformed (not a signed JWT)") from None
        if "roles" not in claims:
            raise Unauthenticated("token lacks the required roles claim")
        raw_roles = claims["roles"]
        if not isinstance(raw_roles, list):
            raise Unauthenticated("token roles claim must be a list of role names")
        try:
            roles = parse_roles(raw_roles, field="token roles claim")
        except AuthError as error:
            raise Unauthenticated(error.message) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token sub claim must be a non-empty string")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Unauthenticated("token jti claim must be a non-empty string")
        if self.revocations is not None and self.revocations.is_revoked(jti):
            raise Unauthenticated(f"token {jti} was revoked; sign in again for a new one")
        # jwt: so that a token whose subject reads like a key is still not that key.
        return Principal(f"jwt:{subject}", roles, subject)


def load_or_create_secret(path: str | os.PathLike[str], *, nbytes: int = 32) -> bytes:
    """The signing secret in ``path``, created there (``nbytes`` random bytes, mode 0600)
    when missing; two processes starting at once end up with the same secret."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(secrets.token_bytes(nbytes))
                file.flush()
                os.fsync(file.fileno())
            # link, unlike rename, fails when the file exists: the first writer wins.
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    secret = path.read_bytes()
    if len(secret) < nbytes:
        raise ValueError(f"{path}: the secret has {len(secret)} bytes, at least {nbytes} needed")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        logger.warning("%s: readable by other users; chmod 600 it", path)
    return secret
