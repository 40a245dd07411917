"""Which host process each asset lives on, kept on disk.

A restarted server must place every twin on the host whose write-ahead log holds its
state, so the assignment is persisted (SQLite) rather than recomputed from a hash that
would shift as twins come and go.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


class AssetDirectory:
    """Twin id -> host number; new twins fill the lowest-numbered host with room."""

    def __init__(self, path: Path, assets_per_host: int) -> None:
        if assets_per_host < 1:
            raise ValueError(f"assets_per_host: must be at least 1, got {assets_per_host}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.assets_per_host = assets_per_host
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS placement (twin_id TEXT PRIMARY KEY, host INTEGER NOT NULL)"
        )
        self._hosts: dict[str, int] = dict(self._db.execute("SELECT twin_id, host FROM placement"))

    def host_of(self, twin_id: str) -> int | None:
        return self._hosts.get(twin_id)

    def hosts(self) -> dict[int, int]:
        """Host number -> how many twins it holds."""
        with self._lock:
            return dict(Counter(self._hosts.values()))

    def twins_on(self, host: int) -> list[str]:
        with self._lock:
            return sorted(t for t, h in self._hosts.items() if h == host)

    def place(self, twin_ids: Iterable[str]) -> dict[int, list[str]]:
        """Assign hosts to the twins not placed yet; returns the new placements by host."""
        with self._lock:
            load = Counter(self._hosts.values())
            placed: dict[int, list[str]] = {}
            host = 0
            for twin_id in twin_ids:
                if twin_id in self._hosts:
                    continue
                while load[host] >= self.assets_per_host:
                    host += 1
                load[host] += 1
                self._hosts[twin_id] = host
                placed.setdefault(host, []).append(twin_id)
            rows = [(t, h) for h, twins in placed.items() for t in twins]
            self._write("INSERT INTO placement (twin_id, host) VALUES (?, ?)", rows)
            return placed

    def remove(self, twin_ids: Iterable[str]) -> dict[int, list[str]]:
        """Forget twins; returns which hosts held them."""
        with self._lock:
            removed: dict[int, list[str]] = {}
            for twin_id in twin_ids:
                host = self._hosts.pop(twin_id, None)
                if host is not None:
                    removed.setdefault(host, []).append(twin_id)
            rows = [(t,) for twins in removed.values() for t in twins]
            self._write("DELETE FROM placement WHERE twin_id = ?", rows)
            return removed

    def _write(self, statement: str, rows: list[tuple]) -> None:
        self._db.execute("BEGIN")  # one commit (one fsync) for all rows
        self._db.executemany(statement, rows)
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
