"""Commands to machines: the safety policy, the audit log and the service that sends them.

:class:`CommandService` is the entry point; transports (MQTT, OPC UA) live in
``twinforge.ingest`` and meet it through :class:`CommandTransport`.
"""

from __future__ import annotations

from .alarms import ActiveAlarm, Alarm, AlarmSource
from .audit import AuditEntry, AuditLog
from .policy import CommandRule, Decision, PolicyError, SafetyPolicy, Verdict
from .policy_config import SafetyPolicyConfig
from .principal import ADMIN, DEFAULT_ROLES, ENGINEER, OPERATOR, VIEWER, Principal
from .record import CommandRecord, CommandStatus
from .service import ApprovalError, CommandNotFound, CommandService, StatusListener
from .transport import CommandReply, CommandTransport

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
