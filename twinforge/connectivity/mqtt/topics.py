"""The MQTT topic and payload contract between twinforge and the devices of a plant.

Devices to twinforge:

* ``twins/{twinId}/telemetry`` and ``twins/{twinId}/telemetry/{component}``: a JSON object
  of DTDL telemetry values; ``twins/{twinId}/properties``: reported property values. In
  either, ``"$ts"`` is the source time (epoch seconds or ISO 8601). Other topics and
  payload shapes reach ingest through topic mappings.

twinforge to devices, and back:

* a command is published with QoS 1 to ``twins/{twinId}/commands/{command}`` with the
  payload ``{"request": <value or null>, "responseTopic": "...", "correlationId": "<hex>"}``;
  the response topic is ``twins/{twinId}/replies/{serverClientId}``, under the twin the
  command went to, so a broker ACL can let only that twin's device answer;
* the device answers on that response topic with ``{"status": 200, "response": <value>,
  "correlationId": "<hex>"}`` or ``{"status": 4xx/5xx, "error": "...", "correlationId":
  "<hex>"}`` (see :mod:`twinforge.connectivity.command_reply`). Under MQTT v5 the request
  also carries the ResponseTopic and CorrelationData properties, which win over the
  payload's fields; MQTT 3.1.1 has only the payload form.

Both ends (the server's adapters and the simulated plant) read it from here.
"""

from __future__ import annotations

from typing import Final

import paho.mqtt.client as mqtt

__all__ = [
    "COMMAND_SUBSCRIPTION",
    "CORRELATION_KEY",
    "INGEST_SUBSCRIPTIONS",
    "MQTT_3_1_1",
    "MQTT_5",
    "PROPERTIES",
    "REPLIES",
    "REQUEST_KEY",
    "RESPONSE_TOPIC_KEY",
    "TELEMETRY",
    "TIMESTAMP_KEY",
    "check_protocol",
    "command_topic",
    "parse_twin_topic",
    "reply_subscription",
    "reply_topic",
    "telemetry_topic",
]

#: The last level of a twin's topic: what its payload holds.
TELEMETRY: Final = "telemetry"
PROPERTIES: Final = "properties"
COMMANDS: Final = "commands"
REPLIES: Final = "replies"

#: What the server subscribes to for ingest, and a device for the commands of any twin.
INGEST_SUBSCRIPTIONS = (
    f"twins/+/{TELEMETRY}",
    f"twins/+/{TELEMETRY}/+",
    f"twins/+/{PROPERTIES}",
)
COMMAND_SUBSCRIPTION = f"twins/+/{COMMANDS}/+"

TIMESTAMP_KEY: Final = "$ts"
REQUEST_KEY: Final = "request"
RESPONSE_TOPIC_KEY: Final = "responseTopic"
CORRELATION_KEY: Final = "correlationId"

MQTT_5 = mqtt.MQTTv5
#: The embedded broker (amqtt) speaks MQTT 3.1.1 only.
MQTT_3_1_1 = mqtt.MQTTv311
_PROTOCOLS = frozenset({MQTT_5, MQTT_3_1_1})


def telemetry_topic(twin_id: str, component: str | None = None) -> str:
    """Where a device publishes ``twin_id``'s telemetry (of ``component``, if given)."""
    base = f"twins/{twin_id}/{TELEMETRY}"
    return base if component is None else f"{base}/{component}"


def command_topic(twin_id: str, command: str) -> str:
    """Where the server publishes ``command`` for ``twin_id``'s device."""
    return f"twins/{twin_id}/{COMMANDS}/{command}"


def reply_topic(twin_id: str, client_id: str) -> str:
    """Where ``twin_id``'s device answers a command sent by the server client ``client_id``."""
    return f"twins/{twin_id}/{REPLIES}/{client_id}"


def reply_subscription(client_id: str) -> str:
    """What the server client ``client_id`` subscribes to for the replies to its commands."""
    return reply_topic("+", client_id)


def parse_twin_topic(levels: list[str]) -> tuple[str, str | None, str] | None:
    """``(twin_id, component, TELEMETRY or PROPERTIES)`` of an ingest topic split at
    ``/``, or None when it is not one."""
    if len(levels) < 3 or levels[0] != "twins" or not levels[1]:
        return None
    if levels[2] == TELEMETRY and len(levels) <= 4:
        return levels[1], levels[3] if len(levels) == 4 else None, TELEMETRY
    if levels[2] == PROPERTIES and len(levels) == 3:
        return levels[1], None, PROPERTIES
    return None


def check_protocol(protocol: int) -> int:
    """``protocol`` if it is ``paho.mqtt.client.MQTTv5`` or ``MQTTv311``, else ValueError."""
    if isinstance(protocol, bool) or protocol not in _PROTOCOLS:
        raise ValueError(
            f"protocol: must be paho.mqtt.client.MQTTv5 (5) or MQTTv311 (4), got {protocol!r}"
        )
    return protocol
