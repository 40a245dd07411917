"""PostgreSQL history store (psycopg 3): batches written with binary COPY."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from twinforge.runtime.history._encoding import (
    Row,
    check_name,
    check_range,
    decode_value,
    encode_points,
)
from twinforge.runtime.history.point import HistoryPoint

DEFAULT_SCHEMA = "twinforge"
_MAX_IDENTIFIER_BYTES = 63

_CREATE_TABLE = """
CREATE TABLE {table} (
    twin_id text NOT NULL,
    field text NOT NULL,
    ts timestamptz NOT NULL,
    kind text NOT NULL,          -- 'telemetry' or 'property'
    value_num double precision,  -- numbers (not booleans), for SQL filters and aggregates
    value_json text,             -- exact JSON of every value except floats
    PRIMARY KEY (twin_id, field, ts)
)
"""

_COLUMN_TYPES = ["text", "text", "timestamptz", "text", "float8", "text"]

# Batches are copied (binary COPY, several times faster than INSERT) straight into the
# table. Only a batch with a key already stored (a replay or a retried write) takes the
# slower path: copy into a session-private staging table, then upsert from it.
_COPY = "COPY {table} (twin_id, field, ts, kind, value_num, value_json) FROM STDIN (FORMAT BINARY)"

_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS history_stage (
    twin_id text, field text, ts timestamptz, kind text, value_num float8, value_json text
) ON COMMIT DELETE ROWS
"""

_COPY_STAGE = "COPY history_stage FROM STDIN (FORMAT BINARY)"

_UPSERT_STAGE = """
INSERT INTO {table} (twin_id, field, ts, kind, value_num, value_json)
SELECT twin_id, field, ts, kind, value_num, value_json FROM history_stage
ON CONFLICT (twin_id, field, ts) DO UPDATE SET
    kind = EXCLUDED.kind, value_num = EXCLUDED.value_num, value_json = EXCLUDED.value_json
"""

_ALL_FIELDS = """
WITH RECURSIVE names(name) AS (
    (SELECT field FROM {table} WHERE twin_id = %(twin)s ORDER BY field LIMIT 1)
    UNION ALL
    SELECT (SELECT field FROM {table} WHERE twin_id = %(twin)s AND field > names.name
            ORDER BY field LIMIT 1)
    FROM names WHERE names.name IS NOT NULL
)
"""

_GIVEN_FIELDS = "WITH names(name) AS (SELECT DISTINCT unnest(%(fields)s::text[]))"

# Per field, one probe of the key index from its newest end.
_LATEST = """
SELECT newest.* FROM names CROSS JOIN LATERAL (
    SELECT field, ts, kind, value_num, value_json FROM {table}
    WHERE twin_id = %(twin)s AND field = names.name ORDER BY ts DESC LIMIT 1
) AS newest
"""


class PostgresHistoryStore:
    """History in table ``history`` of ``schema``, which is created if missing.

    Writes and reads use one connection each, behind a lock; a connection broken by a
    server restart or network failure is reopened on the next call.
    """

    def __init__(self, conninfo: str, *, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = check_name(schema, "schema")
        if len(schema.encode()) > _MAX_IDENTIFIER_BYTES:
            # PostgreSQL would silently truncate it, and two long names could collide.
            raise ValueError(f"schema: must be at most {_MAX_IDENTIFIER_BYTES} bytes")
        self._table = sql.Identifier(schema, "history")
        params = conninfo_to_dict(conninfo)
        # libpq waits forever for an unresponsive host by default.
        params.setdefault("connect_timeout", "10")
        params.setdefault("application_name", "twinforge-history")
        self._writer = _Session(params)
        self._reader = _Session(params)
        try:
            with self._writer.connection() as conn:
                self._create_table(conn)
        except BaseException:
            self.close()
            raise
        self._copy = self._sql(_COPY)
        self._upsert = self._sql(_UPSERT_STAGE)
        self._select = self._sql(
            "SELECT ts, kind, value_num, value_json FROM {table} WHERE twin_id = %s AND field = %s"
        )

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(table=self._table)

    def _create_table(self, conn: psycopg.Connection) -> None:
        # Look before creating: CREATE ... IF NOT EXISTS needs the CREATE privilege even when
        # the object exists, and a deployment may pre-create the table for a restricted role.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.schema])
            exists = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", [self._table.as_string(conn)]
            ).fetchone()
            if exists and exists[0]:
                return
            has_schema = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]
            ).fetchone()
            if not has_schema:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            conn.execute(self._sql(_CREATE_TABLE))

    def append(self, points: Sequence[HistoryPoint]) -> None:
        """Write ``points`` in one transaction; a key already stored gets the new value."""
        rows = encode_points(points)
        if not rows:
            return
        with self._writer.connection() as conn:
            try:
                with conn.transaction():
                    _copy(conn, self._copy, rows)
            except psycopg.errors.UniqueViolation:
                with conn.transaction():
                    conn.execute(_CREATE_STAGE)
                    _copy(conn, sql.SQL(_COPY_STAGE), rows)
                    conn.execute(self._upsert)

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
        parts = [self._select]
        params: list[Any] = [twin_id, field]
        if start is not None:
            parts.append(sql.SQL(" AND ts >= %s"))
            params.append(start)
        if end is not None:
            parts.append(sql.SQL(" AND ts < %s"))
            params.append(end)
        parts.append(sql.SQL(" ORDER BY ts DESC" if descending else " ORDER BY ts"))
        if limit is not None:
            parts.append(sql.SQL(" LIMIT %s"))
            params.append(limit)
        with self._reader.connection() as conn:
            rows = conn.execute(sql.Composed(parts), params).fetchall()
        return [
            HistoryPoint(twin_id, field, ts, decode_value(num, text), kind)
            for ts, kind, num, text in rows
        ]

    def latest(self, twin_id: str, fields: Sequence[str] | None = None) -> dict[str, HistoryPoint]:
        """The newest point of each field (of ``fields``, or all), keyed by field name."""
        check_name(twin_id, "twin_id")
        params: dict[str, Any] = {"twin": twin_id}
        if fields is None:
            names = _ALL_FIELDS
        else:
            if isinstance(fields, str):
                raise ValueError("fields: must be a sequence of field names, not one string")
            params["fields"] = [check_name(name, f"fields[{i}]") for i, name in enumerate(fields)]
            names = _GIVEN_FIELDS
        with self._reader.connection() as conn:
            rows = conn.execute(self._sql(names + _LATEST), params).fetchall()
        return {
            field: HistoryPoint(twin_id, field, ts, decode_value(num, text), kind)
            for field, ts, kind, num, text in rows
        }

    def count(self, twin_id: str | None = None) -> int:
        """How many points are stored, for one twin or in all."""
        query = "SELECT count(*) FROM {table}"
        params: list[str] = []
        if twin_id is not None:
            query += " WHERE twin_id = %s"
            params.append(check_name(twin_id, "twin_id"))
        with self._reader.connection() as conn:
            row = conn.execute(self._sql(query), params).fetchone()
        return row[0] if row else 0

    def delete_twin(self, twin_id: str) -> int:
        """Delete a twin's whole history; return how many points were deleted."""
        check_name(twin_id, "twin_id")
        with self._writer.connection() as conn:
            return conn.execute(
                self._sql("DELETE FROM {table} WHERE twin_id = %s"), [twin_id]
            ).rowcount

    def close(self) -> None:
        """Close both connections; calling it again does nothing."""
        self._writer.close()
        self._reader.close()


def _copy(conn: psycopg.Connection, statement: sql.Composable, rows: list[Row]) -> None:
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(_COLUMN_TYPES)
        for row in rows:
            copy.write_row(row)


class _Session:
    """One connection behind a lock, reopened when the server or network broke it."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("history store is closed")
            if self._conn is None or self._conn.closed or self._conn.broken:
                if self._conn is not None:
                    self._conn.close()
                # Autocommit: each statement is its own transaction; no idle transaction
                # holds locks between calls.
                self._conn = psycopg.connect(**self._params, autocommit=True)
                # Timestamps come back in UTC whatever the server's default zone is.
                self._conn.execute("SET TIME ZONE 'UTC'")
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
