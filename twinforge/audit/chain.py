"""The chain itself: what a record is, its canonical encoding, its hash, and the walk that
finds the first record that does not follow from the one before."""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "GENESIS",
    "MAX_DETAILS_CHARS",
    "Actor",
    "ChainBreak",
    "LocalActor",
    "Record",
    "bounded_details",
    "find_break",
    "record_hash",
]

#: What the first record's ``prev_hash`` is: no record came before it.
GENESIS = "0" * 64
#: Longest details JSON kept; longer details keep their head only.
MAX_DETAILS_CHARS = 32 * 1024


class Actor(Protocol):
    """Whoever acts: a ``Principal`` (its ``id`` is the key id or token subject) or a
    :class:`LocalActor`. The trail reads only these two fields."""

    @property
    def id(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class LocalActor:
    """An actor by id and roles: the CLI's operating-system user, or an identity already
    taken from a credential (a command step's user or approver)."""

    id: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def cli(cls) -> LocalActor:
        """The operating-system user running a ``twinforge`` command."""
        return cls(f"local:{getpass.getuser()}", frozenset({"local"}))


@dataclass(frozen=True, slots=True)
class Record:
    """One record; ``details`` is its canonical JSON text, hashed as stored."""

    seq: int
    time: float
    actor: str
    roles: tuple[str, ...]
    action: str
    target: str
    outcome: str
    details: str
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        """The record as one JSON object (details decoded), as forwarded and shown."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "roles": list(self.roles),
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "details": json.loads(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first record (by ``seq``) that does not follow from its predecessor, and why."""

    seq: int
    reason: str


def canonical(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text: one encoding per value, whoever writes it."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def bounded_details(details: dict[str, Any] | None) -> str:
    """``details`` as canonical JSON, at most :data:`MAX_DETAILS_CHARS` of it."""
    try:
        text = canonical(details or {})
    except (TypeError, ValueError, RecursionError) as error:
        # Strict JSON only (no NaN): SQLite's JSON functions must be able to read it.
        text = canonical({"$unencodable": True, "why": str(error)[:200]})
    if len(text) > MAX_DETAILS_CHARS:
        text = canonical({"$truncated": True, "chars": len(text), "head": text[:1024]})
    # Lone surrogates become JSON escapes: still valid JSON, and storable as UTF-8.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def record_hash(
    *,
    seq: int,
    time: float,
    actor: str,
    roles: Iterable[str],
    action: str,
    target: str,
    outcome: str,
    details: str,
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical encoding of every field but the hash itself."""
    body = canonical([seq, time, actor, list(roles), action, target, outcome, details, prev_hash])
    return hashlib.sha256(body.encode("utf-8", "backslashreplace")).hexdigest()


def find_break(records: Iterable[Record]) -> ChainBreak | None:
    """Walk ``records`` in ``seq`` order; the first one out of the chain, or None."""
    expected_prev, expected_seq = GENESIS, 1
    for record in records:
        if record.seq != expected_seq:
            missing = "missing" if record.seq > expected_seq else "out of order"
            return ChainBreak(record.seq, f"expected record {expected_seq} here ({missing})")
        if record.prev_hash != expected_prev:
            return ChainBreak(
                record.seq,
                "prev_hash does not match the record before it "
                "(a record was deleted, inserted or reordered)",
            )
        actual = record_hash(
            seq=record.seq,
            time=record.time,
            actor=record.actor,
            roles=record.roles,
            action=record.action,
            target=record.target,
            outcome=record.outcome,
            details=record.details,
            prev_hash=record.prev_hash,
        )
        if actual != record.hash:
            return ChainBreak(record.seq, "hash does not match its fields (a field was changed)")
        expected_prev, expected_seq = record.hash, record.seq + 1
    return None
