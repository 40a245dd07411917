"""Commands to machines: the safety policy, the audit log and the service that sends them.

:class:`CommandService` is the entry point; transports (MQTT, OPC UA) live in
``twinforge.ingest`` and meet it through :class:`CommandTransport`.
"""

from __future__ import annotations

from twinforge.auth.principal import ADMIN, DEFAULT_ROLES, ENGINEER, OPERATOR, VIEWER, Principal
from twinforge.runtime.commands.alarms import ActiveAlarm, Alarm, AlarmSource
from twinforge.runtime.commands.audit import AuditEntry, AuditLog
from twinforge.runtime.commands.policy import (
    CommandRule,
    Decision,
    PolicyError,
    SafetyPolicy,
    Verdict,
)
from twinforge.runtime.commands.policy_config import SafetyPolicyConfig
from twinforge.runtime.commands.record import CommandRecord, CommandStatus
from twinforge.runtime.commands.service import (
    ApprovalError,
    CommandNotFound,
    CommandService,
    StatusListener,
)
from twinforge.runtime.commands.transport import CommandReply, CommandTransport

__all__ = [
    "ADMIN",
    "DEFAULT_ROLES",
    "ENGINEER",
    "OPERATOR",
    "VIEWER",
    "ActiveAlarm",
    "Alarm",
    "AlarmSource",
    "ApprovalError",
    "AuditEntry",
    "AuditLog",
    "CommandNotFound",
    "CommandRecord",
    "CommandReply",
    "CommandRule",
    "CommandService",
    "CommandStatus",
    "CommandTransport",
    "Decision",
    "PolicyError",
    "Principal",
    "SafetyPolicy",
    "SafetyPolicyConfig",
    "StatusListener",
    "Verdict",
]
