"""History store: one suite over SQLite (in tmp_path) and the real PostgreSQL.

PostgreSQL is $TWINFORGE_TEST_POSTGRES_URL (default: trust auth on 127.0.0.1:5432, database
``test``); each test gets a fresh schema, dropped afterwards. An unreachable server fails
the PostgreSQL tests: CI has one.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from twinforge.runtime.history import (
    BatchingWriter,
    BufferFullError,
    HistoryPoint,
    HistoryStore,
    open_history_store,
)

pytestmark = pytest.mark.timeout(120)

POSTGRES_URL = os.environ.get(
    "TWINFORGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def point(
    value: Any = 1.0, *, twin: str = "pump-1", field: str = "temp", at: int = 0, **kw: Any
) -> HistoryPoint:
    """A point ``at`` seconds after T0."""
    return HistoryPoint(twin, field, T0 + at * SECOND, value, **kw)


@dataclass
class Backend:
    """How a test opens, inspects and breaks one backend's store."""

    url: str | None
    data_dir: Path
    schema: str | None = None
    admin: psycopg.Connection | None = None

    def open(self) -> HistoryStore:
        return open_history_store(self.url, self.data_dir, schema=self.schema)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        """Run raw SQL, with ``{table}`` standing for the history table."""
        if self.admin is None:
            with closing(sqlite3.connect(self.data_dir / "history.sqlite3")) as conn:
                return conn.execute(query.format(table="history")).fetchall()
        table = sql.Identifier(self.schema, "history")
        return self.admin.execute(sql.SQL(query).format(table=table)).fetchall()

    def drop_table(self) -> None:
        if self.admin is None:
            with closing(sqlite3.connect(self.data_dir / "history.sqlite3")) as conn:
                conn.execute("DROP TABLE history")
        else:
            self.admin.execute(
                sql.SQL("DROP TABLE {}").format(sql.Identifier(self.schema, "history"))
            )

    def repair(self) -> None:
        """Recreate the table, as opening a store does."""
        self.open().close()


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Backend]:
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable at {POSTGRES_URL} (set TWINFORGE_TEST_POSTGRES_URL): {exc}"
        )
    schema = f"test_history_{uuid.uuid4().hex[:12]}"
    with admin:
        yield Backend(POSTGRES_URL, tmp_path, schema, admin)
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(None, tmp_path)
    return request.getfixturevalue("postgres")


@pytest.fixture
def store(backend: Backend) -> Iterator[HistoryStore]:
    opened = backend.open()
    yield opened
    opened.close()


@pytest.fixture
def make_writer(store: HistoryStore) -> Iterator[Callable[..., BatchingWriter]]:
    """BatchingWriters on ``store`` with quick retries, all closed after the test."""
    writers: list[BatchingWriter] = []

    def make(**options: Any) -> BatchingWriter:
        options.setdefault("retry_initial_s", 0.01)
        options.setdefault("retry_max_s", 0.05)
        writers.append(BatchingWriter(store, **options))
        return writers[-1]

    yield make
    for writer in writers:
        writer.close(timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# --- round trips -------------------------------------------------------------------------

VALUES: list[Any] = [
    0.0,
    -2.5,
    1e308,
    5e-324,
    0,
    -7,
    2**53 + 1,  # not exact as a double
    10**400,  # beyond a double's range
    True,
    False,
    None,
    "",
    "running",
    "ünïcødé 🏭 工厂",
    "NUL \x00 inside a value is fine",
    [],
    {},
    [1, 2.5, "x", None, True, [[]]],
    {"state": "fault", "codes": [3, 7], "nested": {"deep": {"er": 1.5}}, "": 0},
    [1e300, 1e16, -0.5],  # jsonb would turn 1e300 into an integer
    {"b": 1, "a": 2},
]


def test_every_value_kind_round_trips_with_its_type(store: HistoryStore) -> None:
    points = [point(value, at=i) for i, value in enumerate(VALUES)]
    store.append(points)
    got = store.query("pump-1", "temp")
    assert [p.value for p in got] == VALUES
    assert [type(p.value) for p in got] == [type(v) for v in VALUES]
    assert [list(p.value) for p in got if isinstance(p.value, dict)] == [
        list(v) for v in VALUES if isinstance(v, dict)
    ], "object keys keep their order"
    assert got == points


def test_tuples_come_back_as_lists(store: HistoryStore) -> None:
    store.append([point((1, (2, "x")))])
    assert store.query("pump-1", "temp")[0].value == [1, [2, "x"]]


def test_kind_and_timestamps_round_trip_in_utc(store: HistoryStore) -> None:
    berlin = timezone(timedelta(hours=2))
    ts = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=berlin)
    store.append([HistoryPoint("pump-1", "setpoint", ts, 55, kind="property")])
    [got] = store.query("pump-1", "setpoint")
    assert got.kind == "property"
    assert got.ts == ts
    assert got.ts.tzinfo is UTC
    assert got.ts.hour == 12 and got.ts.microsecond == 123456


def test_numbers_are_queryable_in_sql(backend: Backend, store: HistoryStore) -> None:
    store.append([point(v, at=i) for i, v in enumerate([1.5, 2, True, "3", {"x": 4}])])
    [(total, numbers)] = backend.rows("SELECT sum(value_num), count(value_num) FROM {table}")
    assert (total, numbers) == (3.5, 2)


def test_extreme_timestamps(store: HistoryStore) -> None:
    early = datetime(1, 1, 1, tzinfo=UTC)
    late = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    store.append([HistoryPoint("t", "f", early, 1), HistoryPoint("t", "f", late, 2)])
    assert [p.ts for p in store.query("t", "f")] == [early, late]


# --- queries -----------------------------------------------------------------------------


def test_time_range_start_inclusive_end_exclusive(store: HistoryStore) -> None:
    store.append([point(float(i), at=i) for i in range(10)])
    store.append([HistoryPoint("pump-1", "temp", T0 + 5 * SECOND - timedelta(microseconds=1), -1)])

    def seconds(**bounds: Any) -> list[float]:
        return [p.value for p in store.query("pump-1", "temp", **bounds)]

    assert seconds(start=T0 + 2 * SECOND, end=T0 + 5 * SECOND) == [2.0, 3.0, 4.0, -1]
    assert seconds(start=T0 + 8 * SECOND) == [8.0, 9.0]
    assert seconds(end=T0 + 2 * SECOND) == [0.0, 1.0]
    assert seconds(start=T0 + 3 * SECOND, end=T0 + 3 * SECOND) == []
    assert seconds(start=T0 + 5 * SECOND, end=T0 + 2 * SECOND) == []
    # The same instants given in another zone select the same points.
    tokyo = timezone(timedelta(hours=9))
    assert seconds(start=(T0 + 8 * SECOND).astimezone(tokyo)) == [8.0, 9.0]


def test_ordering_and_limit(store: HistoryStore) -> None:
    store.append([point(float(i), at=i) for i in (5, 1, 9, 3, 7, 0, 2, 8, 4, 6)])

    def values(**options: Any) -> list[float]:
        return [p.value for p in store.query("pump-1", "temp", **options)]

    assert values() == [float(i) for i in range(10)]
    assert values(descending=True) == [float(i) for i in reversed(range(10))]
    assert values(limit=3) == [0.0, 1.0, 2.0]
    assert values(limit=3, descending=True) == [9.0, 8.0, 7.0]
    assert values(limit=0) == []
    assert values(limit=None) == values()
    assert values(start=T0 + 4 * SECOND, limit=2, descending=True) == [9.0, 8.0]


def test_default_limit_is_1000(store: HistoryStore) -> None:
    store.append([point(float(i), at=i) for i in range(1200)])
    assert len(store.query("pump-1", "temp")) == 1000
    assert len(store.query("pump-1", "temp", limit=None)) == 1200


def test_query_only_sees_its_twin_and_field(store: HistoryStore) -> None:
    store.append([point(1, twin="a", field="x"), point(2, twin="a", field="y"), point(3, twin="b")])
    assert [p.value for p in store.query("a", "x")] == [1]
    assert store.query("a", "temp") == []
    assert store.query("nobody", "x") == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"twin_id": ""}, "twin_id: must not be empty"),
        ({"field": 3}, "field: must be a string"),
        ({"start": datetime(2024, 1, 1)}, "start: naive datetime"),
        ({"end": date(2024, 1, 1)}, "end: must be a datetime"),
        ({"limit": -1}, "limit: must be a non-negative integer"),
        ({"limit": 2.5}, "limit: must be a non-negative integer"),
    ],
)
def test_query_arguments_are_checked(
    store: HistoryStore, arguments: dict[str, Any], message: str
) -> None:
    call = {"twin_id": "pump-1", "field": "temp", **arguments}
    twin_id, field = call.pop("twin_id"), call.pop("field")
    with pytest.raises(ValueError, match=message):
        store.query(twin_id, field, **call)


def test_same_key_keeps_the_last_value(store: HistoryStore) -> None:
    store.append([point(1.0), point(2.0, at=1)])
    store.append([point(10.0), point("replaced", kind="property")])  # twice in one batch
    assert [(p.value, p.kind) for p in store.query("pump-1", "temp")] == [
        ("replaced", "property"),
        (2.0, "telemetry"),
    ]
    assert store.count() == 2


def test_latest(store: HistoryStore) -> None:
    store.append(
        [
            point(1.0, field="temp", at=5),
            point(2.0, field="temp", at=9),
            point(3.0, field="temp", at=7),
            point("on", field="state", at=1, kind="property"),
            point(9.9, twin="other", field="temp", at=99),
        ]
    )
    store.append([point(0.0, field="temp", at=8)])  # written later but older: not latest
    latest = store.latest("pump-1")
    assert {name: (p.value, p.ts) for name, p in latest.items()} == {
        "temp": (2.0, T0 + 9 * SECOND),
        "state": ("on", T0 + SECOND),
    }
    assert latest["state"].kind == "property"
    assert latest["temp"].twin_id == "pump-1"
    assert list(store.latest("pump-1", ["state", "missing", "state"])) == ["state"]
    assert store.latest("pump-1", []) == {}
    assert store.latest("nobody") == {}
    with pytest.raises(ValueError, match="fields: must be a sequence"):
        store.latest("pump-1", "temp")
    with pytest.raises(ValueError, match=r"fields\[1\]: must not be empty"):
        store.latest("pump-1", ["temp", ""])


def test_latest_over_many_fields(store: HistoryStore) -> None:
    store.append(
        [point(float(i * 10 + t), field=f"f{i:03d}", at=t) for i in range(150) for t in range(3)]
    )
    latest = store.latest("pump-1")
    assert len(latest) == 150
    assert all(p.value == float(int(name[1:]) * 10 + 2) for name, p in latest.items())


def test_count_and_delete_twin(store: HistoryStore) -> None:
    store.append([point(1.0, twin=twin, at=i) for twin in ("a", "b") for i in range(4)])
    store.append([point(1.0, twin="a", field="other")])
    assert (store.count(), store.count("a"), store.count("b"), store.count("c")) == (9, 5, 4, 0)
    assert store.delete_twin("a") == 5
    assert store.delete_twin("a") == 0
    assert (store.count(), store.count("a")) == (4, 0)
    assert len(store.query("b", "temp")) == 4
    assert store.latest("a") == {}


def test_append_nothing(store: HistoryStore) -> None:
    store.append([])
    assert store.count() == 0


def test_concurrent_appends_and_queries(store: HistoryStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for batch in range(20):
                store.append([point(float(i), twin=f"t{n}", at=batch * 10 + i) for i in range(10)])
                store.query(f"t{n}", "temp", limit=5, descending=True)
                store.latest(f"t{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 8 * 200


def test_reopen_keeps_history(backend: Backend) -> None:
    first = backend.open()
    first.append([point(float(i), at=i) for i in range(5)])
    first.close()
    first.close()  # closing twice is harmless
    again = backend.open()
    try:
        assert [p.value for p in again.query("pump-1", "temp")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        again.close()


# --- hostile input -----------------------------------------------------------------------

NAIVE = datetime(2024, 1, 1)
NESTED: list[Any] = []
for _ in range(200):
    NESTED = [NESTED]
CYCLE: list[Any] = []
CYCLE.append(CYCLE)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (point(twin=""), r"points\[1\]\.twin_id: must not be empty"),
        (point(field=""), r"points\[1\]\.field: must not be empty"),
        (point(twin=42), r"points\[1\]\.twin_id: must be a string, got int"),
        (point(twin="a\x00b"), r"points\[1\]\.twin_id: must not contain NUL"),
        (point(field="\ud800"), r"points\[1\]\.field: strings must be valid Unicode"),
        (point(twin="é" * 513), r"points\[1\]\.twin_id: must be at most 1024 bytes"),
        (HistoryPoint("t", "f", NAIVE, 1.0), r"points\[1\]\.ts: naive datetime"),
        (HistoryPoint("t", "f", date(2024, 1, 1), 1.0), r"points\[1\]\.ts: must be a datetime"),
        (HistoryPoint("t", "f", "2024-01-01T00:00Z", 1.0), r"points\[1\]\.ts: must be a datetime"),
        (point(math.nan), r"points\[1\]\.value: nan is not JSON; numbers must be finite"),
        (point(math.inf), r"points\[1\]\.value: inf is not JSON"),
        (point({"a": [1, -math.inf]}), r"points\[1\]\.value\['a'\]\[1\]: -inf is not JSON"),
        (point({1, 2}), r"points\[1\]\.value: set is not JSON"),
        (point(b"raw"), r"points\[1\]\.value: bytes is not JSON"),
        (point({"k": object()}), r"points\[1\]\.value\['k'\]: object is not JSON"),
        (point({1: "a"}), r"points\[1\]\.value\[1\]: object key 1 is not a string"),
        (point(["ok", "\udfff"]), r"points\[1\]\.value\[1\]: strings must be valid Unicode"),
        (point(NESTED), r"points\[1\]\.value(\[0\])+: nested deeper than 100 levels"),
        (point(CYCLE), r"points\[1\]\.value(\[0\])+: nested deeper than 100 levels"),
        (point(10**5000), r"points\[1\]\.value: .*digits"),
        (point(kind="alarm"), r"points\[1\]\.kind: must be one of telemetry, property"),
        ("not a point", r"points\[1\]: must be a HistoryPoint, got str"),
    ],
)
def test_bad_points_reject_the_whole_batch(store: HistoryStore, bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.append([point(1.0, twin="good"), bad, point(2.0, twin="good", at=1)])
    assert store.count() == 0


HOSTILE_NAMES = [
    "x'); DROP TABLE history; --",
    '"; DELETE FROM history; --',
    "%s %(twin)s ? :twin {table}",
    "  padded  ",
    "line\nbreak\ttab",
    "ünïcødé 🏭",
    "a" * 1024,
    "é" * 512,
]


def test_hostile_names_are_stored_verbatim(store: HistoryStore) -> None:
    store.append([point(0.0, twin="bystander")])
    store.append([point(float(i), twin=name, field=name) for i, name in enumerate(HOSTILE_NAMES)])
    for i, name in enumerate(HOSTILE_NAMES):
        [got] = store.query(name, name)
        assert (got.twin_id, got.field, got.value) == (name, name, float(i))
        assert list(store.latest(name)) == [name]
    assert store.count() == 1 + len(HOSTILE_NAMES)
    assert store.delete_twin(HOSTILE_NAMES[0]) == 1
    assert store.count("bystander") == 1


def test_huge_values_are_stored_verbatim(store: HistoryStore) -> None:
    text = "ä" * 5_000_000
    document = {f"key{i}": [i, str(i) * 10] for i in range(50_000)}
    store.append([point(text), point(document, at=1)])
    assert [p.value for p in store.query("pump-1", "temp")] == [text, document]


# --- open_history_store ------------------------------------------------------------------


def test_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = open_history_store(None, tmp_path / "data")
    store.append([point()])
    store.close()
    assert (tmp_path / "data" / "history.sqlite3").is_file()


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tmp_path / "abs" / "h.db"
    store = open_history_store(f"sqlite:///{absolute}", tmp_path / "unused")
    store.append([point()])
    store.close()
    assert absolute.is_file()
    monkeypatch.chdir(tmp_path)
    open_history_store("sqlite:///rel/h.db", tmp_path / "unused").close()
    assert (tmp_path / "rel" / "h.db").is_file()
    assert not (tmp_path / "unused").exists()
    with closing(sqlite3.connect(absolute)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    ("url", "schema", "message"),
    [
        (
            "mysql://db/x",
            None,
            "unsupported scheme 'mysql'; accepted: sqlite:///PATH, postgresql://",
        ),
        ("/plain/path.db", None, "unsupported scheme ''"),
        ("sqlite://", None, "sqlite URLs are sqlite:///relative/path"),
        ("sqlite://host/x.db", None, "sqlite URLs are"),
        (None, "isolated", "schema: applies to PostgreSQL stores only"),
        (f"{POSTGRES_URL}?schema=a", "b", "contradicts schema='b'"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str | None, schema: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_history_store(url, tmp_path, schema=schema)


def test_postgres_schema_and_options_from_the_url(postgres: Backend) -> None:
    name = f"test {uuid.uuid4().hex[:8]}"  # a space: must reach libpq as %20, not "+"
    url = f"{postgres.url}?schema={postgres.schema}&application_name={name.replace(' ', '%20')}"
    store = open_history_store(url, postgres.data_dir)
    try:
        store.append([point()])
        assert postgres.admin is not None
        sessions = postgres.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
        ).fetchone()
        assert sessions is not None and sessions[0] >= 1
    finally:
        store.close()
    assert postgres.rows("SELECT count(*) FROM {table}") == [(1,)]


# --- BatchingWriter ----------------------------------------------------------------------


def test_many_threads_put_then_flush(
    store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_batch=500)
    threads, per_thread = 8, 2500

    def produce(n: int) -> None:
        for i in range(0, per_thread, 10):
            if i % 20:
                writer.put_many([point(float(i + j), twin=f"t{n}", at=i + j) for j in range(10)])
            else:
                for j in range(10):
                    writer.put(point(float(i + j), twin=f"t{n}", at=i + j))

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writer.flush(timeout=30)
    assert writer.pending == 0
    assert store.count() == threads * per_thread
    values = [p.value for p in store.query("t3", "temp", limit=None)]
    assert values == [float(i) for i in range(per_thread)]


def test_points_wait_at_most_max_delay(
    store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_delay_s=0.05)
    writer.put(point())
    wait_until(lambda: store.count() == 1, timeout=5)


def test_a_full_batch_is_written_without_waiting(
    store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_delay_s=3600, max_batch=100)
    writer.put_many([point(float(i), at=i) for i in range(99)])
    time.sleep(0.1)
    assert store.count() == 0
    writer.put(point(at=99))
    wait_until(lambda: store.count() == 100)


def test_flush_and_wait_do_not_wait_out_the_delay(
    store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_delay_s=3600)
    writer.put(point())
    writer.flush(timeout=10)
    assert store.count() == 1
    writer.put_many([point(at=1), point(at=2)], wait=True, timeout=10)
    assert store.count() == 3


def test_close_flushes_and_refuses_more(
    store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_delay_s=3600)
    writer.put_many([point(float(i), at=i) for i in range(10)])
    writer.close(timeout=10)
    assert store.count() == 10
    with pytest.raises(RuntimeError, match="closed"):
        writer.put(point(at=11))
    with BatchingWriter(store, max_delay_s=3600) as scoped:
        scoped.put(point(at=12))
    assert store.count() == 11


def test_put_checks_points_before_accepting(
    store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer()
    with pytest.raises(ValueError, match=r"point\.ts: naive datetime"):
        writer.put(HistoryPoint("t", "f", NAIVE, 1.0))
    with pytest.raises(ValueError, match=r"points\[1\]\.value: nan is not JSON"):
        writer.put_many([point(1.0), point(math.nan, at=1)])
    assert writer.pending == 0
    writer.flush(timeout=10)
    assert store.count() == 0


def test_failing_store_keeps_points_and_recovers(
    backend: Backend, store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_batch=100)
    writer.put_many([point(float(i), at=i) for i in range(10)], wait=True, timeout=10)
    backend.drop_table()
    writer.put_many([point(float(i), twin="late", at=i) for i in range(250)])
    with pytest.raises(TimeoutError, match=r"250 points not yet durable.*history"):
        writer.flush(timeout=0.5)
    assert writer.pending == 250
    assert writer.last_error is not None and "history" in str(writer.last_error)
    backend.repair()
    writer.flush(timeout=30)
    assert (writer.pending, writer.last_error) == (0, None)
    assert [p.value for p in store.query("late", "temp", limit=None)] == [
        float(i) for i in range(250)
    ]
    assert store.count() == 250  # the first ten went with the dropped table


def test_full_buffer_blocks_then_refuses_without_dropping(
    backend: Backend, store: HistoryStore, make_writer: Callable[..., BatchingWriter]
) -> None:
    writer = make_writer(max_batch=50, max_pending=100)
    backend.drop_table()
    writer.put_many([point(float(i), at=i) for i in range(100)])
    started = time.monotonic()
    with pytest.raises(BufferFullError, match="100 points pending"):
        writer.put(point(at=100), timeout=0.2)
    assert time.monotonic() - started >= 0.2
    with pytest.raises(ValueError, match="exceed max_pending=100"):
        writer.put_many([point(at=i) for i in range(101)])
    assert writer.pending == 100
    # A producer blocked on the full buffer goes on once the store is repaired.
    blocked = threading.Thread(target=writer.put, args=(point(at=100),), kwargs={"timeout": 30})
    blocked.start()
    time.sleep(0.1)
    assert blocked.is_alive()
    backend.repair()
    blocked.join(timeout=30)
    writer.flush(timeout=30)
    assert store.count() == 101


def test_writer_survives_a_killed_connection(postgres: Backend) -> None:
    name = f"test_{uuid.uuid4().hex[:12]}"
    store = open_history_store(
        f"{postgres.url}?application_name={name}", postgres.data_dir, schema=postgres.schema
    )
    try:
        writer = BatchingWriter(store, retry_initial_s=0.01, retry_max_s=0.05)
        writer.put(point(0.0), timeout=10)
        writer.flush(timeout=10)
        assert postgres.admin is not None
        killed = postgres.admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            [name],
        ).fetchone()
        assert killed is not None and killed[0] >= 1
        writer.put_many([point(float(i), at=i) for i in range(1, 50)])
        writer.close(timeout=30)
        assert store.count() == 50
    finally:
        store.close()


def test_writer_options_are_checked(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="max_batch <= max_pending and max_transaction"):
        BatchingWriter(store, max_batch=10, max_pending=5)
    with pytest.raises(ValueError, match="retry_initial_s <= retry_max_s"):
        BatchingWriter(store, retry_initial_s=1.0, retry_max_s=0.5)
