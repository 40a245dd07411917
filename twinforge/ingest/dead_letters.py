"""The dead-letter store: every message ingest refused, with its reason, kept in SQLite.

One file under the data dir, in WAL mode, written through one connection guarded by a lock,
so transports on several threads can share a store. Payloads are capped
(:data:`MAX_PAYLOAD_BYTES`, plus the full length and a sha256) and so are the text fields, so
a hostile sender cannot fill the disk through its rejections.

Any Python string is stored exactly, lone surrogates included (a topic decoded with
``surrogateescape``): a string UTF-8 cannot encode is kept as a blob of its
``surrogatepass`` encoding, and filters encode their argument the same way.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinforge.ingest.messages import Rejection
from twinforge.lifecycle import Closing

#: Payload bytes kept per dead letter; the rest is counted and hashed, not stored.
MAX_PAYLOAD_BYTES = 64 * 1024
#: Characters kept of each text field (reason, message, origin, twin id, field).
MAX_TEXT_CHARS = 16 * 1024
#: Characters of ``extra`` JSON kept; a larger one is replaced by a truncation note.
MAX_EXTRA_CHARS = 64 * 1024
#: Most dead letters one :meth:`DeadLetterStore.list` call returns.
MAX_LIST_LIMIT = 10_000
#: The file name under the data dir.
FILE_NAME = "dead_letters.sqlite"

_TRUNCATED = "…[truncated, {n} chars in all]"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    origin TEXT NOT NULL,
    received_time REAL NOT NULL,
    twin_id TEXT,
    field TEXT,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL,
    payload_sha256 TEXT NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, id);
CREATE INDEX IF NOT EXISTS dead_letters_twin ON dead_letters (twin_id, id);
CREATE INDEX IF NOT EXISTS dead_letters_time ON dead_letters (received_time);
"""

_COLUMNS = (
    "id, reason, message, origin, received_time, twin_id, field, payload, payload_size, "
    "payload_sha256, extra"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One stored rejection. ``payload`` holds at most :data:`MAX_PAYLOAD_BYTES`;
    ``payload_size`` and ``payload_sha256`` describe the whole payload as received."""

    id: int
    reason: str
    message: str
    origin: str
    received_time: float
    payload: bytes
    payload_size: int
    payload_sha256: str
    twin_id: str | None = None
    field: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def payload_truncated(self) -> bool:
        """Whether only the head of the payload was kept."""
        return self.payload_size > len(self.payload)


class DeadLetterStore(Closing):
    """Dead letters in one SQLite file; thread-safe; :meth:`close` it or use ``with``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection shared by threads; the lock serializes every use of it.
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL syncs the WAL on each commit: a rejection is durable once add() returns.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> DeadLetterStore:
        """The store at ``data_dir/dead_letters.sqlite`` (``Settings.data_dir``)."""
        return cls(Path(data_dir) / FILE_NAME)

    def add(self, rejection: Rejection) -> int:
        """Store one rejection durably; returns its id. ``ValueError`` for a malformed one."""
        return self.add_many([rejection])[0]

    def add_many(self, rejections: Iterable[Rejection]) -> builtins.list[int]:
        """Store rejections in one transaction, durable on return; returns their ids.

        All are checked first, so a malformed one (``ValueError`` naming its index and
        field) stores none of them.
        """
        rows = [_row(rejection, index) for index, rejection in enumerate(rejections)]
        if not rows:
            return []
        ids: builtins.list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cursor = self._db.execute(
                        "INSERT INTO dead_letters (reason, message, origin, received_time, "
                        "twin_id, field, payload, payload_size, payload_sha256, extra) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def list(
        self,
        limit: int = 100,
        *,
        reason: str | None = None,
        twin_id: str | None = None,
        since: float | None = None,
        before_id: int | None = None,
    ) -> builtins.list[DeadLetter]:
        """Dead letters newest first (by id), filtered; page on with ``before_id`` set to
        the last id of the previous page. ``since`` keeps those received at or after it
        (epoch seconds)."""
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
        where: list[str] = []
        params: list[Any] = []
        if reason is not None:
            where.append("reason = ?")
            params.append(_text_param("reason", reason))
        if twin_id is not None:
            where.append("twin_id = ?")
            params.append(_text_param("twin_id", twin_id))
        if since is not None:
            where.append("received_time >= ?")
            params.append(_finite("since", since))
        if before_id is not None:
            if isinstance(before_id, bool) or not isinstance(before_id, int):
                raise ValueError(f"before_id must be an integer, got {before_id!r}")
            where.append("id < ?")
            params.append(before_id)
        sql = f"SELECT {_COLUMNS} FROM dead_letters"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_dead_letter(row) for row in rows]

    def count(self, reason: str | None = None) -> int:
        """How many dead letters are stored (with that reason, when given)."""
        with self._lock:
            if reason is None:
                row = self._db.execute("SELECT count(*) FROM dead_letters").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM dead_letters WHERE reason = ?",
                    (_text_param("reason", reason),),
                ).fetchone()
        return int(row[0])

    def purge(self, older_than: float) -> int:
        """Delete dead letters received before ``older_than`` (epoch seconds); returns how
        many were deleted."""
        cutoff = _finite("older_than", older_than)
        with self._lock:
            cursor = self._db.execute("DELETE FROM dead_letters WHERE received_time < ?", (cutoff,))
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            self._db.close()


def _row(rejection: Rejection, index: int) -> tuple[Any, ...]:
    """The column values of one rejection, checked; errors name the rejection's index."""
    where = f"rejections[{index}]"
    if not isinstance(rejection, Rejection):
        raise ValueError(f"{where} must be a Rejection, got {type(rejection).__name__}")
    if not isinstance(rejection.reason, str) or not rejection.reason:
        raise ValueError(f"{where}.reason must be a non-empty string, got {rejection.reason!r}")
    payload = rejection.payload
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ValueError(f"{where}.payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if not isinstance(rejection.extra, dict):
        raise ValueError(f"{where}.extra must be a dict, got {type(rejection.extra).__name__}")
    return (
        _text(f"{where}.reason", rejection.reason),
        _text(f"{where}.message", rejection.message),
        _text(f"{where}.origin", rejection.origin),
        _finite(f"{where}.received_time", rejection.received_time),
        _optional_text(f"{where}.twin_id", rejection.twin_id),
        _optional_text(f"{where}.field", rejection.field),
        payload[:MAX_PAYLOAD_BYTES],
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        _extra_json(rejection.extra),
    )


def _text(name: str, value: object) -> str | bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        value = value[:MAX_TEXT_CHARS] + _TRUNCATED.format(n=len(value))
    return _encode(value)


def _optional_text(name: str, value: object) -> str | bytes | None:
    return None if value is None else _text(name, value)


def _text_param(name: str, value: object) -> str | bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return _encode(value)


def _encode(value: str) -> str | bytes:
    """The string itself, or for one UTF-8 cannot encode (lone surrogates) a blob of it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def _decode(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return value


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number (epoch seconds), got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (epoch seconds), got {value!r}")
    return float(value)


def _extra_json(extra: dict[str, Any]) -> str:
    # Values JSON cannot hold (bytes, objects) are kept as their repr rather than refused:
    # a dead letter must never be lost because of its annotations.
    try:
        text = json.dumps(extra, default=repr, allow_nan=True)
    except (TypeError, ValueError):  # keys JSON cannot hold, or a reference cycle
        text = json.dumps({"unserializable": repr(extra)[:MAX_EXTRA_CHARS]})
    if len(text) > MAX_EXTRA_CHARS:
        text = json.dumps({"truncated": True, "json_chars": len(text)})
    return text


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        reason=_decode(row[1]) or "",
        message=_decode(row[2]) or "",
        origin=_decode(row[3]) or "",
        received_time=row[4],
        twin_id=_decode(row[5]),
        field=_decode(row[6]),
        payload=bytes(row[7]),
        payload_size=row[8],
        payload_sha256=row[9],
        extra=json.loads(row[10]),
    )
