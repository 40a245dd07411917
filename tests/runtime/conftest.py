"""Graph stores for the runtime tests: a test taking ``graph_store`` runs on both backends,
each a real server started once per session and emptied before every test.

* ``falkordb``: :class:`FalkorDBStore` on the embedded FalkorDB (a child process, reached
  through its unix socket): ``embedded_store`` of ``tests/conftest.py``.
* ``neo4j``: :class:`Neo4jStore` over Bolt to FalkorDB's Bolt endpoint, the Neo4j stand-in
  (there is no Neo4j server here). Its limits: parameters up to about 3.8 KB as Cypher
  text (it crashes beyond 4 KiB; the store refuses first), map keys that are identifiers,
  and anonymous error messages. A Bolt client that disconnects politely makes the next
  new connection hang, so tests share ``bolt_store`` and never open their own to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from twinforge.runtime.stores import (
    EmbeddedFalkorDB,
    GraphStore,
    Neo4jStore,
)


@pytest.fixture(scope="session")
def bolt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedFalkorDB]:
    """A FalkorDB serving Bolt on a free port (and keeping nothing on disk)."""
    with EmbeddedFalkorDB(tmp_path_factory.mktemp("bolt"), bolt_port=0) as server:
        yield server


@pytest.fixture(scope="session")
def bolt_store(bolt_server: EmbeddedFalkorDB) -> Iterator[Neo4jStore]:
    """The Neo4j backend, over Bolt to :func:`bolt_server`."""
    store = Neo4jStore(f"bolt://127.0.0.1:{bolt_server.bolt_port}")
    yield store
    store.close()


@pytest.fixture(params=["falkordb", "neo4j"])
def graph_store(request: pytest.FixtureRequest) -> GraphStore:
    """Each backend in turn, empty."""
    store: GraphStore = request.getfixturevalue(
        "embedded_store" if request.param == "falkordb" else "bolt_store"
    )
    store.clear()
    return store
