"""MQTT telemetry ingest (paho-mqtt): topics and payloads in, acknowledged once durable.

Topics and payloads follow :mod:`twinforge.connectivity.mqtt.topics`; other topics and
payload shapes are read through :class:`TopicMapping` configuration.

Messages are subscribed with QoS 1 and acknowledged by hand (paho's ``manual_ack``) only
when the pipeline says they are durable or dead-lettered; the session is persistent, so a
broker keeps what arrives while the server is down and redelivers what was not
acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from twinforge.connectivity.mqtt import topics
from twinforge.connectivity.mqtt.client import BufferedClient, Subscriptions, start_client
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.topics import INGEST_SUBSCRIPTIONS, MQTT_5, TIMESTAMP_KEY
from twinforge.ingest.messages import (
    BAD_TIMESTAMP,
    NOT_AN_OBJECT,
    NOT_JSON,
    OVERSIZE,
    UNMAPPED_TOPIC,
    Intake,
    Rejection,
)
from twinforge.lifecycle import Running
from twinforge.twin_models import PROPERTY, TELEMETRY, ValueKind

log = logging.getLogger(__name__)

#: Payloads larger than this are refused unread (dead-lettered with a capped copy).
MAX_PAYLOAD_BYTES = 256 * 1024
#: What a convention topic's last level says its payload holds.
_KIND_OF_TOPIC: dict[str, ValueKind] = {topics.TELEMETRY: TELEMETRY, topics.PROPERTIES: PROPERTY}


class TopicMapping(BaseModel):
    """Reads telemetry from a topic outside the convention.

    ``topic`` is an MQTT filter whose ``+`` levels are numbered from 1; ``twin`` and
    ``component`` may use them as ``{1}``, ``{2}``. ``fields`` maps DTDL field names to
    dotted paths in the JSON payload (empty: the payload object's own keys);
    ``timestamp`` is the path of the source time, if the payload has one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(min_length=1, max_length=1024)
    twin: str = Field(min_length=1)
    component: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    timestamp: str | None = None
    kind: ValueKind = TELEMETRY

    def match(self, topic: str) -> list[str] | None:
        """The ``+`` levels' values if ``topic`` matches the filter, else None."""
        pattern, levels = self.topic.split("/"), topic.split("/")
        captured: list[str] = []
        for index, part in enumerate(pattern):
            if part == "#":
                return captured
            if index >= len(levels):
                return None
            if part == "+":
                captured.append(levels[index])
            elif part != levels[index]:
                return None
        return captured if len(levels) == len(pattern) else None


_MAPPINGS = TypeAdapter(list[TopicMapping])


def load_topic_mappings(text: str) -> list[TopicMapping]:
    """Mappings from JSON text; pydantic's ValidationError names the bad field."""
    return _MAPPINGS.validate_json(text)


class MqttIngest(Running):
    """Subscribes to telemetry topics and hands each message to an :class:`Intake`."""

    def __init__(
        self,
        intake: Intake,
        endpoint: MqttEndpoint,
        *,
        client_id: str | None = None,
        mappings: Sequence[TopicMapping] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        session_expiry_s: int = 24 * 3600,
        receive_maximum: int = 2000,
        protocol: int = MQTT_5,
        prefix: str = "",
    ) -> None:
        self.intake = intake
        self.endpoint = endpoint
        self.mappings = tuple(mappings)
        self.max_payload_bytes = max_payload_bytes
        self.received = 0
        #: Messages settled (durable or dead-lettered) and, at QoS 1, acknowledged.
        self.acknowledged = 0
        #: Messages received but not acknowledged when :meth:`stop` disconnected: the
        #: broker redelivers them on the next start of this session (this client id).
        self.left_for_redelivery = 0
        self._stopping = False
        self.client_id = client_id or f"twinforge-ingest-{uuid.uuid4().hex[:8]}"
        self.protocol = protocol
        if prefix and (not prefix.endswith("/") or any(c in prefix for c in "+#\0")):
            raise ValueError(f"prefix: must end with '/' and hold no wildcards, got {prefix!r}")
        #: Put before the convention topics (``site-a/twins/...``), to share a broker.
        self.prefix = prefix
        v5 = protocol == mqtt.MQTTv5
        self._client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            manual_ack=True,
            # MQTT 3.1.1 (the embedded broker speaks only that): a persistent session
            clean_session=None if v5 else False,
        )
        # A mapping's filter the broker refuses must not hold up the convention topics.
        self._subscriptions = Subscriptions(
            self._client, endpoint.url, self._filters, all_needed=False
        )
        self.connected = self._subscriptions.ready
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=5)
        self._client.max_queued_messages_set(0)
        endpoint.apply(self._client)
        self._connect_properties: Properties | None = None
        if v5:
            self._connect_properties = Properties(PacketTypes.CONNECT)
            # A persistent session: the broker queues QoS 1 messages while we are away.
            self._connect_properties.SessionExpiryInterval = session_expiry_s
            # Let the broker send many unacknowledged messages: acks wait for durability
            # (20-40 ms, so 400-800 in flight at 20,000 msgs/s). Not too many: Mosquitto
            # looks up each acknowledged message in its in-flight list. With 65,535 in
            # flight under overload it used 82% of a core; with 8,000, a 0.4 s pause of
            # ingest at 20,000 msgs/s filled the list, Mosquitto went to 72% of a core and
            # never caught up (p99 6.6 s). With 2,000 the same bench held 20,000 msgs/s
            # for 60 s at p99 59-82 ms, the broker at 31%.
            # (MQTT 3.1.1 has no such setting: the broker's own limit applies, 20 in
            # Mosquitto's default configuration.)
            self._connect_properties.ReceiveMaximum = receive_maximum
        self._lock = threading.Lock()
        #: Futures of messages not yet acknowledged -> the messages' ids.
        self._unacknowledged: dict[Future[bool], list[int]] = {}

    def start(self, timeout: float = 10.0) -> MqttIngest:
        """Connect and return once subscribed; ConnectionError with the cause when the
        broker cannot be reached or refuses (paho reconnects by itself later on)."""
        session: dict[str, Any] = {}
        if self._connect_properties is not None:
            session = {"clean_start": False, "properties": self._connect_properties}
        start_client(self._client, self.endpoint, self._subscriptions, timeout, **session)
        return self

    def stop(self) -> None:
        """Disconnect, keeping the session; what was not acknowledged by then (still in
        the pipeline, or failed) is counted in :attr:`left_for_redelivery`."""
        with self._lock:
            # From here no acknowledgement is sent: one queued after the DISCONNECT
            # would never reach the broker, yet be counted as acknowledged.
            self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self.left_for_redelivery = self.received - self.acknowledged

    def _filters(self) -> list[str]:
        return [self.prefix + t for t in INGEST_SUBSCRIPTIONS] + [m.topic for m in self.mappings]

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.received += 1
        try:
            future = self._handle(message.topic, message.payload)
        except Exception:  # never let one message stop the network thread
            log.exception("ingest of a message on %r failed", message.topic)
            return  # not acknowledged: the broker redelivers it after a reconnect
        # Messages of one batch share its future: one callback acknowledges them all.
        with self._lock:
            mids = self._unacknowledged.get(future)
            register = mids is None
            if mids is None:
                mids = self._unacknowledged[future] = []
            mids.append(message.mid if message.qos > 0 else 0)  # 0: nothing to send
        if register:
            future.add_done_callback(self._ack)

    def _ack(self, done: Future[bool]) -> None:
        with self._lock:
            mids = self._unacknowledged.pop(done)
            if done.exception() is not None or self._stopping:
                return  # not settled, or too late to say so: left to redelivery
            # Under the lock, so that stop() finds each counted ack queued before its
            # DISCONNECT (paho sends queued packets in order).
            self._client.ack_many(mid for mid in mids if mid)
            self.acknowledged += len(mids)

    # -- decoding ------------------------------------------------------------------------

    def _handle(self, topic: str, payload: bytes) -> Future[bool]:
        origin = f"mqtt:{topic}"
        route = self._route(topic)
        if route is None:
            return self._reject(UNMAPPED_TOPIC, f"no mapping for topic {topic!r}", origin, payload)
        twin_id, component, kind, mapping = route
        if len(payload) > self.max_payload_bytes:
            return self._reject(
                OVERSIZE,
                f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}",
                origin,
                payload,
                twin_id,
            )
        try:
            # orjson: 7x faster than json on a reading, and a tenth of ingest's time was
            # json; strict JSON (no NaN), nesting limited to 1024 levels.
            document = orjson.loads(payload)
        except ValueError as error:
            return self._reject(NOT_JSON, f"payload is not JSON: {error}", origin, payload, twin_id)
        if not isinstance(document, dict):
            return self._reject(
                NOT_AN_OBJECT,
                f"payload must be a JSON object, got {type(document).__name__}",
                origin,
                payload,
                twin_id,
            )
        if mapping is None:
            raw_ts = document.pop(TIMESTAMP_KEY, None)
            values = document
        else:
            raw_ts = _path(document, mapping.timestamp) if mapping.timestamp else None
            values = (
                {name: _path(document, path) for name, path in mapping.fields.items()}
                if mapping.fields
                else document
            )
            values = {k: v for k, v in values.items() if v is not _MISSING}
            raw_ts = None if raw_ts is _MISSING else raw_ts
        try:
            source_time = parse_source_time(raw_ts)
        except ValueError as error:
            return self._reject(BAD_TIMESTAMP, str(error), origin, payload, twin_id, TIMESTAMP_KEY)
        return self.intake.offer(
            twin_id,
            values,
            component=component,
            source_time=source_time,
            origin=origin,
            payload=payload,
            kind=kind,
        )

    def _route(self, topic: str) -> tuple[str, str | None, ValueKind, TopicMapping | None] | None:
        levels = topic.removeprefix(self.prefix).split("/") if topic.startswith(self.prefix) else []
        convention = topics.parse_twin_topic(levels)
        if convention is not None:
            twin_id, component, level = convention
            return twin_id, component, _KIND_OF_TOPIC[level], None
        for mapping in self.mappings:
            captured = mapping.match(topic)
            if captured is not None:
                try:
                    twin = mapping.twin.format(None, *captured)
                    component = (
                        mapping.component.format(None, *captured) if mapping.component else None
                    )
                except (IndexError, KeyError):
                    continue
                return twin, component, mapping.kind, mapping
        return None

    def _reject(
        self,
        reason: str,
        message: str,
        origin: str,
        payload: bytes,
        twin_id: str | None = None,
        field: str | None = None,
    ) -> Future[bool]:
        rejection = Rejection(reason, message, origin, time.time(), payload, twin_id, field)
        return self.intake.reject(rejection)


_MISSING = object()


def _path(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``a.b.0.c``) in a decoded JSON document."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def parse_source_time(raw: Any) -> float | None:
    """Epoch seconds from a payload's timestamp: a number, an ISO 8601 string, or None."""
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if not 0 <= raw < 1e11:  # finite and not milliseconds by mistake
            raise ValueError(f"$ts: {raw!r} is not epoch seconds between 1970 and 5138")
        return float(raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"$ts: {raw[:64]!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            raise ValueError(f"$ts: {raw[:64]!r} has no time zone offset")
        return parsed.timestamp()
    raise ValueError(f"$ts: must be epoch seconds or an ISO 8601 string, got {type(raw).__name__}")
