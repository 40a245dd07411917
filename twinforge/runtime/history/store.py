"""The history store interface, and choosing a backend from the configured URL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from twinforge.runtime.history.point import HistoryPoint
from twinforge.runtime.history.sqlite import SqliteHistoryStore

SQLITE_FILE_NAME = "history.sqlite3"
_ACCEPTED = (
    "sqlite:///PATH, postgresql://... or postgres://... (or no URL for SQLite under the data dir)"
)


class HistoryStore(Protocol):
    """Time series of telemetry and property values per twin and field.

    Every method validates its arguments and raises ValueError naming the field and the
    rule. Implementations are safe to call from several threads.
    """

    def append(self, points: Sequence[HistoryPoint]) -> None:
        """Write ``points`` in one transaction: all of them or, on any error, none."""
        ...

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
        ...

    def latest(self, twin_id: str, fields: Sequence[str] | None = None) -> dict[str, HistoryPoint]:
        """The newest point of each field (of ``fields``, or all), keyed by field name."""
        ...

    def count(self, twin_id: str | None = None) -> int:
        """How many points are stored, for one twin or in all."""
        ...

    def delete_twin(self, twin_id: str) -> int:
        """Delete a twin's whole history; return how many points were deleted."""
        ...

    def close(self) -> None:
        """Release connections; calling it again does nothing."""
        ...


def open_history_store(
    url: str | None, data_dir: Path, *, schema: str | None = None
) -> HistoryStore:
    """Open the store named by ``url`` (the ``history_url`` setting).

    - None: SQLite in ``data_dir / "history.sqlite3"``, creating the directory.
    - ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (SQLAlchemy's spelling).
    - ``postgresql://...`` or ``postgres://...``: tables in ``schema`` (the argument, or a
      ``?schema=`` query parameter; default ``twinforge``), created if missing.
    """
    if url is None:
        return _open_sqlite(Path(data_dir) / SQLITE_FILE_NAME, schema)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or parts.query or len(parts.path) < 2:
            raise ValueError(
                "history URL: sqlite URLs are sqlite:///relative/path or sqlite:////absolute/path"
            )
        return _open_sqlite(Path(unquote(parts.path[1:])), schema)
    if scheme in ("postgresql", "postgres"):
        # Imported here so that SQLite users never load psycopg.
        from twinforge.runtime.history.postgres import DEFAULT_SCHEMA, PostgresHistoryStore

        query = parse_qsl(parts.query, keep_blank_values=True)
        url_schema = [value for key, value in query if key == "schema"]
        if url_schema and schema is not None and url_schema[-1] != schema:
            raise ValueError(
                f"history URL: schema {url_schema[-1]!r} in the URL contradicts schema={schema!r}"
            )
        conninfo = url
        if url_schema:  # libpq refuses unknown parameters; %20, not "+", for spaces
            rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
            conninfo = urlunsplit(parts._replace(query=rest))
        if schema is None:
            schema = url_schema[-1] if url_schema else DEFAULT_SCHEMA
        return PostgresHistoryStore(conninfo, schema=schema)
    raise ValueError(f"history URL: unsupported scheme {parts.scheme!r}; accepted: {_ACCEPTED}")


def _open_sqlite(path: Path, schema: str | None) -> HistoryStore:
    if schema is not None:
        raise ValueError("schema: applies to PostgreSQL stores only, not SQLite")
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHistoryStore(path)
