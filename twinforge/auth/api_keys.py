"""API keys for machines and scripts: issued once, stored only as argon2 hashes in SQLite.

A key reads ``tfk_<key id>_<secret>``. The key id finds the row; argon2 checks the whole
key. Argon2 is slow on purpose (tens of milliseconds, 64 MiB), and every request presents
its key, so a verified key is remembered in memory by its SHA-256: only a key's first
request pays. The row is still read on every request (a primary-key lookup), so a key
revoked by another process stops working at once, not when a cache expires.

A key may expire (``expires``, set at creation); an expired key is refused like a revoked
one. Names are unique among live keys, but a key's identity is its id: the principal is
``key:<key id>``. A wrong secret for a known key id is remembered for
``negative_ttl_s`` by its SHA-256, so repeating it costs a dictionary lookup, not argon2.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from twinforge.auth.errors import InvalidInput
from twinforge.auth.names import check_name
from twinforge.auth.principal import Principal
from twinforge.auth.roles import parse_roles
from twinforge.auth.sqlite import open_private_db
from twinforge.lifecycle import Closing

__all__ = ["KEY_PREFIX", "ApiKeyInfo", "ApiKeyStore", "HashingNeeded", "IssuedKey"]

KEY_PREFIX = "tfk_"
#: The store's file in a data dir (``Settings.data_dir``).
FILE_NAME = "api_keys.sqlite3"
_KEY = re.compile(r"tfk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
#: Longer text is not a key; refusing it before hashing keeps hostile input cheap.
_MAX_KEY_CHARS = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id  TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    roles   TEXT NOT NULL,
    hash    TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT,
    expires TEXT
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
    expires: datetime | None = None

    @property
    def principal(self) -> Principal:
        return Principal(f"key:{self.key_id}", self.roles, self.name)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or datetime.now(UTC)) >= self.expires


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key; ``secret`` is the whole key text, shown this once and stored nowhere."""

    key_id: str
    name: str
    roles: frozenset[str]
    created: datetime
    secret: str = field(repr=False)
    expires: datetime | None = None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ApiKeyStore(Closing):
    """API keys in the SQLite file ``path``; safe to share between threads.

    ``hasher`` defaults to argon2's recommended parameters; tests pass cheaper ones.
    ``cache_size`` bounds the verified keys remembered (and, apart, the failed ones);
    ``max_concurrent_hashes`` bounds argon2 runs at once, since each takes 64 MiB and
    wrong keys are cheap to send; ``negative_ttl_s`` is how long a failed key is refused
    without hashing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hasher: PasswordHasher | None = None,
        cache_size: int = 1024,
        max_concurrent_hashes: int = 4,
        negative_ttl_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._cache_size = cache_size
        self._negative_ttl_s = negative_ttl_s
        # sha256(key text) -> the key's id and principal, most recently used last.
        self._cache: OrderedDict[str, tuple[str, Principal]] = OrderedDict()
        # sha256(key text) -> when argon2 last said no (monotonic), oldest first.
        self._failed: OrderedDict[str, float] = OrderedDict()
        # sha256(key text) of keys that verified once, kept after revocation, so that a
        # refusal may then say why (revoked, expired) to the key's own holder only.
        self._known: OrderedDict[str, None] = OrderedDict()
        self._hashing = threading.BoundedSemaphore(max_concurrent_hashes)
        self._lock = threading.Lock()
        self._db = open_private_db(self.path)
        with self._lock:
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(api_keys)")}
            if "expires" not in columns:  # a store made before keys could expire
                self._db.execute("ALTER TABLE api_keys ADD COLUMN expires TEXT")

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> ApiKeyStore:
        """The store the server and ``twinforge keys`` share in ``data_dir``."""
        return cls(Path(data_dir) / FILE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self, name: str, roles: Collection[str], *, expires: datetime | None = None
    ) -> IssuedKey:
        """Issue a key for ``name`` with ``roles``, valid until ``expires`` (None: until
        revoked); raises :class:`InvalidInput` naming the field that breaks its rule
        (``name`` also when a live key has it already)."""
        name = check_name(name)
        role_set = parse_roles(roles)
        created = datetime.now(UTC)
        if expires is not None:
            if expires.tzinfo is None:
                raise InvalidInput("expires: needs a time zone", field="expires")
            if expires <= created:
                raise InvalidInput("expires: must be in the future", field="expires")
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        digest = self._hasher.hash(secret)
        with self._lock:
            # IMMEDIATE: the name check and the insert are one step for every process.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                taken = self._db.execute(
                    "SELECT key_id FROM api_keys WHERE name = ? AND revoked IS NULL", (name,)
                ).fetchone()
                if taken is not None:
                    raise InvalidInput(
                        f"name: must be unique; key {taken[0]} is called {name!r}"
                        " (revoke it first, or pick another name)",
                        field="name",
                    )
                self._db.execute(
                    "INSERT INTO api_keys (key_id, name, roles, hash, created, expires)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key_id,
                        name,
                        json.dumps(sorted(role_set)),
                        digest,
                        created.isoformat(),
                        None if expires is None else expires.isoformat(),
                    ),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return IssuedKey(key_id, name, role_set, created, secret, expires)

    def verify(self, text: str, *, hashing: bool = True) -> Principal | None:
        """The principal of key ``text``, or None for anything that is not a live key.

        Never raises for what a client sends, whatever its size or content. A key seen
        before costs one indexed read (its row says whether it is still live), and so
        does a wrong one seen within ``negative_ttl_s``; with ``hashing=False``, a key
        that would need argon2 (tens of milliseconds) raises :class:`HashingNeeded`
        instead, so an event loop can answer the rest itself.
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
                "SELECT name, roles, hash, revoked, expires FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            live = row is not None and row[3] is None and not _past(row[4])
            if cached is not None:
                if live:
                    self._cache.move_to_end(cache_key)
                    return cached[1]
                self._cache.pop(cache_key, None)
            if live and self._recently_failed(cache_key):
                return None
        if not live:
            return None
        if not hashing:
            raise HashingNeeded
        name, roles, digest, _, _ = row
        with self._hashing:
            try:
                self._hasher.verify(digest, text)
            except (VerificationError, InvalidHashError):
                with self._lock:
                    self._failed[cache_key] = time.monotonic()
                    while len(self._failed) > self._cache_size:
                        self._failed.popitem(last=False)
                return None
        principal = Principal(f"key:{key_id}", frozenset(json.loads(roles)), name)
        with self._lock:
            self._cache[cache_key] = (key_id, principal)
            self._known[cache_key] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            while len(self._known) > self._cache_size:
                self._known.popitem(last=False)
        return principal

    def was_verified(self, text: str) -> bool:
        """Whether key ``text`` verified in this process before (revoked since, maybe)."""
        with self._lock:
            return _digest(text) in self._known

    def _recently_failed(self, cache_key: str) -> bool:
        """Whether argon2 refused this key text within the negative cache's window."""
        failed = self._failed.get(cache_key)
        if failed is None:
            return False
        if time.monotonic() - failed < self._negative_ttl_s:
            return True
        del self._failed[cache_key]
        return False

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
                "SELECT key_id, name, roles, created, revoked, expires FROM api_keys"
                " WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else self._info(row)

    def list(self) -> builtins.list[ApiKeyInfo]:
        """Every key, oldest first, revoked ones included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, name, roles, created, revoked, expires FROM api_keys"
                " ORDER BY created, key_id"
            ).fetchall()
        return [self._info(row) for row in rows]

    @staticmethod
    def _info(row: tuple[str, str, str, str, str | None, str | None]) -> ApiKeyInfo:
        key_id, name, roles, created, revoked, expires = row
        return ApiKeyInfo(
            key_id=key_id,
            name=name,
            roles=frozenset(json.loads(roles)),
            created=datetime.fromisoformat(created),
            revoked=datetime.fromisoformat(revoked) if revoked else None,
            expires=datetime.fromisoformat(expires) if expires else None,
        )


def _past(when: str | None) -> bool:
    return when is not None and datetime.fromisoformat(when) <= datetime.now(UTC)
