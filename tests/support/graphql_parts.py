"""Pieces of the GraphQL tests: a store that counts round trips, the real app served
over given services with an API key per role, and a client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from argon2 import PasswordHasher

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.tokens import TokenIssuer
from twinforge.graphql.context import ApiServices
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import GraphStore
from twinforge.runtime.twin_service import TwinService
from twinforge.web.app import create_app

#: Cheap argon2 parameters: tests create many keys; the server uses argon2's defaults.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ROLES = ("viewer", "operator", "engineer", "admin")


class CountingStore:
    """The real store, counting the round trips made through it."""

    def __init__(self, store: GraphStore) -> None:
        self._store = store
        self.backend = store.backend
        self.reads = 0

    def read(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        self.reads += 1
        return self._store.read(cypher, params)

    def write(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._store.write(cypher, params)

    def ensure_index(self, label: str, prop: str) -> None:
        self._store.ensure_index(label, prop)

    def clear(self) -> None:
        self._store.clear()

    def close(self) -> None:
        pass  # the session's store outlives each test


@dataclass
class Api:
    app: Any
    twins: TwinService
    store: CountingStore
    keys: ApiKeyStore
    tokens: TokenIssuer
    live: EventBus
    secrets: dict[str, str]

    def post(
        self, query: str, variables: dict[str, Any] | None = None, *, role: str | None = "admin"
    ) -> dict[str, Any]:
        """Run one operation as ``role`` (None: no credentials); the JSON answer."""
        headers = {} if role is None else {"Authorization": f"Bearer {self.secrets[role]}"}
        return self.request({"query": query, "variables": variables}, headers).json()

    def request(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.post("/graphql", json=body, headers=headers or {})

        return asyncio.run(send())


@contextlib.contextmanager
def serving(
    twins: TwinService,
    store: Any,
    keys_path: Any,
    *,
    roles: tuple[str, ...] = ROLES,
    live: EventBus | None = None,
    **services: Any,
) -> Iterator[Api]:
    """The real GraphQL app over ``twins`` and ``services`` (the other
    :class:`ApiServices` fields), with an API key per role in ``keys_path``."""
    keys = ApiKeyStore(keys_path, hasher=CHEAP_HASHER)
    tokens = TokenIssuer(b"k" * 32)
    live = live or EventBus()
    api_services = ApiServices(
        twins=twins,
        authenticator=Authenticator(keys, tokens),
        keys=keys,
        tokens=tokens,
        live=live,
        **services,
    )
    secrets = {role: keys.create(f"{role}-key", [role]).secret for role in roles}
    try:
        yield Api(create_app(api_services), twins, store, keys, tokens, live, secrets)
    finally:
        keys.close()
