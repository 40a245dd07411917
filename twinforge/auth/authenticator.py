"""Who is calling: the credentials of an HTTP request or a websocket ``connection_init``.

Accepted: ``Authorization: Bearer <JWT>``, ``Authorization: Bearer tfk_...`` (an API
key) and ``X-API-Key: tfk_...``. Websocket clients can't set headers from a browser, so
the same credentials may come in the ``connection_init`` payload instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread

from twinforge.auth.api_keys import KEY_PREFIX, ApiKeyStore, HashingNeeded
from twinforge.auth.errors import Unauthenticated
from twinforge.auth.principal import Principal
from twinforge.auth.tokens import TokenIssuer

__all__ = ["NO_CREDENTIALS", "Authenticator"]

NO_CREDENTIALS = "no credentials: send Authorization: Bearer <token or API key> or X-API-Key"
_AUTHORIZATION = "authorization"
_API_KEY = "x-api-key"
# connection_init payload keys, lower-cased, by the header they stand for.
_PARAM_KEYS = {"authorization": _AUTHORIZATION, "apikey": _API_KEY, "x-api-key": _API_KEY}


def _lowered(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The entries of ``values`` whose lower-cased key is in ``names``, under its value."""
    found: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(key, str) and (name := names.get(key.lower())) is not None:
            if name in found and found[name] != value:
                raise Unauthenticated(f"{name}: sent twice with different values")
            found[name] = value
    return found


class Authenticator:
    """Turns credentials into a :class:`Principal`, or raises :class:`Unauthenticated`
    with the reason. ``authenticate`` may run argon2 (the first use of an API key), so
    async code calls :meth:`authenticate_async`: it answers on the event loop when it
    can (a token, a key verified before) and hashes in a worker thread when it must."""

    def __init__(self, keys: ApiKeyStore, tokens: TokenIssuer) -> None:
        self.keys = keys
        self.tokens = tokens

    def authenticate(self, headers: Mapping[str, str], *, hashing: bool = True) -> Principal:
        """The principal of an HTTP request's ``headers`` (any letter case)."""
        names = {_AUTHORIZATION: _AUTHORIZATION, _API_KEY: _API_KEY}
        return self._from(_lowered(headers, names), bearer_required=True, hashing=hashing)

    async def authenticate_async(
        self, headers: Mapping[str, str], before_hashing: Callable[[], None] | None = None
    ) -> Principal:
        """As :meth:`authenticate`, hashing off the event loop; ``before_hashing`` runs
        first and may raise to refuse before any argon2 work (a rate limit)."""
        try:
            return self.authenticate(headers, hashing=False)
        except HashingNeeded:
            if before_hashing is not None:
                before_hashing()
            return await anyio.to_thread.run_sync(self.authenticate, headers)

    def authenticate_connection_params(
        self, params: Mapping[str, Any] | None, *, hashing: bool = True
    ) -> Principal:
        """The principal of a graphql-transport-ws ``connection_init`` payload; there
        ``Authorization`` may also hold the bare token or key, without "Bearer "."""
        if not isinstance(params, Mapping):
            raise Unauthenticated(NO_CREDENTIALS)
        return self._from(_lowered(params, _PARAM_KEYS), bearer_required=False, hashing=hashing)

    async def authenticate_connection_params_async(
        self, params: Mapping[str, Any] | None, before_hashing: Callable[[], None] | None = None
    ) -> Principal:
        try:
            return self.authenticate_connection_params(params, hashing=False)
        except HashingNeeded:
            if before_hashing is not None:
                before_hashing()
            return await anyio.to_thread.run_sync(self.authenticate_connection_params, params)

    def _from(self, found: Mapping[str, Any], *, bearer_required: bool, hashing: bool) -> Principal:
        authorization = found.get(_AUTHORIZATION)
        api_key = found.get(_API_KEY)
        if authorization is not None and api_key is not None:
            raise Unauthenticated("send one credential: Authorization or X-API-Key, not both")
        if authorization is not None:
            credential = _bearer(authorization, required=bearer_required)
            if credential.startswith(KEY_PREFIX):
                return self._api_key(credential, hashing)
            return self.tokens.verify(credential)
        if api_key is not None:
            if not isinstance(api_key, str) or not api_key.strip().startswith(KEY_PREFIX):
                raise Unauthenticated(f"X-API-Key: not an API key (they start with {KEY_PREFIX})")
            return self._api_key(api_key.strip(), hashing)
        raise Unauthenticated(NO_CREDENTIALS)

    def _api_key(self, text: str, hashing: bool) -> Principal:
        principal = self.keys.verify(text, hashing=hashing)
        if principal is None:
            raise Unauthenticated(_key_problem(self.keys, text))
        return principal


def _key_problem(keys: ApiKeyStore, text: str) -> str:
    """Why key ``text`` is refused. Revoked and expired are named only for a key whose
    secret is right (it was verified before): a guess learns nothing of a key id."""
    info = keys.get(text[len(KEY_PREFIX) :].partition("_")[0])
    if info is not None and keys.was_verified(text):
        if info.revoked is not None:
            return f"API key {info.key_id} was revoked"
        if info.expired():
            return f"API key {info.key_id} expired at {info.expires:%Y-%m-%d %H:%M:%S} UTC"
    return "API key is not valid: unknown, revoked, expired or mistyped"


def _bearer(value: object, *, required: bool) -> str:
    """The credential in an Authorization value ``Bearer <credential>``."""
    if not isinstance(value, str):
        raise Unauthenticated("Authorization: expected a string")
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        credential = credential.strip()
    elif required or not scheme:
        raise Unauthenticated("Authorization: expected 'Bearer <token or API key>'")
    else:
        credential = value.strip()
    if not credential:
        raise Unauthenticated("Authorization: the Bearer credential is empty")
    return credential
