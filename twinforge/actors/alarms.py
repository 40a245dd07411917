"""Threshold alarms on live telemetry: what the command interlocks and the alerts read.

Rules are configuration (a JSON list, pydantic-checked); an asset raises an alarm when a
field crosses its limit and clears it when the value is back inside, so an interlock such
as "no start while an alarm is active" sees the machine's current condition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class AlarmRule(BaseModel):
    """Raise ``name`` on twins of ``model`` when ``field`` goes above/below a limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, description="DTMI of the model; sub-models match too")
    field: str = Field(min_length=1, description="telemetry name, or component/name")
    above: float | None = None
    below: float | None = None
    severity: int = Field(default=2, ge=1, le=5)

    @model_validator(mode="after")
    def _one_limit(self) -> AlarmRule:
        if self.above is None and self.below is None:
            raise ValueError("a rule needs 'above' or 'below' (or both)")
        return self

    def breached(self, value: Any) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return (self.above is not None and value > self.above) or (
            self.below is not None and value < self.below
        )


_RULES = TypeAdapter(list[AlarmRule])


def load_alarm_rules(source: str | Path | list[dict[str, Any]]) -> list[AlarmRule]:
    """Rules from a JSON file, JSON text or decoded list; ValueError names the bad field."""
    if isinstance(source, Path):
        source = source.read_text(encoding="utf-8")
    data = json.loads(source) if isinstance(source, str) else source
    return _RULES.validate_python(data)


@dataclass(frozen=True, slots=True)
class Alarm:
    """An active alarm of one asset."""

    name: str
    severity: int
    since: float
    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm an asset raised or cleared while applying a message.

    For a raised alarm ``value`` is the value that breached the rule and ``time`` equals
    ``since``; for a cleared one ``since`` is when it was raised, and ``value`` and ``time``
    are the value and source time that brought ``field`` back inside its limits.
    """

    twin_id: str
    raised: bool
    name: str
    severity: int
    since: float
    field: str
    value: Any
    time: float

    @classmethod
    def raised_now(cls, twin_id: str, alarm: Alarm) -> AlarmChange:
        return cls(
            twin_id,
            True,
            alarm.name,
            alarm.severity,
            alarm.since,
            alarm.field,
            alarm.value,
            alarm.since,
        )

    @classmethod
    def cleared_by(cls, twin_id: str, alarm: Alarm, value: Any, time: float) -> AlarmChange:
        return cls(
            twin_id, False, alarm.name, alarm.severity, alarm.since, alarm.field, value, time
        )

    def event_data(self) -> dict[str, Any]:
        """The payload of the ``alarm.raised`` / ``alarm.cleared`` event."""
        return {
            "name": self.name,
            "severity": self.severity,
            "since": self.since,
            "field": self.field,
            "value": self.value,
            "time": self.time,
        }
