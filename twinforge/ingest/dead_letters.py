"""The dead-letter store: every message ingest refused, with its reason, kept in SQLite.

One file under the data dir, in WAL mode, written through one connection guarded by a lock,
so transports on several threads can share a store. Payloads are capped
(:data:`MAX_PAYLOAD_BYTES`, plus the full length and a sha256) and so are the text fields,
and the store keeps to a :class:`DeadLetterBudget` (bytes in all, bytes per source, age):
past it the oldest dead letters are deleted, and counted by cause, so a hostile sender
cannot fill the disk through its rejections. Only dead letters are ever deleted: what
ingest accepted lives in the asset hosts' logs, not here.

A dead letter's *source*, for its quota, is the twin it is for when that twin is in the
graph, else its transport (``mqtt``, ``opcua``) as a whole. Not the topic or twin id as
sent: a sender picks those freely, and a quota per value would be multiplied away by one
client publishing to a million topics; nor the MQTT client id, which a subscriber is never
told. Twins of the graph are made by admins, so their quotas are bounded in number;
everything else (unknown twins, unmapped topics) shares its transport's one quota.

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
import time
from collections.abc import Callable, Iterable
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
#: Why dead letters were deleted: too old, over their source's quota, over the total.
DROPPED_AGE = "age"
DROPPED_SOURCE = "sourceQuota"
DROPPED_TOTAL = "totalBudget"
#: Bytes counted for a row beyond its fields (ids, sizes, times, index entries).
_ROW_OVERHEAD = 128

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
CREATE TABLE IF NOT EXISTS dead_letters_dropped (
    cause TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""
#: Columns added since the first schema: (name, declaration); filled in for old rows.
_ADDED_COLUMNS = (
    ("source", "TEXT NOT NULL DEFAULT ''"),
    ("stored_bytes", "INTEGER NOT NULL DEFAULT 0"),
)
_BACKFILL = (
    "UPDATE dead_letters SET source = 'legacy', stored_bytes = length(payload) "
    "+ length(reason) + length(message) + length(origin) + coalesce(length(twin_id), 0) "
    f"+ coalesce(length(field), 0) + length(extra) + {_ROW_OVERHEAD} WHERE stored_bytes = 0"
)

_COLUMNS = (
    "id, reason, message, origin, received_time, twin_id, field, payload, payload_size, "
    "payload_sha256, extra"
)


@dataclass(frozen=True, slots=True)
class DeadLetterBudget:
    """How much the store keeps: ``max_bytes`` in all, ``source_max_bytes`` per source,
    nothing older than ``max_age_s`` (Settings ``dead_letter_*``)."""

    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0
    source_max_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        # A quota under one capped dead letter would delete each one as it is stored.
        least = 1024 * 1024
        for name in ("max_bytes", "source_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"dead_letter_{name} must be an integer >= {least}, got {value!r}")
        if self.source_max_bytes > self.max_bytes:
            raise ValueError(
                f"dead_letter_source_max_bytes ({self.source_max_bytes}) must be at most "
                f"dead_letter_max_bytes ({self.max_bytes})"
            )
        age = self.max_age_s
        if isinstance(age, bool) or not isinstance(age, int | float) or not 0 < age < math.inf:
            raise ValueError(f"dead_letter_max_age_s must be a positive number, got {age!r}")


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
    """Dead letters in one SQLite file, kept to ``budget``; thread-safe; :meth:`close` it or
    use ``with``.

    ``is_known_twin`` says whether a twin id is in the graph (its dead letters then have a
    quota of their own, see the module docstring); without it every dead letter counts
    against its transport's quota. ``on_drop(cause, n)`` hears of each deletion (metrics).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        budget: DeadLetterBudget | None = None,
        is_known_twin: Callable[[str], bool] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.budget = budget or DeadLetterBudget()
        self._is_known_twin = is_known_twin
        self._on_drop = on_drop
        self._lock = threading.Lock()
        # One connection shared by threads; the lock serializes every use of it.
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL syncs the WAL on each commit: a rejection is durable once add() returns.
            self._db.execute("PRAGMA synchronous=FULL")
            # Checkpoints give the WAL's space back, so the files stay near the budget.
            self._db.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS dead_letters_source ON dead_letters (source, id)"
            )
            #: Bytes stored per source, kept in step with the table by every change.
            self._bytes: dict[str, int] = {}
            self._load_totals()
            rows = self._db.execute("SELECT cause, count FROM dead_letters_dropped").fetchall()
            self._dropped = {cause: int(count) for cause, count in rows}
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._prune_age(time.time())
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._report(dropped)

    @classmethod
    def in_data_dir(cls, data_dir: Path | str, **options: Any) -> DeadLetterStore:
        """The store at ``data_dir/dead_letters.sqlite`` (``Settings.data_dir``); the
        options are the constructor's."""
        return cls(Path(data_dir) / FILE_NAME, **options)

    @property
    def stored_bytes(self) -> int:
        """Bytes of dead letters stored, as the budget counts them."""
        with self._lock:
            return sum(self._bytes.values())

    def dropped(self) -> dict[str, int]:
        """Dead letters deleted to keep the budget, by cause (``DROPPED_*``), ever (also
        once closed)."""
        with self._lock:
            return dict(self._dropped)

    def add(self, rejection: Rejection) -> int:
        """Store one rejection durably; returns its id. ``ValueError`` for a malformed one."""
        return self.add_many([rejection])[0]

    def add_many(self, rejections: Iterable[Rejection]) -> builtins.list[int]:
        """Store rejections in one transaction, durable on return; returns their ids.

        All are checked first, so a malformed one (``ValueError`` naming its index and
        field) stores none of them.
        """
        checked = [_row(rejection, index) for index, rejection in enumerate(rejections)]
        if not checked:
            return []
        # Outside the lock: it may ask the graph's directory.
        sources = [self._source(row) for row in checked]
        rows = [
            (*row, _encode(source), _stored_bytes(row))
            for row, source in zip(checked, sources, strict=True)
        ]
        ids: builtins.list[int] = []
        with self._lock:
            added: dict[str, int] = {}
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row, source in zip(rows, sources, strict=True):
                    cursor = self._db.execute(
                        "INSERT INTO dead_letters (reason, message, origin, received_time, "
                        "twin_id, field, payload, payload_size, payload_sha256, extra, "
                        "source, stored_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cursor.lastrowid or 0))
                    added[source] = added.get(source, 0) + row[-1]
                dropped = self._prune(added)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_totals()  # the rolled-back deletions are back
                raise
        self._report(dropped)
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
            self._load_totals()
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            self._db.close()

    # -- the budget (all below but _report run under the lock, in a transaction) -------

    def _source(self, row: tuple[Any, ...]) -> str:
        twin_id = _decode(row[4])
        if twin_id is not None and self._is_known_twin is not None and self._is_known_twin(twin_id):
            return f"twin:{twin_id}"
        origin = _decode(row[2]) or ""
        transport = origin.partition(":")[0][:32] if ":" in origin else ""
        return f"transport:{transport or 'other'}"

    def _migrate(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(dead_letters)")}
        missing = [(name, kind) for name, kind in _ADDED_COLUMNS if name not in present]
        for name, kind in missing:
            self._db.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {kind}")
        if missing:
            self._db.execute(_BACKFILL)

    def _load_totals(self) -> None:
        rows = self._db.execute(
            "SELECT source, sum(stored_bytes) FROM dead_letters GROUP BY source"
        ).fetchall()
        self._bytes = {_decode(source) or "": int(total) for source, total in rows}

    def _prune(self, added: dict[str, int]) -> dict[str, int]:
        """Delete what the budget no longer holds, oldest first: the too old, then each
        source over its quota, then anything over the total. Returns counts by cause."""
        for source, size in added.items():
            self._bytes[source] = self._bytes.get(source, 0) + size
        aged = self._prune_age(time.time())
        over: dict[str, int] = {}
        quota = self.budget.source_max_bytes
        for source in added:
            excess = self._bytes.get(source, 0) - quota
            if excess > 0:
                n = self._delete_oldest(excess, "WHERE source = ?", (_encode(source),))
                over[DROPPED_SOURCE] = over.get(DROPPED_SOURCE, 0) + n
        excess = sum(self._bytes.values()) - self.budget.max_bytes
        if excess > 0:
            over[DROPPED_TOTAL] = self._delete_oldest(excess, "", ())
        return aged | self._record({cause: n for cause, n in over.items() if n})

    def _prune_age(self, now: float) -> dict[str, int]:
        cutoff = now - self.budget.max_age_s
        rows = self._db.execute(
            "DELETE FROM dead_letters WHERE received_time < ? RETURNING source, stored_bytes",
            (cutoff,),
        ).fetchall()
        self._forget(rows)
        return self._record({DROPPED_AGE: len(rows)} if rows else {})

    def _delete_oldest(self, excess: int, where: str, params: tuple[Any, ...]) -> int:
        """Delete the oldest rows (by id) matching ``where`` until ``excess`` bytes are gone."""
        deleted = 0
        while excess > 0:
            rows = self._db.execute(
                f"SELECT id, stored_bytes FROM dead_letters {where} ORDER BY id LIMIT 64", params
            ).fetchall()
            if not rows:
                break
            upto = 0
            for row_id, size in rows:
                upto = row_id
                excess -= size
                if excess <= 0:
                    break
            gone = self._db.execute(
                f"DELETE FROM dead_letters {where} {'AND' if where else 'WHERE'} id <= ? "
                "RETURNING source, stored_bytes",
                (*params, upto),
            ).fetchall()
            self._forget(gone)
            deleted += len(gone)
        return deleted

    def _record(self, dropped: dict[str, int]) -> dict[str, int]:
        """Add ``dropped`` to the kept counts (in the deletions' transaction); returns it."""
        for cause, n in dropped.items():
            self._db.execute(
                "INSERT INTO dead_letters_dropped (cause, count) VALUES (?, ?) "
                "ON CONFLICT (cause) DO UPDATE SET count = count + excluded.count",
                (cause, n),
            )
        return dropped

    def _forget(self, rows: Iterable[tuple[Any, int]]) -> None:
        for source, size in rows:
            key = _decode(source) or ""
            left = self._bytes.get(key, 0) - size
            if left > 0:
                self._bytes[key] = left
            else:
                self._bytes.pop(key, None)

    def _report(self, dropped: dict[str, int]) -> None:
        """After the deletions' commit: count them here and tell ``on_drop``."""
        with self._lock:
            for cause, n in dropped.items():
                self._dropped[cause] = self._dropped.get(cause, 0) + n
        if self._on_drop is not None:
            for cause, n in dropped.items():
                self._on_drop(cause, n)


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


def _stored_bytes(row: tuple[Any, ...]) -> int:
    """What one row costs the budget: its variable fields' bytes, plus a fixed overhead."""
    sizes = (
        len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else len(value)
        for value in row
        if isinstance(value, str | bytes)
    )
    return sum(sizes) + _ROW_OVERHEAD


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
