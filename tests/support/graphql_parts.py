"""Pieces of the GraphQL tests: a store that counts round trips, and a client."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.tokens import TokenIssuer
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import GraphStore
from twinforge.runtime.twin_service import TwinService


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
