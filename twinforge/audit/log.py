"""The audit trail in a SQLite file: appends serialised across processes so the chain
never forks, the file owner-only, and each record forwarded once it is committed."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from twinforge.audit.chain import (
    GENESIS,
    Actor,
    ChainBreak,
    Record,
    bounded_details,
    find_break,
    record_hash,
)
from twinforge.audit.forward import FileForwarder, Forwarder, SyslogForwarder
from twinforge.config import Settings
from twinforge.lifecycle import Closing

__all__ = ["FILE_NAME", "MAX_LIMIT", "MAX_TEXT_CHARS", "AuditTrail"]

logger = logging.getLogger(__name__)

FILE_NAME = "audit.sqlite3"
#: Longest actor, action, target or outcome kept.
MAX_TEXT_CHARS = 4096
MAX_LIMIT = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    roles TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, seq);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, seq);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, seq);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_COLUMNS = "seq, time, actor, roles, action, target, outcome, details, prev_hash, hash"


class AuditTrail(Closing):
    """The one hash-chained audit log of a data dir; shareable between threads, and
    between processes (the server and a CLI beside it) through SQLite's write lock."""

    def __init__(
        self,
        path: str | Path,
        forwarders: Sequence[Forwarder] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        _owner_only(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._forwarders = tuple(forwarders)
        self._clock = clock
        with self._lock:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a command that went out must not lose its record to a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        # WAL and shared-memory files appear on first use; they hold records too.
        for suffix in ("-wal", "-shm"):
            sidecar = self.path.with_name(self.path.name + suffix)
            if sidecar.exists():
                sidecar.chmod(0o600)

    @classmethod
    def open(cls, data_dir: Path, settings: Settings) -> AuditTrail:
        """The trail of ``data_dir``, forwarding where ``settings`` say."""
        forwarders: list[Forwarder] = []
        if settings.audit_syslog:
            forwarders.append(SyslogForwarder(settings.audit_syslog))
        if settings.audit_forward_file:
            forwarders.append(FileForwarder(settings.audit_forward_file))
        return cls(data_dir / FILE_NAME, forwarders)

    def record(
        self,
        actor: Actor,
        action: str,
        target: str,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        *,
        at: float | None = None,
    ) -> Record:
        """Append one record (``at``: when it happened, else now) and forward it."""
        actor_id, roles = _identity(actor)
        fields: dict[str, Any] = {
            "time": float(self._clock() if at is None else at),
            "actor": actor_id,
            "roles": roles,
            "action": _text(action),
            "target": _text(target),
            "outcome": _text(outcome),
            "details": bounded_details(details),
        }
        with self._lock:
            # IMMEDIATE takes the write lock before reading the last hash, so no other
            # process can append between our read and our insert.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
                digest = record_hash(seq=seq, prev_hash=prev_hash, **fields)
                self._db.execute(
                    f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        fields["time"],
                        actor_id,
                        json.dumps(list(roles)),
                        fields["action"],
                        fields["target"],
                        fields["outcome"],
                        fields["details"],
                        prev_hash,
                        digest,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        record = Record(seq=seq, prev_hash=prev_hash, hash=digest, **fields)
        self._forward(record)
        return record

    def query(
        self,
        *,
        where: Sequence[tuple[str, Sequence[Any]]] = (),
        since: float | None = None,
        until: float | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[Record]:
        """Records newest first, at most ``limit``.

        ``where`` holds (SQL condition, its ``?`` values) pairs; the conditions are
        constants in the calling code, only the values come from input.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
        clauses = [condition for condition, _ in where]
        params = [value for _, values in where for value in values]
        for name, bound, condition in (
            ("since", since, "time >= ?"),
            ("until", until, "time < ?"),
        ):
            if bound is None:
                continue
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ValueError(f"{name}: must be epoch seconds, not {bound!r}")
            clauses.append(condition)
            params.append(bound)
        if before_seq is not None:
            if isinstance(before_seq, bool) or not isinstance(before_seq, int):
                raise ValueError(f"before_id: must be an integer, not {before_seq!r}")
            clauses.append("seq < ?")
            params.append(before_seq)
        sql = f"SELECT {_COLUMNS} FROM audit_log"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._db.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*params, limit))
            return [_record(row) for row in rows.fetchall()]

    def records(self) -> Iterator[Record]:
        """Every record, oldest first, read in one snapshot."""
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            reader.execute("BEGIN")
            for row in reader.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq"):
                yield _record(row)
        finally:
            reader.close()

    def verify(self) -> tuple[int, ChainBreak | None]:
        """How many records there are, and the first one out of the chain (None: intact)."""
        count = 0

        def counted() -> Iterator[Record]:
            nonlocal count
            for record in self.records():
                count += 1
                yield record

        found = find_break(counted())
        return count, found

    def close(self) -> None:
        with self._lock:
            self._db.close()
        for forwarder in self._forwarders:
            forwarder.close()

    def _forward(self, record: Record) -> None:
        for forwarder in self._forwarders:
            try:
                forwarder.send(record)
            except Exception:
                # The record is committed; a copy that failed must not undo the act.
                logger.exception("could not forward audit record %d", record.seq)


def _identity(actor: Actor) -> tuple[str, tuple[str, ...]]:
    """The one place an actor becomes the record's actor id and roles."""
    actor_id = actor.id if isinstance(actor.id, str) and actor.id else repr(actor.id)
    return _text(actor_id), tuple(sorted(_text(r) for r in actor.roles if isinstance(r, str)))


def _owner_only(path: Path) -> None:
    """Create ``path`` 0600 (or narrow an older file to it) before SQLite opens it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        seq=row[0],
        time=row[1],
        actor=row[2],
        roles=_roles(row[3]),
        action=row[4],
        target=row[5],
        outcome=row[6],
        details=row[7],
        prev_hash=row[8],
        hash=row[9],
    )


def _roles(text: str) -> tuple[str, ...]:
    try:
        roles = json.loads(text)
    except (TypeError, ValueError):
        roles = None
    # Anything but a list of names was written behind our back: keep it, so the hash fails.
    return tuple(roles) if isinstance(roles, list) else (repr(text),)


def _text(value: Any) -> str:
    """``value`` as text SQLite can store: lone surrogates escaped, length capped."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + f"...({len(text)} chars)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
