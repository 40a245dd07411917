"""The write-ahead log of an asset host: telemetry is durable here before it is acknowledged.

SQLite does the hard part (atomic commits, torn-write recovery, fsync): each ingest batch
is one row, committed before the host applies it and replies; a checkpoint stores the
hosts' state and drops the rows it covers, in one transaction, so a restart loads the
checkpoint and replays only what came after.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: One logged message: twin id, kind (TELEMETRY or PROPERTIES), {field path: value},
#: source time, received time.
Entry = tuple[str, str, dict[str, Any], float, float]
TELEMETRY = "t"
PROPERTIES = "p"

_SCHEMA = """
-- AUTOINCREMENT: a number is never reused once a checkpoint has emptied the table.
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, entries TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets (twin_id TEXT PRIMARY KEY, model_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, state BLOB NOT NULL
);
"""


class WriteAheadLog:
    """Append-only batches, one checkpoint and the host's asset list, in one SQLite file.

    ``synchronous=FULL`` fsyncs every commit, so an acknowledged batch survives a power
    cut as well as a killed process. Not thread-safe: one asset host owns it.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous: must be FULL or NORMAL, got {synchronous!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT max((SELECT coalesce(max(seq), 0) FROM batches),"
            " (SELECT coalesce(max(seq), 0) FROM checkpoint))"
        ).fetchone()
        self.last_seq: int = row[0]

    def append(self, entries: list[Entry]) -> int:
        """Make ``entries`` durable; returns their batch's sequence number."""
        text = json.dumps(entries, separators=(",", ":"), allow_nan=False)
        cursor = self._db.execute("INSERT INTO batches (entries) VALUES (?)", (text,))
        self.last_seq = int(cursor.lastrowid or 0)
        return self.last_seq

    def checkpoint(self, state: Any, upto_seq: int) -> None:
        """Store ``state`` (which includes every batch up to ``upto_seq``) and forget those."""
        # pickle: the state holds numpy arrays and is only ever read back by this class.
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        with self._transaction():
            self._db.execute(
                "INSERT INTO checkpoint (id, seq, state) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, state = excluded.state",
                (upto_seq, blob),
            )
            self._db.execute("DELETE FROM batches WHERE seq <= ?", (upto_seq,))

    def recover(self) -> tuple[Any, Iterator[list[Entry]]]:
        """The last checkpoint's state (None if none) and the batches logged after it."""
        row = self._db.execute("SELECT seq, state FROM checkpoint WHERE id = 1").fetchone()
        seq, state = (row[0], pickle.loads(row[1])) if row else (0, None)
        return state, self._batches_after(seq)

    def add_assets(self, assets: dict[str, str]) -> None:
        """Record that this host owns ``assets`` (twin id -> model id)."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO assets (twin_id, model_id) VALUES (?, ?) "
                "ON CONFLICT (twin_id) DO UPDATE SET model_id = excluded.model_id",
                list(assets.items()),
            )

    def remove_assets(self, twin_ids: list[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM assets WHERE twin_id = ?", [(t,) for t in twin_ids])

    def assets(self) -> dict[str, str]:
        """The twins this host owns, with their model ids."""
        return dict(self._db.execute("SELECT twin_id, model_id FROM assets"))

    def pending(self) -> int:
        """Batches logged since the last checkpoint."""
        return self._db.execute("SELECT count(*) FROM batches").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def _batches_after(self, seq: int) -> Iterator[list[Entry]]:
        rows = self._db.execute("SELECT entries FROM batches WHERE seq > ? ORDER BY seq", (seq,))
        for (text,) in rows:
            yield [tuple(entry) for entry in json.loads(text)]  # type: ignore[misc]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
