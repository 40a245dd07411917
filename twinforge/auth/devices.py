"""MQTT credentials for the embedded broker: issued once, stored only as argon2 hashes.

A credential's id is its MQTT username; its password is shown once, at :meth:`create`.
Each credential owns a set of twin ids (what a device may publish for) and has a kind:
``server`` for twinforge's own clients, ``device`` for the plant's. The server's and the
simulated plant's credentials are generated on first start and kept, with their
passwords, in an owner-only file of the data dir (:func:`server_credential`,
:func:`plant_credential`), since those clients must log in unattended.

As with API keys (:mod:`twinforge.auth.api_keys`), a verified password is remembered by
its SHA-256 so that reconnects skip argon2; the row is read on every verify, so a
revoked credential stops working at once.
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
from typing import Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from twinforge.auth.errors import InvalidInput
from twinforge.auth.names import check_name
from twinforge.lifecycle import Closing

__all__ = [
    "DEVICE",
    "SERVER",
    "DeviceCredential",
    "DeviceStore",
    "IssuedCredential",
    "plant_credential",
    "server_credential",
]

Kind = Literal["server", "device"]
SERVER: Final = "server"
DEVICE: Final = "device"

#: The store's file and the generated credentials' file in a data dir.
FILE_NAME = "devices.sqlite3"
GENERATED_FILE_NAME = "mqtt_credentials.json"
SERVER_NAME = "twinforge-server"
PLANT_NAME = "twinforge-plant"

_ID = re.compile(r"(server|device)-[0-9a-f]{16}")
#: Longer text is not a password of ours; refusing it before hashing keeps hostile input cheap.
_MAX_PASSWORD_CHARS = 128
_MAX_TWIN_CHARS = 1024
_TOPIC_UNSAFE = ("/", "+", "#", "\x00")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_credentials (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    twins   TEXT NOT NULL,
    hash    TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
);
-- A name names one live credential; a revoked one gives its name up.
CREATE UNIQUE INDEX IF NOT EXISTS device_credentials_live_name
    ON device_credentials (name) WHERE revoked IS NULL;
"""


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """What may be shown about a credential: never its password nor its hash."""

    id: str
    name: str
    kind: Kind
    twins: frozenset[str]
    created: datetime
    revoked: datetime | None = None

    def owns_client_id(self, client_id: str) -> bool:
        """Whether an MQTT client id is bound to this credential (``id`` or ``id-...``)."""
        return client_id == self.id or client_id.startswith(f"{self.id}-")


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A new credential; ``password`` is shown this once and stored nowhere."""

    credential: DeviceCredential
    password: str = field(repr=False)


def _check_twins(twins: object) -> frozenset[str]:
    if isinstance(twins, str) or not isinstance(twins, Collection):
        raise InvalidInput("twins: expected a list of twin ids", field="twins")
    for twin in twins:
        if not isinstance(twin, str) or not twin:
            raise InvalidInput(
                f"twins: each must be a non-empty string, not {twin!r}", field="twins"
            )
        if len(twin) > _MAX_TWIN_CHARS:
            raise InvalidInput(
                f"twins: a twin id is at most {_MAX_TWIN_CHARS} characters", field="twins"
            )
        unsafe = [c for c in _TOPIC_UNSAFE if c in twin]
        if unsafe:
            raise InvalidInput(
                f"twins: {twin!r} holds {', '.join(map(repr, unsafe))}, which cannot appear"
                " in an MQTT topic level",
                field="twins",
            )
    return frozenset(twins)


def _digest(username: str, password: str) -> str:
    return hashlib.sha256(f"{username}\x00{password}".encode()).hexdigest()


class DeviceStore(Closing):
    """MQTT credentials in the SQLite file ``path``; safe to share between threads.

    ``hasher`` defaults to argon2's recommended parameters; tests pass cheaper ones.
    ``max_concurrent_hashes`` bounds argon2 runs at once (64 MiB each).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hasher: PasswordHasher | None = None,
        cache_size: int = 1024,
        max_concurrent_hashes: int = 2,
    ) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._cache_size = cache_size
        # sha256(username, password) -> credential id, most recently used last.
        self._cache: OrderedDict[str, str] = OrderedDict()
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
            self._db.executescript(_SCHEMA)

    @classmethod
    def in_data_dir(
        cls, data_dir: str | os.PathLike[str], *, hasher: PasswordHasher | None = None
    ) -> DeviceStore:
        """The store the embedded broker and ``twinforge devices`` share in ``data_dir``."""
        return cls(Path(data_dir) / FILE_NAME, hasher=hasher)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, name: str, twins: Collection[str], kind: Kind = DEVICE) -> IssuedCredential:
        """Issue a credential; :class:`InvalidInput` for a bad or already used name, bad
        twin ids or an unknown kind."""
        name = check_name(name)
        twin_set = _check_twins(twins)
        if kind not in (SERVER, DEVICE):
            raise InvalidInput(
                f"kind: must be {SERVER!r} or {DEVICE!r}, not {kind!r}", field="kind"
            )
        credential = DeviceCredential(
            f"{kind}-{secrets.token_hex(8)}", name, kind, twin_set, datetime.now(UTC)
        )
        password = secrets.token_urlsafe(32)
        digest = self._hasher.hash(password)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO device_credentials (id, name, kind, twins, hash, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        credential.id,
                        name,
                        kind,
                        json.dumps(sorted(twin_set)),
                        digest,
                        credential.created.isoformat(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise InvalidInput(
                f"name: a live device credential named {name!r} already exists", field="name"
            ) from None
        return IssuedCredential(credential, password)

    def verify(self, username: str, password: str) -> DeviceCredential | None:
        """The live credential ``username`` when ``password`` is its password, else None.

        Never raises for what a client sends. Argon2 runs only the first time a
        (username, password) pair is seen; later calls cost one indexed read.
        """
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        if _ID.fullmatch(username) is None or len(password) > _MAX_PASSWORD_CHARS:
            return None
        row = self._row(username)
        if row is None or row[6] is not None:
            return None
        cache_key = _digest(username, password)
        with self._lock:
            if self._cache.get(cache_key) == username:
                self._cache.move_to_end(cache_key)
                return self._credential(row)
        with self._hashing:
            try:
                self._hasher.verify(row[4], password)
            except (VerificationError, InvalidHashError):
                return None
        with self._lock:
            self._cache[cache_key] = username
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._credential(row)

    def get(self, credential_id: str) -> DeviceCredential | None:
        """The credential ``credential_id``, revoked or not, or None when there is none."""
        if not isinstance(credential_id, str):
            return None
        row = self._row(credential_id)
        return None if row is None else self._credential(row)

    def revoke(self, credential_id: str) -> bool:
        """Revoke ``credential_id``; False when no such credential is live."""
        if not isinstance(credential_id, str):
            return False
        with self._lock:
            cursor = self._db.execute(
                "UPDATE device_credentials SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (datetime.now(UTC).isoformat(), credential_id),
            )
            for cache_key in [k for k, cid in self._cache.items() if cid == credential_id]:
                del self._cache[cache_key]
        return cursor.rowcount == 1

    def set_twins(self, credential_id: str, twins: Collection[str]) -> None:
        """Replace the twins ``credential_id`` owns (the plant's, when its twins change)."""
        twin_set = _check_twins(twins)
        with self._lock:
            self._db.execute(
                "UPDATE device_credentials SET twins = ? WHERE id = ?",
                (json.dumps(sorted(twin_set)), credential_id),
            )

    def list(self) -> builtins.list[DeviceCredential]:
        """Every credential, oldest first, revoked ones included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, kind, twins, hash, created, revoked FROM device_credentials"
                " ORDER BY created, id"
            ).fetchall()
        return [self._credential(row) for row in rows]

    def _row(self, credential_id: str) -> tuple[str, str, str, str, str, str, str | None] | None:
        with self._lock:
            row: tuple[str, str, str, str, str, str, str | None] | None = self._db.execute(
                "SELECT id, name, kind, twins, hash, created, revoked FROM device_credentials"
                " WHERE id = ?",
                (credential_id,),
            ).fetchone()
        return row

    @staticmethod
    def _credential(row: tuple[str, str, str, str, str, str, str | None]) -> DeviceCredential:
        credential_id, name, kind, twins, _hash, created, revoked = row
        return DeviceCredential(
            id=credential_id,
            name=name,
            kind=SERVER if kind == SERVER else DEVICE,
            twins=frozenset(json.loads(twins)),
            created=datetime.fromisoformat(created),
            revoked=datetime.fromisoformat(revoked) if revoked else None,
        )


def server_credential(data_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(username, password)`` for twinforge's own MQTT clients on the embedded broker,
    generated on first use and reused while it stays live. Its clients' ids must be the
    username or start with ``username + "-"``."""
    return _generated(Path(data_dir), SERVER_NAME, SERVER, ())


def plant_credential(data_dir: str | os.PathLike[str], twins: Collection[str]) -> tuple[str, str]:
    """``(username, password)`` of the simulated plant, a device owning ``twins`` (the set
    is brought up to date when it differs from the stored one)."""
    return _generated(Path(data_dir), PLANT_NAME, DEVICE, twins)


_generated_lock = threading.Lock()


def _generated(data_dir: Path, name: str, kind: Kind, twins: Collection[str]) -> tuple[str, str]:
    path = data_dir / GENERATED_FILE_NAME
    with _generated_lock, DeviceStore.in_data_dir(data_dir) as store:
        saved = _read_generated(path)
        entry = saved.get(name)
        live = None if entry is None else store.verify(*entry)
        if entry is not None and live is not None:
            if kind == DEVICE and live.twins != frozenset(twins):
                store.set_twins(live.id, twins)
            return entry
        # Lost, revoked or never made: a fresh one under the same name.
        for old in store.list():
            if old.name == name and old.revoked is None:
                store.revoke(old.id)
        issued = store.create(name, twins, kind)
        saved[name] = (issued.credential.id, issued.password)
        _write_generated(path, saved)
        return saved[name]


def _read_generated(path: Path) -> dict[str, tuple[str, str]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        name: (entry[0], entry[1])
        for name, entry in doc.items()
        if isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
    }


def _write_generated(path: Path, saved: dict[str, tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({name: list(entry) for name, entry in saved.items()}, out)
    os.replace(temporary, path)
