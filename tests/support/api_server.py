"""A real GraphQL server for tests: uvicorn on a free loopback port, over the embedded
FalkorDB holding a small sample factory, with argon2 verifications counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.token_revocations import TokenRevocations
from twinforge.auth.tokens import TokenIssuer
from twinforge.graphql.context import ApiServices
from twinforge.graphql.rate_limit import RateLimiter
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.sim.layout import sample_plant
from twinforge.web.app import create_app
from twinforge.web.serving import ApiServer, ServingLimits


class CountingHasher(PasswordHasher):
    """Real argon2 (cheap parameters) that counts its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verifications = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.verifications += 1
        return super().verify(hash, password)


@dataclass
class RunningApi:
    server: ApiServer
    services: ApiServices
    keys: ApiKeyStore
    tokens: TokenIssuer
    hasher: CountingHasher

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url


@contextmanager
def running_api(
    store: FalkorDBStore,
    tmp_path: Path,
    *,
    limits: ServingLimits | None = None,
    host: str = "127.0.0.1",
    **services: Any,
) -> Iterator[RunningApi]:
    """The API on ``store`` (emptied and seeded), ``services`` overriding ApiServices'
    defaults (``failure_limiter``, ``session_check_s``, ``introspection``, ``tokens``)."""
    store.clear()
    twins = TwinService(store)
    report = import_ndjson(twins, sample_plant(equipment=4).to_import_ndjson().splitlines())
    assert not report.errors
    hasher = CountingHasher()
    keys = ApiKeyStore(tmp_path / "api_keys.sqlite3", hasher=hasher)
    revocations = TokenRevocations(tmp_path / "api_keys.sqlite3")
    tokens = services.pop("tokens", None) or TokenIssuer(b"k" * 32, revocations=revocations)
    api_services = ApiServices(
        twins=twins,
        authenticator=Authenticator(keys, tokens),
        keys=keys,
        tokens=tokens,
        live=EventBus(),
        failure_limiter=services.pop("failure_limiter", RateLimiter(1.0, 10)),
        **services,
    )
    server = ApiServer(create_app(api_services), host, 0, limits).start()
    try:
        yield RunningApi(server, api_services, keys, tokens, hasher)
    finally:
        server.stop()
        keys.close()
        revocations.close()
