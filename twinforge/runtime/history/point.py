"""One stored sample: a telemetry or property value of a twin's field at a source time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twinforge.twin_models import TELEMETRY, ValueKind


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """A value of ``twin_id``'s ``field`` at ``ts``.

    ``ts`` is the source timestamp, timezone-aware; stores return it in UTC. ``value`` is
    JSON: a number, bool, string, None, or a list/dict of those (tuples come back as lists).
    A store keeps one point per ``(twin_id, field, ts)``: writing the same key again
    replaces the value, so replays and retries never duplicate history.
    """

    twin_id: str
    field: str
    ts: datetime
    value: Any
    kind: ValueKind = TELEMETRY
