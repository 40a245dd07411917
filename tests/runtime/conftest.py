"""Graph stores for the runtime tests: every test taking ``graph_store`` runs on both
backends, each a real server started once per session and emptied between tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twinforge.runtime.stores import (
    EmbeddedFalkorDB,
    EmbeddedFalkorDBStore,
    GraphStore,
    Neo4jStore,
)
from twinforge.runtime.stores.embedded_falkordb import free_port


@pytest.fixture(scope="session")
def embedded_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedFalkorDBStore]:
    store = EmbeddedFalkorDBStore(tmp_path_factory.mktemp("graph"))
    yield store
    store.close()


@pytest.fixture(scope="session")
def bolt_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neo4jStore]:
    """The Neo4j backend over a real Bolt connection, to FalkorDB's Bolt endpoint. That
    endpoint is fragile (no persistence with it; it crashes on messages of a few KB), so
    tests keep their batches small."""
    server = EmbeddedFalkorDB(tmp_path_factory.mktemp("bolt"), bolt_port=free_port()).start()
    store = Neo4jStore(f"bolt://127.0.0.1:{server.bolt_port}", falkordb_bolt=True)
    yield store
    store.close()
    server.stop()


@pytest.fixture(params=["falkordb", "neo4j"])
def graph_store(request: pytest.FixtureRequest) -> Iterator[GraphStore]:
    store: GraphStore = request.getfixturevalue(
        "embedded_store" if request.param == "falkordb" else "bolt_store"
    )
    store.clear()
    yield store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
