"""Active alarms, as the command interlocks see them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ActiveAlarm", "Alarm", "AlarmSource"]


@dataclass(frozen=True, slots=True)
class Alarm:
    """One active alarm of a twin; a higher ``severity`` is more severe."""

    name: str
    severity: int
    since: float


class ActiveAlarm(Protocol):
    """What an interlock reads of an alarm; :class:`Alarm` and the actors' alarms have it."""

    @property
    def name(self) -> str: ...

    @property
    def severity(self) -> int: ...

    @property
    def since(self) -> float: ...


class AlarmSource(Protocol):
    """Whatever knows the alarms active on a twin right now (the asset fleet)."""

    def active_alarms(self, twin_id: str) -> Sequence[ActiveAlarm]:
        """The twin's active alarms; empty when there are none."""
        ...
