"""The identity stores' SQLite files: owner-only, WAL, shared between processes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["open_private_db"]


def open_private_db(path: Path) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode, the file made mode 0600 when new:
    only hashes and ids live there, but nobody else has any business reading them."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db
