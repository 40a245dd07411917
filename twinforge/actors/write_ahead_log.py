"""The write-ahead log of an asset host: telemetry is durable here before it is acknowledged.

SQLite does the hard part (atomic commits, torn-write recovery, fsync): each ingest batch
is one row, committed before the host applies it and replies. A checkpoint stores the
host's state in a file beside the log (written whole, then renamed over the last one) and
then drops the rows it covers, so a restart loads the checkpoint and replays only what
came after. The state file is apart from the log so that it can be written while the log
takes new batches: one SQLite file has one writer at a time.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twinforge.ingest.messages import Entry
from twinforge.twin_models import PROPERTY, TELEMETRY

#: How logs written before the kinds had one spelling named them.
_OLD_KINDS = {"t": TELEMETRY, "p": PROPERTY}

_SCHEMA = """
-- AUTOINCREMENT: a number is never reused once a checkpoint has emptied the table.
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, entries TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets (twin_id TEXT PRIMARY KEY, model_id TEXT NOT NULL);
-- Where checkpoints were kept before the state file; still read when there is no file.
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, state BLOB NOT NULL
);
"""


class WriteAheadLog:
    """Append-only batches and the host's asset list in one SQLite file, and the last
    checkpoint's state in a file beside it.

    ``synchronous=FULL`` fsyncs every commit, so an acknowledged batch survives a power
    cut as well as a killed process. Not thread-safe, except that :meth:`save_state` may
    run on another thread while the owner goes on appending.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous: must be FULL or NORMAL, got {synchronous!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.state_path = path.with_suffix(".state")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        # The newest number AUTOINCREMENT gave out, even if a checkpoint trimmed it since.
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
        self.last_seq: int = row[0] if row else 0

    def append(self, entries: list[Entry]) -> int:
        """Make ``entries`` durable; returns their batch's sequence number."""
        # pickle: 16x faster than JSON for a batch of readings (the floats), which was a
        # fifth of a host's time at 10,000 msgs/s; only this class reads it back.
        blob = pickle.dumps(entries, pickle.HIGHEST_PROTOCOL)
        cursor = self._db.execute("INSERT INTO batches (entries) VALUES (?)", (blob,))
        self.last_seq = int(cursor.lastrowid or 0)
        return self.last_seq

    def save_state(self, state: dict[str, Any], upto_seq: int) -> None:
        """Write ``state`` (which includes every batch up to ``upto_seq``) durably, in
        place of the last; the batches stay until :meth:`trim`.

        Each value is pickled on its own, so a thread that runs this lets the owner's
        thread in between values (one pickle of a whole host's state held the GIL for
        over 100 ms). pickle: the state holds numpy arrays and only this class reads it.
        """
        parts = {key: pickle.dumps(value, pickle.HIGHEST_PROTOCOL) for key, value in state.items()}
        partial = self.state_path.with_suffix(".state-partial")
        with partial.open("wb") as file:
            pickle.dump((upto_seq, parts), file, pickle.HIGHEST_PROTOCOL)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.state_path)
        directory = os.open(self.state_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def trim(self, upto_seq: int, limit: int | None = None) -> bool:
        """Forget the batches up to ``upto_seq`` (a saved state includes them), or only
        the oldest ``limit`` of them; True once none up to there is left."""
        end = upto_seq
        if limit is not None:
            first = self._db.execute("SELECT min(seq) FROM batches").fetchone()[0]
            end = upto_seq if first is None else min(upto_seq, first + limit - 1)
        self._db.execute("DELETE FROM batches WHERE seq <= ?", (end,))
        return end == upto_seq

    def recover(self) -> tuple[dict[str, Any] | None, Iterator[tuple[int, list[Entry]]]]:
        """The last checkpoint's state (None if none) and the batches logged after it,
        with their sequence numbers."""
        seq, state = self._saved_state()
        return state, self._batches_after(seq)

    def checkpoint_seq(self) -> int | None:
        """The last batch the saved state includes (None: no state saved)."""
        seq, state = self._saved_state()
        return None if state is None else seq

    def _saved_state(self) -> tuple[int, dict[str, Any] | None]:
        try:
            with self.state_path.open("rb") as file:
                seq, parts = pickle.load(file)
            return seq, {key: pickle.loads(part) for key, part in parts.items()}
        except FileNotFoundError:
            row = self._db.execute("SELECT seq, state FROM checkpoint WHERE id = 1").fetchone()
            return (row[0], pickle.loads(row[1])) if row else (0, None)

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

    def _batches_after(self, seq: int) -> Iterator[tuple[int, list[Entry]]]:
        rows = self._db.execute(
            "SELECT seq, entries FROM batches WHERE seq > ? ORDER BY seq", (seq,)
        )
        for number, logged in rows:
            # Logged as JSON before 2026-11, pickled since.
            entries = json.loads(logged) if isinstance(logged, str) else pickle.loads(logged)
            yield number, [_current(entry) for entry in entries]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _current(entry: Any) -> Entry:
    """A replayed entry as it is written now (a tuple; its kind spelled out)."""
    twin_id, kind, values, source_time, received_time = entry
    return (twin_id, _OLD_KINDS.get(kind, kind), values, source_time, received_time)
