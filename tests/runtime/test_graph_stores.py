"""The graph stores: one behaviour on both backends, and the embedded server's lifecycle."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from twinforge.runtime.stores import (
    EmbeddedFalkorDBStore,
    FalkorDBStore,
    GraphStoreError,
    Neo4jStore,
    open_graph_store,
)

HOSTILE = [
    "x'}) DETACH DELETE n //",
    'a"b\\c',
    "\\'",
    "line\nbreak\ttab",
    "ä€😀",
    "MATCH (n) RETURN n",
]


def test_rows_nodes_and_values_round_trip(graph_store: Any) -> None:
    rows = graph_store.write(
        "CREATE (a:Thing {id: $id, n: $n, f: $f, b: $b, l: $l})-[r:LINKS {w: $w}]->(b:Thing {id: 'b'}) "
        "RETURN a, r, b.id AS target",
        {"id": "a", "n": 42, "f": 2.5, "b": True, "l": [1, 2, 3], "w": 0.5},
    )
    assert rows == [
        {
            "a": {"id": "a", "n": 42, "f": 2.5, "b": True, "l": [1, 2, 3]},
            "r": {"w": 0.5},
            "target": "b",
        }
    ]
    assert graph_store.read("MATCH (t:Thing) RETURN t.id AS id ORDER BY id") == [
        {"id": "a"},
        {"id": "b"},
    ]
    assert graph_store.read("MATCH (t:Thing {id: $id}) RETURN t.missing AS m", {"id": "a"}) == [
        {"m": None}
    ]


def test_unwind_batches(graph_store: Any) -> None:
    # 100 rows: FalkorDB's Bolt endpoint (the Neo4j stand-in) crashes on ~200.
    rows = [{"id": f"n{i}", "v": i} for i in range(100)]
    graph_store.write("UNWIND $rows AS row CREATE (t:Thing) SET t = row", {"rows": rows})
    assert graph_store.read("MATCH (t:Thing) RETURN count(t) AS n, sum(t.v) AS s") == [
        {"n": 100, "s": sum(range(100))}
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_carrying_cypher_are_data(graph_store: Any, value: str) -> None:
    graph_store.write("CREATE (:Thing {id: 'keep'})")
    graph_store.write("CREATE (t:Thing {id: $v, l: [$v]})", {"v": value})
    assert graph_store.read(
        "MATCH (t:Thing {id: $v}) RETURN t.id AS id, t.l AS l", {"v": value}
    ) == [{"id": value, "l": [value]}]
    assert graph_store.read("MATCH (t:Thing) RETURN count(t) AS n") == [{"n": 2}]


def test_errors_are_graph_store_errors(graph_store: Any) -> None:
    with pytest.raises(GraphStoreError):
        graph_store.read("MATCH (n RETURN n")
    with pytest.raises(ValueError, match="label"):
        graph_store.ensure_index("Bad Label) DELETE (x", "id")
    graph_store.ensure_index("Thing", "id")
    graph_store.ensure_index("Thing", "id")  # again: no error


def test_embedded_reads_cannot_write(embedded_store: EmbeddedFalkorDBStore) -> None:
    embedded_store.clear()
    with pytest.raises(GraphStoreError):
        embedded_store.read("CREATE (x:Thing) RETURN x")
    assert embedded_store.read("MATCH (t:Thing) RETURN count(t) AS n") == [{"n": 0}]


def test_embedded_restart_keeps_everything(tmp_path: Path) -> None:
    store = EmbeddedFalkorDBStore(tmp_path)
    store.write("UNWIND range(1, 1000) AS i CREATE (:Thing {id: i})")
    store.write("MATCH (a:Thing {id: 1}), (b:Thing {id: 2}) CREATE (a)-[:LINKS]->(b)")
    store.close()
    again = EmbeddedFalkorDBStore(tmp_path)
    try:
        assert again.read("MATCH (t:Thing) RETURN count(t) AS n") == [{"n": 1000}]
        assert again.read("MATCH ()-[r:LINKS]->() RETURN count(r) AS n") == [{"n": 1}]
    finally:
        again.close()


def test_embedded_server_is_restarted_after_a_crash(tmp_path: Path) -> None:
    store = EmbeddedFalkorDBStore(tmp_path)
    try:
        store.write("CREATE (:Thing {id: 'before'})")
        time.sleep(1.2)  # the append-only file is synced every second
        old_pid = store.server.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                rows = store.read("MATCH (t:Thing) RETURN t.id AS id")
                break
            except GraphStoreError:
                time.sleep(0.1)
        else:
            pytest.fail("the embedded FalkorDB did not come back")
        assert rows == [{"id": "before"}]
        assert store.server.pid != old_pid and store.server.restarts == 1
    finally:
        store.close()


def test_one_embedded_server_per_data_dir(tmp_path: Path) -> None:
    store = EmbeddedFalkorDBStore(tmp_path)
    try:
        with pytest.raises(GraphStoreError, match="another twinforge process"):
            EmbeddedFalkorDBStore(tmp_path)
    finally:
        store.close()


def test_open_graph_store_by_url(tmp_path: Path, embedded_store: EmbeddedFalkorDBStore) -> None:
    with pytest.raises(GraphStoreError, match=r"127\.0\.0\.1:1"):
        open_graph_store("falkordb://127.0.0.1:1", tmp_path)
    served = open_graph_store(None, tmp_path / "own")
    assert isinstance(served, FalkorDBStore)
    served.close()
    neo = open_graph_store("bolt://neo4j:secret@127.0.0.1:7687/plant", tmp_path)
    assert isinstance(neo, Neo4jStore)
    neo.close()
    with pytest.raises(ValueError, match="bolt://"):
        open_graph_store("mysql://localhost/db", tmp_path)
