"""Benchmark: history writes through BatchingWriter, and query latency, per backend.

Workload: 200,000 telemetry points (200 twins x 10 fields x 100 ticks; mostly floats, some
integers and strings) put one at a time from 4 producer threads (--producers), as ingest
would, then flushed; points/s counts from the first put until flush() returns. Then 500
range queries (50 points each) and 200 latest() calls, median latency. Backends: SQLite
in a temporary directory, and PostgreSQL in a throwaway schema (dropped afterwards). The
baseline, measured in the same run, is raw sqlite3 executemany of the same rows,
pre-encoded, in 2,000-row transactions: plain SQLite, without checks, threads or batching.

    uv run python bench/history.py [--points 200000] [--producers 4] [--postgres-url URL | '']

The last line printed is JSON: {"sqlite_points_per_s": ..., "postgres_points_per_s": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from twinforge.runtime.history import (
    BatchingWriter,
    HistoryPoint,
    HistoryStore,
    open_history_store,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)
TWINS, FIELDS = 200, 10
DEFAULT_POSTGRES_URL = os.environ.get(
    "TWINFORGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def workload(count: int) -> list[HistoryPoint]:
    """``count`` points, tick by tick across all twins and fields, as a plant emits them."""
    points = []
    for i in range(count):
        tick, slot = divmod(i, TWINS * FIELDS)
        twin, field = divmod(slot, FIELDS)
        value: object = 20.0 + (i % 97) * 0.25
        if field == 8:
            value = i % 1000
        elif field == 9:
            value = ("running", "idle", "fault")[i % 3]
        points.append(
            HistoryPoint(
                f"line1/cell{twin:03d}", f"sensor{field}", T0 + timedelta(seconds=tick), value
            )
        )
    return points


def write_through_writer(store: HistoryStore, points: list[HistoryPoint], producers: int) -> float:
    """Seconds to put ``points`` from ``producers`` threads and flush them."""
    writer = BatchingWriter(store)
    shares = [points[n::producers] for n in range(producers)]

    def produce(share: list[HistoryPoint]) -> None:
        for point in share:
            writer.put(point)

    threads = [threading.Thread(target=produce, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


def median_ms(call: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(
    name: str, store: HistoryStore, points: list[HistoryPoint], producers: int
) -> dict[str, float]:
    seconds = write_through_writer(store, points, producers)
    assert store.count() == len(points), f"{name}: wrote {store.count()} of {len(points)}"
    ticks = len(points) // (TWINS * FIELDS)
    rng = random.Random(7)

    def range_query(_: int) -> object:
        start = T0 + timedelta(seconds=rng.randrange(max(1, ticks - 50)))
        twin, field = rng.randrange(TWINS), rng.randrange(FIELDS)
        return store.query(
            f"line1/cell{twin:03d}",
            f"sensor{field}",
            start=start,
            end=start + timedelta(seconds=50),
        )

    query_ms = median_ms(range_query, 500)
    latest_ms = median_ms(lambda i: store.latest(f"line1/cell{i % TWINS:03d}"), 200)
    rate = len(points) / seconds
    print(
        f"{name:9s} {len(points)} points in {seconds:6.2f} s = {rate:8.0f} points/s"
        f"  | query(50 points) p50 {query_ms:6.3f} ms  latest(10 fields) p50 {latest_ms:6.3f} ms"
    )
    return {"points_per_s": rate, "query_p50_ms": query_ms, "latest_p50_ms": latest_ms}


def raw_sqlite_rate(points: list[HistoryPoint], directory: Path) -> float:
    """Baseline: plain executemany of the same rows, pre-encoded, 2,000 per transaction."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = [
        (
            p.twin_id,
            p.field,
            (p.ts - epoch) // timedelta(microseconds=1),
            p.kind,
            p.value if isinstance(p.value, int | float) else None,
            None if isinstance(p.value, float) else json.dumps(p.value),
        )
        for p in points
    ]
    conn = sqlite3.connect(directory / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE history (twin_id TEXT NOT NULL, field TEXT NOT NULL, ts INTEGER NOT NULL,"
        " kind TEXT NOT NULL, value_num REAL, value_json TEXT,"
        " PRIMARY KEY (twin_id, field, ts)) WITHOUT ROWID"
    )
    start = time.perf_counter()
    for i in range(0, len(rows), 2000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)", rows[i : i + 2000])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    rate = len(rows) / elapsed
    print(f"baseline  raw sqlite3 executemany {elapsed:6.2f} s = {rate:8.0f} points/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="'' to skip")
    args = parser.parse_args()
    points = workload(args.points)
    result: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_history_store(None, Path(tmp))
        sqlite_figures = measure("sqlite", store, points, args.producers)
        store.close()
        raw = raw_sqlite_rate(points, Path(tmp))
    result["sqlite_points_per_s"] = round(sqlite_figures["points_per_s"])
    postgres_figures: dict[str, float | None] = dict.fromkeys(sqlite_figures)
    if args.postgres_url:
        schema = f"bench_history_{uuid.uuid4().hex[:8]}"
        store = open_history_store(args.postgres_url, Path(tempfile.gettempdir()), schema=schema)
        try:
            postgres_figures = dict(measure("postgres", store, points, args.producers))
        finally:
            store.close()
            with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    rate = postgres_figures["points_per_s"]
    result["postgres_points_per_s"] = None if rate is None else round(rate)
    result["sqlite_raw_executemany_points_per_s"] = round(raw)
    result["sqlite_vs_raw"] = round(sqlite_figures["points_per_s"] / raw, 2)
    for key in ("query_p50_ms", "latest_p50_ms"):
        result[f"sqlite_{key}"] = round(sqlite_figures[key], 3)
        value = postgres_figures[key]
        result[f"postgres_{key}"] = None if value is None else round(value, 3)
    result["points"] = len(points)
    result["producers"] = args.producers
    print(json.dumps(result))


if __name__ == "__main__":
    main()
