"""A command invocation and the statuses it goes through."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["FINAL_STATUSES", "CommandRecord", "CommandStatus"]


class CommandStatus(StrEnum):
    """Where an invocation stands; the values are the API's words."""

    PENDING_APPROVAL = "pendingApproval"
    REJECTED = "rejected"
    DENIED = "denied"
    INVALID = "invalid"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timedOut"


#: Statuses an invocation never leaves.
FINAL_STATUSES: frozenset[CommandStatus] = frozenset(
    {
        CommandStatus.REJECTED,
        CommandStatus.DENIED,
        CommandStatus.INVALID,
        CommandStatus.SUCCEEDED,
        CommandStatus.FAILED,
        CommandStatus.TIMED_OUT,
    }
)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One invocation as it stands; every status change makes a new record.

    ``reason`` says why it was denied, invalid, rejected or failed, naming the rule or the
    field; ``decision`` is the safety policy's verdict (``allow``, ``needsApproval``,
    ``deny``), None when the request never reached the policy. ``reply_status`` is the
    device's status code, when it answered.
    """

    id: str
    twin_id: str
    command: str
    request: Any
    user: str
    roles: frozenset[str]
    status: CommandStatus
    created: float
    updated: float
    model_id: str | None = None
    decision: str | None = None
    reason: str | None = None
    response: Any = None
    error: str | None = None
    reply_status: int | None = None
    approver: str | None = None
    #: The approver's roles, as the audit records them for its act.
    approver_roles: frozenset[str] = frozenset()

    @property
    def final(self) -> bool:
        """Whether the status can change no more."""
        return self.status in FINAL_STATUSES
