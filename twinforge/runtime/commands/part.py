"""The command service's part of a running server, with its policy and audit log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twinforge.audit import AuditTrail
from twinforge.runtime.commands.alarms import AlarmSource
from twinforge.runtime.commands.audit import AuditLog
from twinforge.runtime.commands.policy import SafetyPolicy
from twinforge.runtime.commands.service import CommandService
from twinforge.runtime.commands.transport import CommandTransport
from twinforge.twin_models.elements import Interface

__all__ = ["CommandsPart", "start_commands"]


@dataclass
class CommandsPart:
    service: CommandService
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.service.audit.close()


def start_commands(
    policy_file: Path | None,
    trail: AuditTrail,
    *,
    interface_of: Callable[[str], Interface],
    transport_for: Callable[[str], CommandTransport],
    alarms: AlarmSource,
) -> CommandsPart:
    """Commands under the safety policy in ``policy_file`` (none: roles only), audited in
    ``trail``."""
    policy = SafetyPolicy.from_file(policy_file) if policy_file else SafetyPolicy.from_config({})
    audit = AuditLog(trail)
    return CommandsPart(CommandService(interface_of, transport_for, policy, audit, alarms))
