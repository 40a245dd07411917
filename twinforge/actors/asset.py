"""The live state of one asset: ring buffers per field, last values, active alarms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twinforge.actors.alarms import Alarm, AlarmChange, AlarmRule
from twinforge.actors.ring_buffer import RingBuffer

#: Messages per asset remembered for dropping redeliveries.
DEDUP_WINDOW = 256


@dataclass(slots=True)
class LastValue:
    value: Any
    source_time: float
    received_time: float


@dataclass(slots=True)
class Asset:
    """One twin's live telemetry. Fields are DTDL telemetry names (``component/name``
    inside components); ``rules`` are the alarm rules of the twin's model."""

    twin_id: str
    model_id: str
    capacity: int
    rules: tuple[AlarmRule, ...] = ()
    series: dict[str, RingBuffer] = field(default_factory=dict)
    last: dict[str, LastValue] = field(default_factory=dict)
    alarms: dict[str, Alarm] = field(default_factory=dict)
    messages: int = 0
    duplicates: int = 0
    #: Keys of the newest messages: delivery is at least once (a broker redelivers what
    #: was not acknowledged, Ray retries a batch a crashed host had logged), and a message
    #: seen again with the same source time and fields is the same message.
    recent: dict[tuple[Any, ...], None] = field(default_factory=dict)
    #: Source time from which each field's next history point is due, and the earliest
    #: of those (the host keeps history at most once per interval per field).
    history_due: dict[str, float] = field(default_factory=dict)
    history_next: float = 0.0
    #: Source time from which the next history points of the values physics derives are
    #: due: all of them at once, a tenth as often as telemetry (HostConfig).
    derived_history_next: float = 0.0
    #: The same for the anomaly models' scores.
    scored_history_next: float = 0.0

    def apply(
        self,
        values: dict[str, Any],
        source_time: float,
        received_time: float,
        changes: list[AlarmChange] | None = None,
    ) -> bool:
        """Record one message's values; False if it is a duplicate of a recent one.

        A value older than the field's last is kept in the series but does not replace
        the last value (a late delivery). Alarms raised or cleared by the message are
        appended to ``changes`` if given."""
        key = (source_time, *values)
        if key in self.recent:
            self.duplicates += 1
            return False
        self.recent[key] = None
        if len(self.recent) > DEDUP_WINDOW:
            del self.recent[next(iter(self.recent))]
        self.messages += 1
        self.record(values, source_time, received_time, changes)
        return True

    def record(
        self,
        values: dict[str, Any],
        source_time: float,
        received_time: float,
        changes: list[AlarmChange] | None = None,
    ) -> None:
        """Record values without the duplicate check: the values physics derives from a
        message, which :meth:`apply` has let through."""
        for name, value in values.items():
            buffer = self.series.get(name)
            if buffer is None:
                buffer = self.series[name] = RingBuffer(self.capacity)
            buffer.append(source_time, value)
            last = self.last.get(name)
            if last is None:
                self.last[name] = LastValue(value, source_time, received_time)
            elif source_time >= last.source_time:
                # Updated in place: a new object per value would survive long enough to
                # be promoted to the GC's oldest generation and bring on full collections
                # of the whole host (50-150 ms each, measured).
                last.value, last.source_time, last.received_time = (
                    value,
                    source_time,
                    received_time,
                )
        if self.rules:
            self._evaluate(values, source_time, changes)

    def _evaluate(
        self, values: dict[str, Any], time: float, changes: list[AlarmChange] | None
    ) -> None:
        for rule in self.rules:
            if rule.field not in values:
                continue
            value = values[rule.field]
            if rule.breached(value):
                if rule.name not in self.alarms:
                    alarm = Alarm(rule.name, rule.severity, time, rule.field, value)
                    self.alarms[rule.name] = alarm
                    if changes is not None:
                        changes.append(AlarmChange.raised_now(self.twin_id, alarm))
            else:
                cleared = self.alarms.pop(rule.name, None)
                if cleared is not None and changes is not None:
                    changes.append(AlarmChange.cleared_by(self.twin_id, cleared, value, time))

    def snapshot(self) -> dict[str, Any]:
        """Last values, alarms and counts as plain JSON-ready data."""
        return {
            "twinId": self.twin_id,
            "model": self.model_id,
            "messages": self.messages,
            "duplicates": self.duplicates,
            "last": {
                name: {
                    "value": v.value,
                    "sourceTime": v.source_time,
                    "receivedTime": v.received_time,
                }
                for name, v in self.last.items()
            },
            "alarms": [
                {
                    "name": a.name,
                    "severity": a.severity,
                    "since": a.since,
                    "field": a.field,
                    "value": a.value,
                }
                for a in self.alarms.values()
            ],
        }

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint keeps (numpy arrays inside; pickled by the log)."""
        return {
            "model_id": self.model_id,
            "messages": self.messages,
            "series": {name: buffer.state() for name, buffer in self.series.items()},
            "last": {n: (v.value, v.source_time, v.received_time) for n, v in self.last.items()},
            "alarms": list(self.alarms.values()),
            "recent": list(self.recent),
            "duplicates": self.duplicates,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.messages = state["messages"]
        self.series = {n: RingBuffer.from_state(s) for n, s in state["series"].items()}
        self.last = {n: LastValue(*v) for n, v in state["last"].items()}
        self.alarms = {a.name: a for a in state["alarms"]}
        self.recent = dict.fromkeys(state.get("recent", ()))
        self.duplicates = state.get("duplicates", 0)
