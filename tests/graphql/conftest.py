"""The GraphQL app in process on a real embedded FalkorDB holding the sample factory, with
an API key per role. HTTP goes through httpx's ASGI transport, WebSockets through
Starlette's test client; both run the real FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from support.graphql_parts import Api, CountingStore

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.tokens import TokenIssuer
from twinforge.graphql.context import ApiServices
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.sim.layout import sample_plant
from twinforge.web.app import create_app

#: Cheap argon2 parameters: tests create many keys; the server uses argon2's defaults.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ROLES = ("viewer", "operator", "engineer", "admin")


@pytest.fixture
def api(embedded_store: FalkorDBStore, tmp_path: Path) -> Iterator[Api]:
    embedded_store.clear()
    store = CountingStore(embedded_store)
    twins = TwinService(store)
    report = import_ndjson(twins, sample_plant(equipment=24).to_import_ndjson().splitlines())
    assert not report.errors
    keys = ApiKeyStore(tmp_path / "keys.sqlite3", hasher=CHEAP_HASHER)
    tokens = TokenIssuer(b"k" * 32)
    live = EventBus()
    services = ApiServices(
        twins=twins,
        authenticator=Authenticator(keys, tokens),
        keys=keys,
        tokens=tokens,
        live=live,
    )
    secrets = {role: keys.create(f"{role}-key", [role]).secret for role in ROLES}
    yield Api(create_app(services), twins, store, keys, tokens, live, secrets)
    keys.close()
