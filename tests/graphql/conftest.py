"""The GraphQL app in process on a real embedded FalkorDB holding the sample factory, with
an API key per role. HTTP goes through httpx's ASGI transport, WebSockets through
Starlette's test client; both run the real FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.graphql_parts import Api, CountingStore, serving

from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.sim.layout import sample_plant


@pytest.fixture
def api(embedded_store: FalkorDBStore, tmp_path: Path) -> Iterator[Api]:
    embedded_store.clear()
    store = CountingStore(embedded_store)
    twins = TwinService(store)
    report = import_ndjson(twins, sample_plant(equipment=24).to_import_ndjson().splitlines())
    assert not report.errors
    with serving(twins, store, tmp_path / "keys.sqlite3") as api:
        yield api
