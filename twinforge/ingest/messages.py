"""What ingest hands to the asset actors: validated telemetry, and what it refuses.

Every transport (MQTT, OPC UA, the simulator's tests) produces these, so validation, the
dead-letter store and the actors never know which protocol a value came by.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

#: Rejection reasons; stable strings, stored with each dead letter and counted in metrics.
NOT_JSON = "notJson"
NOT_AN_OBJECT = "notAnObject"
OVERSIZE = "oversize"
UNKNOWN_TWIN = "unknownTwin"
UNKNOWN_FIELD = "unknownField"
UNKNOWN_COMPONENT = "unknownComponent"
WRONG_TYPE = "wrongType"
BAD_TIMESTAMP = "badTimestamp"
OUT_OF_ORDER = "outOfOrder"
UNMAPPED_TOPIC = "unmappedTopic"


@dataclass(slots=True)
class TelemetryMessage:
    """Telemetry values of one twin (or one of its components) at one source time.

    ``values`` maps DTDL telemetry names to decoded JSON values already checked against the
    twin's interface. ``source_time`` is epoch seconds from the device when it sent one,
    else the time ingest received the message; ``received_time`` is always ingest's clock.
    """

    twin_id: str
    values: dict[str, Any]
    source_time: float
    received_time: float
    component: str | None = None
    origin: str = ""

    def fields(self) -> dict[str, Any]:
        """Values keyed by field path: ``name`` or ``component/name``."""
        if self.component is None:
            return self.values
        return {f"{self.component}/{name}": value for name, value in self.values.items()}


@dataclass(slots=True)
class Rejection:
    """A message ingest refused, kept in the dead-letter store with its reason."""

    reason: str
    message: str
    origin: str
    received_time: float
    payload: bytes = b""
    twin_id: str | None = None
    field: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class Intake(Protocol):
    """Where transports hand over what they receive (the ingest pipeline implements it).

    A transport decodes its protocol (topic and JSON payload, OPC UA data change) into a
    twin id, an optional component and a dict of values, and acknowledges the message to
    its sender only once the returned future is done: True when the values are durable in
    an asset actor's write-ahead log, False when they were refused and dead-lettered. An
    exception in the future means neither happened, so the sender must redeliver.
    """

    def offer(
        self,
        twin_id: str,
        values: dict[str, Any],
        *,
        component: str | None = None,
        source_time: float | None = None,
        origin: str = "",
        payload: bytes = b"",
        kind: str = "telemetry",
    ) -> Future[bool]:
        """Validate and route one message of DTDL ``kind`` ("telemetry", or "properties"
        for reported property values); see the class docstring for the future."""
        ...

    def reject(self, rejection: Rejection) -> Future[bool]:
        """Dead-letter a message the transport itself could not decode; the future is
        done (False) once the dead letter is stored, when the message may be acked."""
        ...
