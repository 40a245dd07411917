"""The command audit log: one SQLite row per step of every invocation, never changed.

Each row says who (``user``, their ``roles``; ``approver`` for the second user who approved
or rejected), what (``twin``, ``model``, ``command``, ``request``), when (``time``, epoch
seconds), the ``action`` (``invoke``, ``approve``, ``reject``, ``expire``, ``reply``) and
its outcome (``decision``, ``reason``, ``status``, ``response``, ``error``). The rows of one
invocation share its ``correlation_id`` (the command id). Triggers refuse UPDATE and DELETE,
so the file is append-only to anybody going through SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinforge.lifecycle import Closing
from twinforge.runtime.commands.record import CommandRecord

__all__ = ["AuditEntry", "AuditLog"]

#: Longest JSON text kept for a request or response; longer ones keep their head only.
MAX_JSON_CHARS = 64 * 1024
#: Longest id, name or message kept in a text column.
MAX_TEXT_CHARS = 4096
MAX_QUERY_LIMIT = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS command_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    user TEXT NOT NULL,
    roles TEXT NOT NULL,
    twin TEXT NOT NULL,
    model TEXT,
    command TEXT NOT NULL,
    request TEXT,
    decision TEXT,
    reason TEXT,
    status TEXT NOT NULL,
    response TEXT,
    error TEXT,
    approver TEXT
);
CREATE INDEX IF NOT EXISTS command_audit_twin ON command_audit (twin, time);
CREATE INDEX IF NOT EXISTS command_audit_user ON command_audit (user, time);
CREATE INDEX IF NOT EXISTS command_audit_approver ON command_audit (approver, time);
CREATE INDEX IF NOT EXISTS command_audit_time ON command_audit (time);
CREATE INDEX IF NOT EXISTS command_audit_correlation ON command_audit (correlation_id);
CREATE TRIGGER IF NOT EXISTS command_audit_no_update BEFORE UPDATE ON command_audit
BEGIN SELECT RAISE(ABORT, 'the command audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS command_audit_no_delete BEFORE DELETE ON command_audit
BEGIN SELECT RAISE(ABORT, 'the command audit log is append-only'); END;
"""

_COLUMNS = (
    "id, time, action, correlation_id, user, roles, twin, model, command, request, "
    "decision, reason, status, response, error, approver"
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row; ``request`` and ``response`` are decoded JSON (a ``{"$truncated": ...}``
    object when they were too long to keep whole)."""

    id: int
    time: float
    action: str
    correlation_id: str
    user: str
    roles: frozenset[str]
    twin: str
    model: str | None
    command: str
    request: Any
    decision: str | None
    reason: str | None
    status: str
    response: Any
    error: str | None
    approver: str | None


class AuditLog(Closing):
    """Append-only command audit in a SQLite file (WAL), shareable between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each row is its own durable transaction.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._locked() as db:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a command that went out must not lose its row to a power cut.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)

    def append(self, record: CommandRecord, action: str) -> int:
        """Write ``record`` as it stands, as one row for ``action``; returns the row id."""
        row = (
            record.updated,
            action,
            _text(record.id),
            _text(record.user),
            json.dumps(sorted(_text(role) for role in record.roles)),
            _text(record.twin_id),
            _text(record.model_id),
            _text(record.command),
            _json(record.request),
            record.decision,
            _text(record.reason),
            str(record.status),
            _json(record.response),
            _text(record.error),
            _text(record.approver),
        )
        with self._locked() as db:
            cursor = db.execute(
                "INSERT INTO command_audit (time, action, correlation_id, user, roles, twin, "
                "model, command, request, decision, reason, status, response, error, approver) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid or 0)

    def query(
        self,
        *,
        twin: str | None = None,
        user: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Rows matching every filter given, newest first, at most ``limit`` of them.

        ``user`` matches the requester or the approver; the time range is
        ``since <= time < until``; ``before_id`` (the last id of a page) pages on.
        """
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_QUERY_LIMIT
        ):
            raise ValueError(
                f"limit: must be an integer from 1 to {MAX_QUERY_LIMIT}, not {limit!r}"
            )
        for name, bound in (("since", since), ("until", until)):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int | float)
            ):
                raise ValueError(f"{name}: must be epoch seconds, not {bound!r}")
        clauses: list[str] = []
        params: list[Any] = []
        if twin is not None:
            clauses.append("twin = ?")
            params.append(_text(twin))
        if user is not None:
            clauses.append("(user = ? OR approver = ?)")
            params += [_text(user), _text(user)]
        if correlation_id is not None:
            clauses.append("correlation_id = ?")
            params.append(_text(correlation_id))
        if since is not None:
            clauses.append("time >= ?")
            params.append(since)
        if until is not None:
            clauses.append("time < ?")
            params.append(until)
        if before_id is not None:
            if isinstance(before_id, bool) or not isinstance(before_id, int):
                raise ValueError(f"before_id: must be an integer, not {before_id!r}")
            clauses.append("id < ?")
            params.append(before_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM command_audit{where} ORDER BY id DESC LIMIT ?"
        with self._locked() as db:
            rows = db.execute(sql, (*params, limit)).fetchall()
        return [_entry(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        time=row[1],
        action=row[2],
        correlation_id=row[3],
        user=row[4],
        roles=frozenset(json.loads(row[5])),
        twin=row[6],
        model=row[7],
        command=row[8],
        request=_decode(row[9]),
        decision=row[10],
        reason=row[11],
        status=row[12],
        response=_decode(row[13]),
        error=row[14],
        approver=row[15],
    )


def _text(value: Any) -> str | None:
    """``value`` as text SQLite can store: lone surrogates escaped, length capped."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + f"...({len(text)} chars)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json(value: Any) -> str | None:
    """``value`` as JSON text; whatever it is, something readable is kept."""
    if value is None:
        return None
    try:
        text = json.dumps(value, default=repr)
    except (ValueError, RecursionError) as error:
        return json.dumps({"$unencodable": type(value).__name__, "why": str(error)[:200]})
    if len(text) > MAX_JSON_CHARS:
        return json.dumps({"$truncated": True, "chars": len(text), "head": text[:1024]})
    return text


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)
