"""API keys for machines and scripts: issued once, stored only as argon2 hashes in SQLite.

A key reads ``tfk_<key id>_<secret>``. The key id finds the row; argon2 checks the whole
key. Argon2 is slow on purpose (tens of milliseconds, 64 MiB), and every request presents
its key, so a verified key is remembered in memory by its SHA-256: only a key's first
request pays. The row is still read on every request (a primary-key lookup), so a key
revoked by another process stops working at once, not when a cache expires.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from twinforge.auth.errors import InvalidInput
from twinforge.auth.principal import Principal
from twinforge.auth.roles import parse_roles
from twinforge.lifecycle import Closing

__all__ = ["KEY_PREFIX", "ApiKeyInfo", "ApiKeyStore", "HashingNeeded", "IssuedKey"]

KEY_PREFIX = "tfk_"
#: The store's file in a data dir (``Settings.data_dir``).
FILE_NAME = "api_keys.sqlite3"
_KEY = re.compile(r"tfk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
#: Longer text is not a key; refusing it before hashing keeps hostile input cheap.
_MAX_KEY_CHARS = 128
_MAX_NAME_CHARS = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id  TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    roles   TEXT NOT NULL,
    hash    TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
)
"""


class HashingNeeded(Exception):
    """Raised by ``verify(..., hashing=False)`` when only argon2 can tell (a key not
    verified before): the caller retries where slow work may run."""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: never its secret nor its hash."""

    key_id: str
    name: str
    roles: frozenset[str]
    created: datetime
    revoked: datetime | None = None

    @property
    def principal(self) -> Principal:
        return Principal(f"key:{self.name}", self.roles)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key; ``secret`` is the whole key text, shown this once and stored nowhere."""

    key_id: str
    name: str
    roles: frozenset[str]
    created: datetime
    secret: str = field(repr=False)


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInput(f"name: expected a string, not {type(name).__name__}", field="name")
    if not name.strip():
        raise InvalidInput("name: must not be empty", field="name")
    if len(name) > _MAX_NAME_CHARS:
        raise InvalidInput(
            f"name: at most {_MAX_NAME_CHARS} characters, not {len(name)}", field="name"
        )
    if not name.isprintable():
        raise InvalidInput("name: only printable characters (no control characters)", field="name")
    return name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ApiKeyStore(Closing):
    """API keys in the SQLite file ``path``; safe to share between threads.

    ``hasher`` defaults to argon2's recommended parameters; tests pass cheaper ones.
    ``cache_size`` bounds the verified keys remembered; ``max_concurrent_hashes`` bounds
    argon2 runs at once, since each takes 64 MiB and wrong keys are cheap to send.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hasher: PasswordHasher | None = None,
        cache_size: int = 1024,
        max_concurrent_hashes: int = 4,
    ) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._cache_size = cache_size
        # sha256(key text) -> the key's id and principal, most recently used last.
        self._cache: OrderedDict[str, tuple[str, Principal]] = OrderedDict()
        self._hashing = threading.BoundedSemaphore(max_concurrent_hashes)
        self._lock = threading.Lock()
        if not self.path.exists():
            # Only hashes live here, but nobody else has any business reading them.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> ApiKeyStore:
        """The store the server and ``twinforge keys`` share in ``data_dir``."""
        return cls(Path(data_dir) / FILE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, name: str, roles: Collection[str]) -> IssuedKey:
        """Issue a key for ``name`` with ``roles``; raises :class:`InvalidInput` for either."""
        name = _check_name(name)
        role_set = parse_roles(roles)
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        digest = self._hasher.hash(secret)
        created = datetime.now(UTC)
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (key_id, name, roles, hash, created) VALUES (?, ?, ?, ?, ?)",
                (key_id, name, json.dumps(sorted(role_set)), digest, created.isoformat()),
            )
        return IssuedKey(key_id, name, role_set, created, secret)

    def verify(self, text: str, *, hashing: bool = True) -> Principal | None:
        """The principal of key ``text``, or None for anything that is not a live key.

        Never raises for what a client sends, whatever its size or content. A key seen
        before costs one indexed read (its row says whether it is still live); with
        ``hashing=False``, a key that would need argon2 (tens of milliseconds) raises
        :class:`HashingNeeded` instead, so an event loop can answer the rest itself.
        """
        if not isinstance(text, str) or len(text) > _MAX_KEY_CHARS:
            return None
        match = _KEY.fullmatch(text)
        if match is None:
            return None
        key_id = match.group(1)
        cache_key = _digest(text)
        with self._lock:
            cached = self._cache.get(cache_key)
            row = self._db.execute(
                "SELECT name, roles, hash, revoked FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            if cached is not None:
                if row is not None and row[3] is None:
                    self._cache.move_to_end(cache_key)
                    return cached[1]
                self._cache.pop(cache_key, None)
        if row is None or row[3] is not None:
            return None
        if not hashing:
            raise HashingNeeded
        name, roles, digest, _ = row
        with self._hashing:
            try:
                self._hasher.verify(digest, text)
            except (VerificationError, InvalidHashError):
                return None
        principal = Principal(f"key:{name}", frozenset(json.loads(roles)))
        with self._lock:
            self._cache[cache_key] = (key_id, principal)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def revoke(self, key_id: str) -> bool:
        """Revoke ``key_id``; False when no such key is active. Takes effect at once."""
        if not isinstance(key_id, str):
            return False
        with self._lock:
            cursor = self._db.execute(
                "UPDATE api_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL",
                (datetime.now(UTC).isoformat(), key_id),
            )
            for cache_key in [k for k, (kid, _) in self._cache.items() if kid == key_id]:
                del self._cache[cache_key]
        return cursor.rowcount == 1

    def get(self, key_id: str) -> ApiKeyInfo | None:
        """The key ``key_id``, revoked or not, or None when there is none."""
        with self._lock:
            row = self._db.execute(
                "SELECT key_id, name, roles, created, revoked FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else self._info(row)

    def list(self) -> builtins.list[ApiKeyInfo]:
        """Every key, oldest first, revoked ones included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, name, roles, created, revoked FROM api_keys"
                " ORDER BY created, key_id"
            ).fetchall()
        return [self._info(row) for row in rows]

    @staticmethod
    def _info(row: tuple[str, str, str, str, str | None]) -> ApiKeyInfo:
        key_id, name, roles, created, revoked = row
        return ApiKeyInfo(
            key_id=key_id,
            name=name,
            roles=frozenset(json.loads(roles)),
            created=datetime.fromisoformat(created),
            revoked=datetime.fromisoformat(revoked) if revoked else None,
        )
