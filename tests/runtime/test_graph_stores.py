"""The graph stores: one behaviour on both backends, the embedded server's lifecycle, and
opening a store by URL. Every server here is real; none is mocked."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from twinforge.runtime.stores import (
    DataDirInUse,
    EmbeddedFalkorDB,
    FalkorDBStore,
    GraphStore,
    GraphStoreError,
    Neo4jStore,
    find_running,
    open_graph_store,
)
from twinforge.runtime.stores._cypher import writing_clause

# Storable as properties on both Neo4j and FalkorDB (lists of one type only), and exact
# through FalkorDB's Bolt endpoint, which writes floats with six decimals.
VALUES = [0, -7, 2**62, 0.1, -2.5, 0.000125, 1e300, True, False, "", "text", None]
VALUES += [[], [1, 2, 3], [0.5, 1.5], ["a", "b"], [True, False]]
BAD_NAMES = [("Bad Label", "id"), ("Thing", "a-b"), ("1st", "id"), ("Thing", ""), ("Thing", "_x")]
BAD_NAMES += [("T) DETACH DELETE (n", "id"), ("Thing", "id) DETACH DELETE (n"), ("Ünit", "id")]
HOSTILE = [
    "x'}) DETACH DELETE n //",
    "x' MATCH (v) DETACH DELETE v //",
    'x"}) DETACH DELETE n //',
    "\\'",
    "a\\b\\",
    "`n` ` ",
    "line\nbreak\ttab\r",
    "ä€😀",
    "$v {v} ${v}",
    "MATCH (n) DETACH DELETE n",
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- both backends ----------------------------------------------------------------------


def test_nodes_and_relationships_come_back_as_property_dicts(graph_store: GraphStore) -> None:
    rows = graph_store.write(
        "CREATE (a:Thing {id: $a})-[r:FEEDS {rate: $rate}]->(b:Thing {id: $b}) RETURN a, r, b",
        {"a": "pump", "b": "tank", "rate": 2.5},
    )
    assert rows == [{"a": {"id": "pump"}, "r": {"rate": 2.5}, "b": {"id": "tank"}}]
    rows = graph_store.read(
        "MATCH (a:Thing {id: $id})-[r:FEEDS]->(b) RETURN a.id AS source, b AS target, "
        "type(r) AS type, [a.id, b.id] AS ids, {rate: r.rate} AS map",
        {"id": "pump"},
    )
    assert rows == [
        {
            "source": "pump",
            "target": {"id": "tank"},
            "type": "FEEDS",
            "ids": ["pump", "tank"],
            "map": {"rate": 2.5},
        }
    ]
    assert graph_store.read("MATCH (t:Thing {id: 'nowhere'}) RETURN t") == []


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_as_properties_and_results(graph_store: GraphStore, value: Any) -> None:
    rows = graph_store.write("CREATE (t:Thing {v: $v}) RETURN t.v AS v, $v AS echo", {"v": value})
    assert rows == [{"v": value, "echo": value}]
    stored = graph_store.read("MATCH (t:Thing) RETURN t.v AS v")
    assert stored == [{"v": value}]
    assert type(stored[0]["v"]) is type(value)


def test_nested_parameters_round_trip(graph_store: GraphStore) -> None:
    value = {"name": "line 1", "limits": [1, 2.5, None, "x"], "meta": {"ok": True}}
    assert graph_store.read("RETURN $m AS m", {"m": value}) == [{"m": value}]


def test_unwind_a_batch_of_maps(graph_store: GraphStore) -> None:
    rows = [{"id": f"m{i}", "load": i / 2, "on": i % 2 == 0} for i in range(60)]
    created = graph_store.write(
        "UNWIND $rows AS row CREATE (t:Thing) SET t = row RETURN count(t) AS n", {"rows": rows}
    )
    assert created == [{"n": 60}]
    back = graph_store.read("MATCH (t:Thing) RETURN t ORDER BY t.load")
    assert [row["t"] for row in back] == rows


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_values_carrying_cypher_are_stored_verbatim(graph_store: GraphStore, value: str) -> None:
    graph_store.write("CREATE (:Victim {id: 'keep'})")
    graph_store.write(
        "CREATE (t:Thing {id: $v, l: $l}) SET t.m = $m.k",
        {"v": value, "l": [value], "m": {"k": value}},
    )
    assert graph_store.read("MATCH (t:Thing {id: $v}) RETURN t", {"v": value}) == [
        {"t": {"id": value, "l": [value], "m": value}}
    ]
    assert graph_store.read("MATCH (n) RETURN labels(n)[0] AS label ORDER BY label") == [
        {"label": "Thing"},
        {"label": "Victim"},
    ]


@pytest.mark.parametrize("method", ["read", "write"])
def test_database_errors_are_graph_store_errors(graph_store: GraphStore, method: str) -> None:
    with pytest.raises(GraphStoreError) as caught:
        getattr(graph_store, method)("MATCH (n RETURN n")
    assert type(caught.value) is GraphStoreError
    assert str(caught.value)
    assert graph_store.read("RETURN 1 AS one") == [{"one": 1}]  # the store is still usable


def test_ensure_index_is_idempotent(graph_store: GraphStore) -> None:
    graph_store.ensure_index("Thing", "id")
    graph_store.ensure_index("Thing", "id")
    graph_store.ensure_index("Thing", "name")
    graph_store.write("UNWIND range(1, 50) AS i CREATE (:Thing {id: i})")
    assert graph_store.read("MATCH (t:Thing {id: $id}) RETURN t.id AS id", {"id": 7}) == [{"id": 7}]


@pytest.mark.parametrize(("label", "prop"), BAD_NAMES)
def test_ensure_index_refuses_names_that_are_not_identifiers(
    graph_store: GraphStore, label: str, prop: str
) -> None:
    with pytest.raises(ValueError, match="letters, digits and _"):
        graph_store.ensure_index(label, prop)


@pytest.mark.parametrize(
    "cypher",
    [
        "CREATE (:Thing {id: 'new'})",
        "create (:Thing {id: 'new'})",
        "MATCH (t:Thing) SET t.touched = true",
        "MATCH (t:Thing) DETACH DELETE t",
        "MATCH (t:Thing) REMOVE t.id",
        "MERGE (:Thing {id: 'new'})",
        "MATCH (t:Thing) WITH t CREATE (:Thing {id: 'copy'}) RETURN t",
        "UNWIND [1, 2] AS i FOREACH (x IN [i] | CREATE (:Thing {id: x}))",
        "MATCH (t:Thing) /* just reading */ SET t:Touched RETURN t",
    ],
)
def test_read_refuses_what_writes(graph_store: GraphStore, cypher: str) -> None:
    graph_store.write("CREATE (:Thing {id: 'old'})")
    with pytest.raises(GraphStoreError):
        graph_store.read(cypher)
    assert graph_store.read("MATCH (n) RETURN n") == [{"n": {"id": "old"}}]


def test_read_takes_writing_words_as_data(graph_store: GraphStore) -> None:
    graph_store.write("CREATE (:Thing {id: 'old', set: 1})")
    rows = graph_store.read(
        "MATCH (t:Thing) // CREATE nothing\n"
        "RETURN 'MERGE (x)' AS text, t.set AS value, {delete: 2} AS map, $remove AS param",
        {"remove": "DETACH DELETE"},
    )
    assert rows == [
        {"text": "MERGE (x)", "value": 1, "map": {"delete": 2}, "param": "DETACH DELETE"}
    ]


def test_clear_deletes_every_node_and_relationship(graph_store: GraphStore) -> None:
    graph_store.write("CREATE (:A)-[:R]->(:B)<-[:R]-(:C)")
    graph_store.clear()
    assert graph_store.read("MATCH (n) RETURN count(n) AS n") == [{"n": 0}]


# -- what the text of a query says ------------------------------------------------------


@pytest.mark.parametrize(
    ("cypher", "clause"),
    [
        ("MATCH (n) RETURN n", None),
        ("MATCH (n) WHERE n.set = 1 RETURN n.create, n.`delete`", None),
        ("MATCH (n:Merge)-[:SET|REMOVE]->(m) RETURN {drop: 1}, $create", None),
        ("RETURN 'CREATE' AS a, \"DELETE\" AS b, 'it\\'s SET' AS c // MERGE\n", None),
        ("RETURN 1 /* DETACH DELETE\n n */", None),
        ("MATCH (n) SET n.x = 1", "SET"),
        ("MATCH (n)\nDetach\tDelete n", "DETACH"),
        ("MATCH (n) WHERE n.s = 'x' CREATE (m)", "CREATE"),
        ("CALL { CREATE (n) } IN TRANSACTIONS", "CREATE"),
        ("DROP INDEX FOR (n:T) ON (n.id)", "DROP"),
        ("RETURN 'unterminated CREATE", None),
    ],
)
def test_writing_clause(cypher: str, clause: str | None) -> None:
    assert writing_clause(cypher) == clause


# -- what FalkorDB cannot take as parameters -------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"v": "a\x00b"}, "NUL"),
        ({"v": ["ok", "a\x00b"]}, r"v\[1\]: .*NUL"),
        ({"v": float("nan")}, "nan"),
        ({"v": {"k": float("inf")}}, r"v\.k: .*inf"),
        ({"v": {"a`b": 1}}, "name"),
    ],
)
def test_falkordb_refuses_parameters_it_would_misread(
    embedded_store: FalkorDBStore, params: dict[str, Any], match: str
) -> None:
    with pytest.raises(GraphStoreError, match=match):
        embedded_store.read("RETURN $v AS v", params)


def test_parameters_must_be_graph_values(embedded_store: FalkorDBStore) -> None:
    with pytest.raises(TypeError, match=r"v\.when: datetime"):
        embedded_store.read("RETURN $v AS v", {"v": {"when": datetime.now()}})


def test_bolt_store_detects_falkordb(bolt_store: Neo4jStore) -> None:
    assert bolt_store.falkordb_bolt


def test_falkordb_bolt_parameters_it_would_crash_on_or_change_are_refused(
    bolt_store: Neo4jStore,
) -> None:
    with pytest.raises(GraphStoreError, match="4 KiB"):
        bolt_store.read("RETURN size($s) AS n", {"s": "x" * 5000})
    with pytest.raises(GraphStoreError, match="4 KiB"):
        bolt_store.write(
            "UNWIND $rows AS row CREATE (:Thing {id: row})", {"rows": list(range(2000))}
        )
    with pytest.raises(GraphStoreError, match="identifiers"):
        bolt_store.read("RETURN $m AS m", {"m": {"not an identifier": 1}})
    with pytest.raises(GraphStoreError, match=r"round 0\.3333333333333333 to 0\.333333"):
        bolt_store.read("RETURN $v AS v", {"v": [1 / 3]})
    largest = "'" * 1800  # about 3.6 KB once escaped: just inside the limit
    assert bolt_store.read("RETURN $s AS s", {"s": largest}) == [{"s": largest}]


# -- the embedded server ----------------------------------------------------------------


def test_restart_keeps_everything(tmp_path: Path) -> None:
    store = open_graph_store(None, tmp_path)
    store.ensure_index("Thing", "id")
    store.write("UNWIND range(1, 1000) AS i CREATE (:Thing {id: i, name: 'n' + toString(i)})")
    store.write("MATCH (a:Thing {id: 1}), (b:Thing {id: 2}) CREATE (a)-[:FEEDS {rate: 0.5}]->(b)")
    store.write("CREATE (:Thing {id: 'last'})")  # just before stopping: no time to sync
    store.close()
    again = open_graph_store(None, tmp_path)
    try:
        assert again.read("MATCH (t:Thing) RETURN count(t) AS n") == [{"n": 1001}]
        assert again.read("MATCH (:Thing {id: 1})-[r:FEEDS]->(b) RETURN r, b.name AS b") == [
            {"r": {"rate": 0.5}, "b": "n2"}
        ]
        assert again.read("MATCH (t:Thing {id: 'last'}) RETURN t.id AS id") == [{"id": "last"}]
        indexes = again.read("CALL db.indexes() YIELD label, properties RETURN label, properties")
        assert {"label": "Thing", "properties": ["id"]} in indexes
    finally:
        again.close()


def test_supervisor_restarts_a_killed_server(tmp_path: Path) -> None:
    store = open_graph_store(None, tmp_path)
    assert isinstance(store, FalkorDBStore) and store.server is not None
    try:
        store.write("CREATE (:Thing {id: 'before'})")
        time.sleep(1.5)  # the append-only file is synced every second
        killed = store.server.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                rows = store.read("MATCH (t:Thing) RETURN t.id AS id")
                break
            except GraphStoreError:
                assert time.monotonic() < deadline, "the embedded FalkorDB did not come back"
                time.sleep(0.05)
        assert rows == [{"id": "before"}]
        assert store.server.restarts == 1
        assert store.server.pid not in (None, killed)
    finally:
        store.close()


def test_stop_leaves_no_process_and_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedFalkorDB(tmp_path).start()
    pid = server.pid
    assert pid is not None and _alive(pid)
    server.stop()
    server.stop()
    assert not _alive(pid)
    assert server.pid is None


def test_one_server_per_data_dir(tmp_path: Path) -> None:
    refused = pytest.raises(GraphStoreError, match=rf"in use by .*process {os.getpid()}")
    with EmbeddedFalkorDB(tmp_path), refused:
        EmbeddedFalkorDB(tmp_path).start()
    with EmbeddedFalkorDB(tmp_path):  # free again once stopped
        pass


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    manifest = tmp_path / "falkordb" / "appendonlydir" / "appendonly.aof.manifest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("not a manifest\n")
    with pytest.raises(GraphStoreError, match=r"exited .*(?s:.*)manifest"):
        EmbeddedFalkorDB(tmp_path).start()
    with EmbeddedFalkorDB(tmp_path / "elsewhere"):  # nothing left locked or running
        pass


def test_share_running_uses_the_server_that_holds_the_data(tmp_path: Path) -> None:
    holder = open_graph_store(None, tmp_path)
    endpoint = tmp_path / "falkordb" / "falkordb.endpoint.json"
    try:
        holder.write("CREATE (:Thing {id: 'held'})")
        assert json.loads(endpoint.read_text())["ready"] is True
        with pytest.raises(DataDirInUse, match=rf"process {os.getpid()}"):
            open_graph_store(None, tmp_path)  # without share_running, as before
        guest = open_graph_store(None, tmp_path, share_running=True)
        assert isinstance(guest, FalkorDBStore) and guest.server is None
        assert guest.shared == find_running(tmp_path)
        assert guest.shared is not None and guest.shared.pid == os.getpid()
        assert guest.read("MATCH (t:Thing) RETURN t.id AS id") == [{"id": "held"}]
        guest.write("CREATE (:Thing {id: 'guest'})")
        guest.close()  # leaves the holder's server running
        assert holder.read("MATCH (t:Thing) RETURN count(t) AS n") == [{"n": 2}]
    finally:
        holder.close()
    assert not endpoint.exists()
    assert find_running(tmp_path) is None
    alone = open_graph_store(None, tmp_path, share_running=True)  # nobody holds it: its own
    try:
        assert isinstance(alone, FalkorDBStore) and alone.server is not None
        assert alone.shared is None
        assert alone.read("MATCH (t:Thing) RETURN count(t) AS n") == [{"n": 2}]
    finally:
        alone.close()


def _hold(tmp_path: Path, endpoint: dict[str, Any] | None) -> int:
    directory = tmp_path / "falkordb"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "falkordb.lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    if endpoint is not None:
        (directory / "falkordb.endpoint.json").write_text(json.dumps(endpoint))
    return fd


def test_find_running_trusts_the_endpoint_only_while_its_writer_holds_the_lock(
    tmp_path: Path,
) -> None:
    stale = {"pid": os.getpid(), "port": 1, "unix_socket": None, "ready": True}
    (tmp_path / "falkordb").mkdir()
    (tmp_path / "falkordb" / "falkordb.endpoint.json").write_text(json.dumps(stale))
    assert find_running(tmp_path) is None  # left by a server that died: nobody holds the lock
    with EmbeddedFalkorDB(tmp_path) as server:  # which a new server replaces
        running = find_running(tmp_path)
        assert running is not None and running.port == server.port
        assert running.unix_socket == server.unix_socket


def test_find_running_waits_for_a_starting_server_then_says_why(tmp_path: Path) -> None:
    starting = {"pid": os.getpid(), "port": 1, "unix_socket": None, "ready": False}
    fd = _hold(tmp_path, starting)
    try:
        began = time.monotonic()
        with pytest.raises(GraphStoreError, match=r"did not get ready within 1 s") as caught:
            find_running(tmp_path, wait=1.0)
        assert time.monotonic() - began >= 1.0
        assert "\n" not in str(caught.value)
    finally:
        os.close(fd)


def test_find_running_names_a_holder_that_says_nothing(tmp_path: Path) -> None:
    fd = _hold(tmp_path, None)
    try:
        with pytest.raises(GraphStoreError, match=rf"in use by process {os.getpid()}, which"):
            open_graph_store(None, tmp_path, share_running=True)
    finally:
        os.close(fd)


def test_bolt_serving_server(bolt_server: EmbeddedFalkorDB) -> None:
    assert bolt_server.bolt_port is not None and 0 < bolt_server.bolt_port < 32768


# -- opening by URL ---------------------------------------------------------------------


def test_open_by_falkordb_url_reaches_the_same_graph(
    tmp_path: Path, embedded_store: FalkorDBStore
) -> None:
    embedded_store.clear()
    embedded_store.write("CREATE (:Thing {id: 'shared'})")
    assert embedded_store.server is not None
    for url in (
        embedded_store.server.client_url,
        embedded_store.server.client_url.replace("falkordb", "redis"),
    ):
        store = open_graph_store(url, tmp_path)
        try:
            assert isinstance(store, FalkorDBStore) and store.server is None
            assert store.read("MATCH (t:Thing) RETURN t.id AS id") == [{"id": "shared"}]
        finally:
            store.close()
    assert embedded_store.read("RETURN 1 AS one") == [{"one": 1}]  # closing left it running


def test_open_by_bolt_url(tmp_path: Path) -> None:
    with EmbeddedFalkorDB(tmp_path, bolt_port=0) as server:
        store = open_graph_store(f"bolt://127.0.0.1:{server.bolt_port}", tmp_path)
        assert isinstance(store, Neo4jStore)
        assert store.write("CREATE (t:Thing {id: 1}) RETURN t.id AS id") == [{"id": 1}]
        store.close()
        # FalkorDB's Bolt endpoint hangs the next connection after a GOODBYE.
        server.stop()
        server.start()
        # A login reaches the server, which has no users; neo4j:// asks for a routing
        # table, which FalkorDB cannot give. Neither message shows the password.
        for url in (
            f"bolt://twin%40forge:p%3Asecret@127.0.0.1:{server.bolt_port}",
            f"neo4j://127.0.0.1:{server.bolt_port}/plant",
        ):
            with pytest.raises(GraphStoreError, match=r"cannot use the Bolt server") as caught:
                open_graph_store(url, tmp_path)
            assert f"://127.0.0.1:{server.bolt_port}:" in str(caught.value)
            assert "secret" not in str(caught.value)


def test_open_unreachable_servers_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(GraphStoreError, match=r"127\.0\.0\.1:1\b"):
        open_graph_store("falkordb://127.0.0.1:1", tmp_path)
    with pytest.raises(GraphStoreError, match=r"127\.0\.0\.1:1\b"):
        open_graph_store("bolt://127.0.0.1:1", tmp_path)


@pytest.mark.parametrize(
    "url", ["mysql://user:secret@localhost/db", "http://127.0.0.1:7474", "localhost:6379", ""]
)
def test_open_refuses_unknown_schemes(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match=r"scheme must be one of falkordb://.*bolt://") as caught:
        open_graph_store(url, tmp_path)
    assert "secret" not in str(caught.value)
    assert url.replace("secret", "***") in str(caught.value)
