"""The command audit: every step of every invocation, as records of the one audit trail.

Each step is a ``command.<action>`` record (``invoke``, ``approve``, ``reject``,
``expire``, ``reply``) whose actor is who acted (the approver for ``approve`` and
``reject``, else the requester), whose target is ``twin:<id>`` and whose details hold the
invocation as it stood: who (``user``, ``roles``, ``approver``), what (``twin``,
``model``, ``command``, ``request``) and the outcome (``decision``, ``reason``,
``status``, ``response``, ``error``); the records of one invocation share its
``correlation_id`` (the command id). Being rows of the trail, they are hash-chained with
every other security-relevant act, so ``twinforge audit verify`` covers them too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinforge.audit import AuditTrail, LocalActor, Record
from twinforge.lifecycle import Closing
from twinforge.runtime.commands.record import CommandRecord

__all__ = ["AuditEntry", "AuditLog"]

#: Longest JSON text kept for a request or response; longer ones keep their head only
#: (the trail bounds a record's details as a whole, too).
MAX_JSON_CHARS = 8 * 1024
MAX_QUERY_LIMIT = 10_000

_PREFIX = "command."
#: Just past every ``command.*`` action in text order, so the range uses the index.
_PREFIX_END = "command/"
_APPROVER_ACTIONS = frozenset({"approve", "reject"})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One step; ``request`` and ``response`` are decoded JSON (a ``{"$truncated": ...}``
    object when they were too long to keep whole)."""

    id: int
    time: float
    action: str
    correlation_id: str
    user: str
    roles: frozenset[str]
    twin: str
    model: str | None
    command: str
    request: Any
    decision: str | None
    reason: str | None
    status: str
    response: Any
    error: str | None
    approver: str | None


class AuditLog(Closing):
    """The command steps of an :class:`AuditTrail` (given, or opened at ``path``)."""

    def __init__(self, trail: AuditTrail | str | Path) -> None:
        self._owns = not isinstance(trail, AuditTrail)
        self.trail = trail if isinstance(trail, AuditTrail) else AuditTrail(trail)
        self._closed = False

    @property
    def path(self) -> Path:
        return self.trail.path

    def append(self, record: CommandRecord, action: str) -> int:
        """Write ``record`` as it stands, as the record of ``action``; returns its id."""
        if self._closed:
            raise RuntimeError("the command audit log is closed")
        by_approver = action in _APPROVER_ACTIONS and record.approver is not None
        actor = (
            LocalActor(record.approver or "", record.approver_roles)
            if by_approver
            else LocalActor(record.user, record.roles)
        )
        details = {
            "correlation_id": record.id,
            "user": record.user,
            "roles": sorted(record.roles),
            "twin": record.twin_id,
            "model": record.model_id,
            "command": record.command,
            "request": _bounded(record.request),
            "decision": record.decision,
            "reason": record.reason,
            "status": str(record.status),
            "response": _bounded(record.response),
            "error": record.error,
            "approver": record.approver,
        }
        written = self.trail.record(
            actor,
            _PREFIX + action,
            f"twin:{record.twin_id}",
            str(record.status),
            details,
            at=record.updated,
        )
        return written.seq

    def query(
        self,
        *,
        twin: str | None = None,
        user: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Steps matching every filter given, newest first, at most ``limit`` of them.

        ``user`` matches the requester or the approver; the time range is
        ``since <= time < until``; ``before_id`` (the last id of a page) pages on.
        """
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_QUERY_LIMIT
        ):
            raise ValueError(
                f"limit: must be an integer from 1 to {MAX_QUERY_LIMIT}, not {limit!r}"
            )
        where: list[tuple[str, tuple[Any, ...]]] = [
            ("action >= ? AND action < ?", (_PREFIX, _PREFIX_END))
        ]
        if twin is not None:
            # Stored text has lone surrogates escaped; look for it the same way.
            target = f"twin:{twin}".encode("utf-8", "backslashreplace").decode("utf-8")
            where.append(("target = ?", (target,)))
        if user is not None:
            where.append(
                (
                    "(json_extract(details, '$.user') = ? "
                    "OR json_extract(details, '$.approver') = ?)",
                    (user, user),
                )
            )
        if correlation_id is not None:
            where.append(("json_extract(details, '$.correlation_id') = ?", (correlation_id,)))
        records = self.trail.query(
            where=where, since=since, until=until, before_seq=before_id, limit=limit
        )
        return [_entry(record) for record in records]

    def close(self) -> None:
        self._closed = True
        if self._owns:
            self.trail.close()


def _bounded(value: Any) -> Any:
    """``value`` as JSON the trail can keep; too long: its head, marked truncated."""
    if value is None:
        return None
    try:
        text = json.dumps(value, default=repr, allow_nan=False)
    except (ValueError, RecursionError) as error:
        return {"$unencodable": type(value).__name__, "why": str(error)[:200]}
    if len(text) > MAX_JSON_CHARS:
        return {"$truncated": True, "chars": len(text), "head": text[:1024]}
    return json.loads(text)


def _entry(record: Record) -> AuditEntry:
    details = json.loads(record.details)
    return AuditEntry(
        id=record.seq,
        time=record.time,
        action=record.action.removeprefix(_PREFIX),
        correlation_id=details.get("correlation_id", ""),
        user=details.get("user", ""),
        roles=frozenset(details.get("roles", ())),
        twin=details.get("twin", ""),
        model=details.get("model"),
        command=details.get("command", ""),
        request=details.get("request"),
        decision=details.get("decision"),
        reason=details.get("reason"),
        status=details.get("status", ""),
        response=details.get("response"),
        error=details.get("error"),
        approver=details.get("approver"),
    )
