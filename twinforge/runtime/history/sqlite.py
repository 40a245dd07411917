"""SQLite history store: one file, WAL journal, each append one upserting transaction."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twinforge.runtime.history._encoding import (
    check_name,
    check_range,
    decode_value,
    encode_points,
)
from twinforge.runtime.history.point import HistoryPoint

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# WITHOUT ROWID: rows live in the (twin_id, field, ts) b-tree itself, so a time-range
# query reads consecutive pages and the key needs no second index.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    twin_id TEXT NOT NULL,
    field TEXT NOT NULL,
    ts INTEGER NOT NULL,  -- microseconds since 1970-01-01T00:00:00Z
    kind TEXT NOT NULL,   -- 'telemetry' or 'property'
    value_num REAL,       -- numbers (not booleans), for SQL filters and aggregates
    value_json TEXT,      -- exact JSON of every value except floats
    PRIMARY KEY (twin_id, field, ts)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO history (twin_id, field, ts, kind, value_num, value_json) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (twin_id, field, ts) DO UPDATE SET
    kind = excluded.kind, value_num = excluded.value_num, value_json = excluded.value_json
"""

# Distinct fields of a twin by skipping through the key index (one probe per field), so
# latest() costs O(fields * log n) rather than a scan of the twin's whole history.
_FIELDS_OF_TWIN = """
WITH RECURSIVE names(name) AS (
    SELECT min(field) FROM history WHERE twin_id = :twin
    UNION ALL
    SELECT (SELECT min(field) FROM history WHERE twin_id = :twin AND field > name)
    FROM names WHERE name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL
"""

_LATEST_OF_FIELD = """
SELECT ts, kind, value_num, value_json FROM history
WHERE twin_id = ? AND field = ? ORDER BY ts DESC LIMIT 1
"""


class SqliteHistoryStore:
    """History in one SQLite file.

    Writes go through one connection and reads through another, each behind its own lock
    (sqlite3 connections are not thread-safe); with WAL, queries do not wait for writes.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer = self._connect(busy_timeout_s)
        try:
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":  # e.g. on a network file system
                log.warning("history store %s: WAL unavailable, journal_mode=%s", path, mode)
            self._writer.executescript(_SCHEMA)
            self._reader = self._connect(busy_timeout_s)
        except BaseException:
            self._writer.close()
            raise
        self._reader.execute("PRAGMA query_only = ON")

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash or power
        # loss can undo the last commits, and the file is never corrupted.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def append(self, points: Sequence[HistoryPoint]) -> None:
        """Write ``points`` in one transaction; a key already stored gets the new value."""
        rows = [
            (twin_id, field, (ts - _EPOCH) // _MICROSECOND, kind, num, text)
            for twin_id, field, ts, kind, num, text in encode_points(points)
        ]
        if not rows:
            return
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    def query(
        self,
        twin_id: str,
        field: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = 1000,
        descending: bool = False,
    ) -> list[HistoryPoint]:
        """Points of one field with ``start <= ts < end``, by time; ``limit=None`` for all."""
        check_name(twin_id, "twin_id")
        check_name(field, "field")
        start, end = check_range(start, end, limit)
        sql = "SELECT ts, kind, value_num, value_json FROM history WHERE twin_id = ? AND field = ?"
        params: list[Any] = [twin_id, field]
        if start is not None:
            sql += " AND ts >= ?"
            params.append((start - _EPOCH) // _MICROSECOND)
        if end is not None:
            sql += " AND ts < ?"
            params.append((end - _EPOCH) // _MICROSECOND)
        sql += " ORDER BY ts DESC" if descending else " ORDER BY ts"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._read_lock:
            rows = self._reader.execute(sql, params).fetchall()
        return [_point(twin_id, field, *row) for row in rows]

    def latest(self, twin_id: str, fields: Sequence[str] | None = None) -> dict[str, HistoryPoint]:
        """The newest point of each field (of ``fields``, or all), keyed by field name."""
        check_name(twin_id, "twin_id")
        wanted = None
        if fields is not None:
            if isinstance(fields, str):
                raise ValueError("fields: must be a sequence of field names, not one string")
            wanted = [check_name(name, f"fields[{i}]") for i, name in enumerate(fields)]
        found: dict[str, HistoryPoint] = {}
        with self._read_lock:
            conn = self._reader
            # One read transaction, so every field is read from the same snapshot.
            conn.execute("BEGIN")
            try:
                if wanted is None:
                    wanted = [name for (name,) in conn.execute(_FIELDS_OF_TWIN, {"twin": twin_id})]
                for name in dict.fromkeys(wanted):
                    row = conn.execute(_LATEST_OF_FIELD, (twin_id, name)).fetchone()
                    if row is not None:
                        found[name] = _point(twin_id, name, *row)
            finally:
                conn.execute("COMMIT")
        return found

    def count(self, twin_id: str | None = None) -> int:
        """How many points are stored, for one twin or in all."""
        if twin_id is None:
            sql, params = "SELECT count(*) FROM history", ()
        else:
            sql, params = (
                "SELECT count(*) FROM history WHERE twin_id = ?",
                (check_name(twin_id, "twin_id"),),
            )
        with self._read_lock:
            return self._reader.execute(sql, params).fetchone()[0]

    def delete_twin(self, twin_id: str) -> int:
        """Delete a twin's whole history; return how many points were deleted."""
        check_name(twin_id, "twin_id")
        with self._write_lock:
            return self._writer.execute(
                "DELETE FROM history WHERE twin_id = ?", (twin_id,)
            ).rowcount

    def close(self) -> None:
        """Close both connections; calling it again does nothing."""
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._writer.close()


def _point(
    twin_id: str, field: str, ts: int, kind: Any, num: float | None, text: str | None
) -> HistoryPoint:
    return HistoryPoint(twin_id, field, _EPOCH + ts * _MICROSECOND, decode_value(num, text), kind)
