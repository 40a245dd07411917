"""Which JWTs were issued and which are revoked, by ``jti``, beside the API keys.

A signed token is valid until it expires unless this list says otherwise; each check is
one primary-key read, so a revocation by another process (``twinforge tokens revoke``)
holds at once. A row is kept only while its token could still verify: rows past their
token's expiry are pruned whenever a token is issued or revoked.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from twinforge.auth.api_keys import FILE_NAME
from twinforge.auth.sqlite import open_private_db
from twinforge.lifecycle import Closing

__all__ = ["TokenRevocations"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jwt_tokens (
    jti     TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    expires REAL NOT NULL,
    revoked REAL
)
"""
#: Longer text is no jti of ours (32 hex digits); refused before touching the database.
_MAX_JTI_CHARS = 64


@dataclass(frozen=True, slots=True)
class IssuedTokenRow:
    jti: str
    subject: str
    expires: float
    revoked: float | None


class TokenRevocations(Closing):
    """Issued and revoked tokens in the SQLite file ``path``; safe to share between
    threads. ``keep_s`` is how long past its expiry a row stays (the verifier's leeway)."""

    def __init__(self, path: str | os.PathLike[str], *, keep_s: float = 60.0) -> None:
        self.path = Path(path)
        self._keep_s = keep_s
        self._lock = threading.Lock()
        self._db = open_private_db(self.path)
        with self._lock:
            self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> TokenRevocations:
        """The list the server and ``twinforge tokens`` share in ``data_dir``."""
        return cls(Path(data_dir) / FILE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, jti: str, subject: str, expires: float) -> None:
        """Remember a token just issued, so that it can be revoked by its ``jti``."""
        with self._lock:
            self._prune()
            self._db.execute(
                "INSERT INTO jwt_tokens (jti, subject, expires) VALUES (?, ?, ?)",
                (jti, subject, expires),
            )

    def revoke(self, jti: str) -> bool:
        """Revoke the token ``jti``; False when no live token of ours has it."""
        if not isinstance(jti, str) or len(jti) > _MAX_JTI_CHARS:
            return False
        with self._lock:
            self._prune()
            cursor = self._db.execute(
                "UPDATE jwt_tokens SET revoked = ? WHERE jti = ? AND revoked IS NULL",
                (time.time(), jti),
            )
        return cursor.rowcount == 1

    def is_revoked(self, jti: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT revoked FROM jwt_tokens WHERE jti = ?", (jti,)
            ).fetchone()
        return row is not None and row[0] is not None

    def get(self, jti: str) -> IssuedTokenRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT jti, subject, expires, revoked FROM jwt_tokens WHERE jti = ?", (jti,)
            ).fetchone()
        return None if row is None else IssuedTokenRow(*row)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM jwt_tokens").fetchone()[0])

    def _prune(self) -> None:
        self._db.execute("DELETE FROM jwt_tokens WHERE expires < ?", (time.time() - self._keep_s,))
