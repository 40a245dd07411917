"""Invoking DTDL commands on twins: validate, apply the safety policy, send, audit.

One invocation goes: request checked against the Command's schema (``invalid``) → safety
policy (``denied``, or ``pendingApproval`` until a second user approves or rejects it) →
sent through the twin's transport (``sent``) → reply checked against the response schema
(``succeeded``, ``failed``, ``timedOut``). Every step is a row in the audit log, written
before the command leaves, so a command that went out always has its row.

The service lives on one event loop; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twinforge.auth.principal import APPROVER_ROLES, Principal
from twinforge.runtime.commands._requests import (
    Refused,
    check_ids,
    check_response,
    describe,
    own_copy,
)
from twinforge.runtime.commands.alarms import AlarmSource
from twinforge.runtime.commands.audit import AuditLog
from twinforge.runtime.commands.policy import Decision, SafetyPolicy, Verdict
from twinforge.runtime.commands.rate_limit import InvocationCounter
from twinforge.runtime.commands.record import CommandRecord, CommandStatus
from twinforge.runtime.commands.transport import CommandReply, CommandTransport
from twinforge.twin_models import Command, Interface, validate_command_request

__all__ = ["ApprovalError", "CommandNotFound", "CommandService", "StatusListener"]

logger = logging.getLogger(__name__)

StatusListener = Callable[[CommandRecord], None]

#: Seconds ``send`` may overrun its own timeout before the service gives up on it.
_TRANSPORT_GRACE = 5.0


class CommandNotFound(LookupError):
    """No invocation with this id (it never existed, or it is too old to be kept)."""


class ApprovalError(ValueError):
    """An approval or rejection that is not allowed; the message says which rule."""


class CommandService:
    """Validates, authorizes, sends and audits command invocations.

    ``interface_of(twin_id)`` gives the twin's DTDL Interface and raises ``LookupError``
    for an unknown twin; ``transport_for(twin_id)`` gives the transport reaching its
    device. Pending approvals expire after ``approval_timeout`` seconds (at most
    ``max_pending`` wait at once), and the last
    ``keep`` finished invocations stay readable through :meth:`get` (the audit log keeps
    them all).
    """

    def __init__(
        self,
        interface_of: Callable[[str], Interface],
        transport_for: Callable[[str], CommandTransport],
        policy: SafetyPolicy,
        audit: AuditLog,
        alarms: AlarmSource,
        clock: Callable[[], float] = time.time,
        *,
        timeout: float = 10.0,
        approval_timeout: float = 900.0,
        max_request_bytes: int = 64 * 1024,
        max_pending: int = 1000,
        keep: int = 10_000,
    ) -> None:
        self._interface_of = interface_of
        self._transport_for = transport_for
        self._policy = policy
        self.audit = audit
        self._alarms = alarms
        self._clock = clock
        self.timeout = timeout
        self.approval_timeout = approval_timeout
        self.max_request_bytes = max_request_bytes
        self.max_pending = max_pending
        self._keep = keep
        self._counter = InvocationCounter(policy.horizon)
        self._pending: dict[str, CommandRecord] = {}
        self._records: OrderedDict[str, CommandRecord] = OrderedDict()
        self._listeners: tuple[StatusListener, ...] = ()

    # -- listeners ------------------------------------------------------------------------

    def add_listener(self, listener: StatusListener) -> None:
        """Call ``listener(record)`` on every status change, on the service's event loop."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: StatusListener) -> None:
        self._listeners = tuple(other for other in self._listeners if other != listener)

    # -- invoking -------------------------------------------------------------------------

    async def invoke(
        self, user: Principal, twin_id: str, command: str, request: Any = None
    ) -> CommandRecord:
        """Invoke ``command`` on ``twin_id`` for ``user``; returns where it ended.

        That is ``invalid``, ``denied`` or ``pendingApproval`` at once, else the outcome
        of sending it: ``succeeded``, ``failed`` or ``timedOut``. Never raises on bad input.
        """
        if not isinstance(user, Principal):
            raise TypeError(f"user must be a Principal, not {type(user).__name__}")
        now = self._clock()
        record = CommandRecord(
            id=uuid.uuid4().hex,
            twin_id=twin_id if isinstance(twin_id, str) else repr(twin_id),
            command=command if isinstance(command, str) else repr(command),
            request=request,
            # The identity (key or token subject), never the display name: two keys may
            # share a name, and separation of duties compares this.
            user=user.id if isinstance(user.id, str) else repr(user.id),
            roles=frozenset(r for r in user.roles if isinstance(r, str)),
            status=CommandStatus.INVALID,
            created=now,
            updated=now,
        )
        try:
            check_ids(user, twin_id, command)
            record = dataclasses.replace(record, request=own_copy(request, self.max_request_bytes))
        except Refused as refused:
            if refused.size:
                # Keep neither the payload in memory nor a copy in the audit log.
                record = dataclasses.replace(record, request=f"<{refused.size} bytes, not kept>")
            return self._finish(record, "invoke", CommandStatus.INVALID, reason=refused.reason)
        try:
            interface = self._interface_of(twin_id)
        except LookupError:
            return self._finish(
                record, "invoke", CommandStatus.INVALID, reason=f"twinId: no twin {twin_id!r}"
            )
        except Exception as error:
            logger.exception("looking up the model of twin %r failed", twin_id)
            return self._finish(
                record, "invoke", CommandStatus.FAILED, reason=f"the twin's model: {error}"
            )
        record = dataclasses.replace(record, model_id=interface.id)
        definition = interface.commands.get(command)
        if definition is None:
            return self._finish(
                record,
                "invoke",
                CommandStatus.INVALID,
                reason=f"command: {interface.id} has no command {command!r}",
            )
        problems = validate_command_request(record.request, definition)
        if problems:
            return self._finish(
                record, "invoke", CommandStatus.INVALID, reason="request: " + describe(problems)
            )
        decision = self._decide(interface, definition, record, user, approved=False)
        record = dataclasses.replace(record, decision=str(decision.verdict))
        if decision.verdict is Verdict.DENY:
            return self._finish(record, "invoke", CommandStatus.DENIED, reason=_why(decision))
        if decision.verdict is Verdict.NEEDS_APPROVAL:
            self._expire()
            if len(self._pending) >= self.max_pending:
                # Pending commands hold memory until decided: a flood must not grow it.
                return self._finish(
                    record,
                    "invoke",
                    CommandStatus.DENIED,
                    reason=f"approval: {self.max_pending} commands already await approval",
                )
            record = self._finish(
                record, "invoke", CommandStatus.PENDING_APPROVAL, reason=_why(decision)
            )
            self._pending[record.id] = record
            return record
        return await self._send(record, interface, definition, "invoke")

    # -- approvals ------------------------------------------------------------------------

    async def approve(self, user: Principal, command_id: str) -> CommandRecord:
        """Approve a pending invocation as a second user (engineer or admin) and send it.

        The policy is checked again (alarms and rates may have changed); returns where the
        invocation ended. Raises :class:`CommandNotFound` or :class:`ApprovalError`.
        """
        record = self._take_pending(user, command_id, "approve")
        now = self._clock()
        try:
            interface = self._interface_of(record.twin_id)
            definition = interface.commands[record.command]
        except Exception as error:
            # The model changed under the pending command: it cannot be sent as approved.
            record = dataclasses.replace(
                record, updated=now, approver=user.id, approver_roles=user.roles
            )
            return self._finish(
                record, "approve", CommandStatus.FAILED, reason=f"the twin's model: {error!r}"
            )
        requester = Principal(record.user, record.roles)
        record = dataclasses.replace(
            record, updated=now, approver=user.id, approver_roles=user.roles
        )
        decision = self._decide(interface, definition, record, requester, approved=True)
        record = dataclasses.replace(record, decision=str(decision.verdict))
        if decision.verdict is not Verdict.ALLOW:
            return self._finish(
                record, "approve", CommandStatus.DENIED, reason=f"after approval: {_why(decision)}"
            )
        return await self._send(record, interface, definition, "approve")

    async def reject(self, user: Principal, command_id: str, reason: str = "") -> CommandRecord:
        """Reject a pending invocation: by an engineer or admin, or withdrawn by its user."""
        record = self._take_pending(user, command_id, "reject")
        note = reason[:1000] if isinstance(reason, str) and reason else "no reason given"
        approver = None if user.id == record.user else user.id
        record = dataclasses.replace(
            record, updated=self._clock(), approver=approver, approver_roles=user.roles
        )
        return self._finish(
            record, "reject", CommandStatus.REJECTED, reason=f"rejected by {user.id}: {note}"
        )

    def get(self, command_id: str) -> CommandRecord | None:
        """The invocation as it stands, if it is pending or among the recent ones."""
        self._expire()
        return self._pending.get(command_id) or self._records.get(command_id)

    def list_pending(self) -> list[CommandRecord]:
        """Invocations waiting for approval, oldest first."""
        self._expire()
        return sorted(self._pending.values(), key=lambda record: record.created)

    # -- internals ------------------------------------------------------------------------

    def _take_pending(self, user: Principal, command_id: str, action: str) -> CommandRecord:
        """Remove and return the pending invocation ``user`` may approve or reject."""
        if not isinstance(user, Principal):
            raise TypeError(f"user must be a Principal, not {type(user).__name__}")
        self._expire()
        record = self._pending.get(command_id) if isinstance(command_id, str) else None
        if record is None:
            known = self._records.get(command_id) if isinstance(command_id, str) else None
            if known is None:
                raise CommandNotFound(f"no command {command_id!r}")
            raise ApprovalError(f"command {command_id} is {known.status}, not pendingApproval")
        withdrawing = action == "reject" and user.id == record.user
        refusal = None
        if not isinstance(user.id, str) or not user.id:
            refusal = f"{action} needs an identified user"
        elif user.id == record.user and not withdrawing:
            refusal = f"{user.id} invoked the command, so a second user must {action} it"
        elif not withdrawing and not user.roles & APPROVER_ROLES:
            refusal = f"{action} needs the role engineer or admin; {user.id} has " + (
                ", ".join(sorted(user.roles)) or "none"
            )
        if refusal is not None:
            # The refused attempt is audited too; the invocation stays pending.
            attempt = dataclasses.replace(
                record,
                updated=self._clock(),
                approver=user.id,
                approver_roles=user.roles,
                decision="deny",
                reason=refusal,
            )
            self._write(attempt, action)
            raise ApprovalError(refusal)
        # Taken out before any await, so two approvals cannot both send it.
        del self._pending[command_id]
        return record

    def _expire(self) -> None:
        now = self._clock()
        for record in list(self._pending.values()):
            if now - record.created >= self.approval_timeout:
                del self._pending[record.id]
                waited = dataclasses.replace(record, updated=now)
                self._finish(
                    waited,
                    "expire",
                    CommandStatus.REJECTED,
                    reason=f"approval expired: nobody approved it within {self.approval_timeout:g} s",
                )

    def _decide(
        self,
        interface: Interface,
        command: Command,
        record: CommandRecord,
        user: Principal,
        *,
        approved: bool,
    ) -> Decision:
        try:
            return self._policy.decide(
                interface,
                command,
                record.request,
                twin_id=record.twin_id,
                user=user,
                alarms=self._alarms,
                counter=self._counter,
                now=self._clock(),
                approved=approved,
            )
        except Exception as error:
            # Fail closed: a policy that cannot decide lets nothing through.
            logger.exception("the safety policy failed on %s of %s", command.name, interface.id)
            return Decision(Verdict.DENY, "policy", f"the policy failed: {error!r}")

    async def _send(
        self, record: CommandRecord, interface: Interface, command: Command, action: str
    ) -> CommandRecord:
        try:
            transport = self._transport_for(record.twin_id)
        except Exception as error:
            return self._finish(
                record, action, CommandStatus.FAILED, reason=f"no transport to the twin: {error}"
            )
        now = self._clock()
        record = dataclasses.replace(record, status=CommandStatus.SENT, updated=now)
        if not self._write(record, action):
            # Nothing leaves without its audit row.
            return self._finish(
                record, action, CommandStatus.FAILED, reason="the audit log is unavailable"
            )
        self._counter.add(record.twin_id, record.command, now)
        self._publish(record)
        try:
            reply = await asyncio.wait_for(
                transport.send(
                    record.twin_id, record.command, record.request, timeout=self.timeout
                ),
                self.timeout + _TRANSPORT_GRACE,
            )
        except TimeoutError:
            return self._finish(
                record,
                "reply",
                CommandStatus.TIMED_OUT,
                reason=f"no reply within {self.timeout:g} s",
            )
        except asyncio.CancelledError:
            self._finish(
                record,
                "reply",
                CommandStatus.FAILED,
                reason="cancelled while waiting for the reply; the device may have acted",
            )
            raise
        except Exception as error:
            return self._finish(
                record,
                "reply",
                CommandStatus.FAILED,
                reason=f"the transport failed: {error}",
                error=str(error) or type(error).__name__,
            )
        return self._judge(record, command, reply)

    def _judge(self, record: CommandRecord, command: Command, reply: CommandReply) -> CommandRecord:
        status = getattr(reply, "status", None)
        error = getattr(reply, "error", None)
        response = getattr(reply, "response", None)
        if isinstance(status, bool) or not isinstance(status, int):
            return self._finish(
                record,
                "reply",
                CommandStatus.FAILED,
                reason=f"reply: status {status!r} is not a code",
            )
        error = error if isinstance(error, str) or error is None else repr(error)
        record = dataclasses.replace(record, reply_status=status, error=error)
        if status in (408, 504):
            return self._finish(
                record,
                "reply",
                CommandStatus.TIMED_OUT,
                reason=f"the device timed out (status {status})",
            )
        if not 200 <= status < 300:
            return self._finish(
                record,
                "reply",
                CommandStatus.FAILED,
                reason=f"the device replied {status}: {error or 'no error given'}",
            )
        problems = check_response(response, command)
        if problems:
            return self._finish(
                record,
                "reply",
                CommandStatus.FAILED,
                reason=f"the device replied {status} but its response is invalid: "
                + describe(problems),
                response=response,
            )
        return self._finish(record, "reply", CommandStatus.SUCCEEDED, response=response)

    def _finish(
        self,
        record: CommandRecord,
        action: str,
        status: CommandStatus,
        *,
        reason: str | None = None,
        response: Any = None,
        error: str | None = None,
    ) -> CommandRecord:
        """Move ``record`` to ``status``, audit and announce it; returns the new record."""
        record = dataclasses.replace(
            record,
            status=status,
            updated=self._clock(),
            reason=reason if reason is not None else record.reason,
            response=response,
            error=error if error is not None else record.error,
        )
        self._write(record, action)
        self._publish(record)
        return record

    def _write(self, record: CommandRecord, action: str) -> bool:
        try:
            self.audit.append(record, action)
        except Exception:
            logger.exception("could not audit %s of command %s", action, record.id)
            return False
        return True

    def _publish(self, record: CommandRecord) -> None:
        if record.status is not CommandStatus.PENDING_APPROVAL:
            self._records[record.id] = record
            self._records.move_to_end(record.id)
            while len(self._records) > self._keep:
                self._records.popitem(last=False)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("command status listener %r failed", listener)


def _why(decision: Decision) -> str:
    return f"{decision.rule}: {decision.reason}" if decision.rule else decision.reason
