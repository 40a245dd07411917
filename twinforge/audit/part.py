"""The audit trail's part of a running server: opened first, closed last."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from twinforge.audit.log import AuditTrail
from twinforge.config import Settings

__all__ = ["AuditPart", "start_audit"]


@dataclass
class AuditPart:
    trail: AuditTrail
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.trail.close()


def start_audit(settings: Settings, data_dir: Path) -> AuditPart:
    """The trail in ``data_dir``, forwarding where ``settings`` say."""
    return AuditPart(AuditTrail.open(data_dir, settings))
