"""The plant simulator: :class:`~twinforge.sim.machines.PlantPhysics` run in real
time as MQTT telemetry and an OPC UA PLC (:class:`PlantSimulator`).

Wire contracts:

* MQTT as :mod:`twinforge.connectivity.mqtt.topics` says: telemetry (QoS 1) with every
  DTDL telemetry field of the twin (inherited ones too) and ``"$ts"`` in epoch seconds;
  commands answered on the MQTT v5 ResponseTopic with the same CorrelationData when the
  request has them, else on the payload's ``"responseTopic"`` with its ``"correlationId"``
  echoed in the reply (the MQTT 3.1.1 form, which has no properties);
* OPC UA: namespace ``urn:twinforge:plant`` (index 2), an object ``ns=2;s={twinId}`` per
  equipment twin, a Double variable ``ns=2;s={twinId}.{field}`` per telemetry field, a
  method ``ns=2;s={twinId}.{command}`` (one String in: the request as JSON; one String out:
  the response object above) and a writable variable per writable DTDL property.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from asyncua import Server, ua
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.topics import (
    COMMAND_SUBSCRIPTION,
    CORRELATION_KEY,
    REQUEST_KEY,
    RESPONSE_TOPIC_KEY,
    TIMESTAMP_KEY,
    check_protocol,
    telemetry_topic,
)
from twinforge.sim.layout import PlantLayout
from twinforge.sim.machines import ActiveFault, CommandError, PlantPhysics, ScheduledFault
from twinforge.sim.opcua_security import PlcSecurity

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:twinforge:plant"
NAMESPACE_INDEX = 2

#: Most telemetry messages awaiting their PUBACK before publishing waits.
MAX_PENDING = 20_000
#: Longest response topic taken from a payload (the MQTT topic limit).
MAX_TOPIC_BYTES = 65_535
#: A broker on this machine's default port, anonymous: the simulator's default.
LOCAL_BROKER = MqttEndpoint("127.0.0.1")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One MQTT command as the device reads it. ``response_topic`` None: nowhere to answer.
    ``correlation_data`` is the v5 property, echoed as one; ``correlation_id`` goes into
    the JSON reply. ``error`` set: the payload is unusable and is answered with it."""

    response_topic: str | None
    correlation_data: bytes | None
    correlation_id: str | None
    request: Any = None
    error: CommandError | None = None


def read_command(payload: bytes, properties: Properties | None = None) -> CommandRequest:
    """Read a command's payload and MQTT v5 properties; the properties win over the
    payload's ``responseTopic`` and ``correlationId`` fields."""
    body: Any = None
    error: CommandError | None = None
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        error = CommandError(400, f"payload: not JSON ({exc})")
    fields: dict[str, Any] = body if isinstance(body, dict) else {}
    if error is None and REQUEST_KEY not in fields:
        error = CommandError(400, 'payload: must be a JSON object {"request": <value or null>}')
    data = getattr(properties, "CorrelationData", None)
    data = bytes(data) if data else None
    field_id = fields.get(CORRELATION_KEY)
    if data is not None:
        correlation_id: str | None = data.hex()
    else:
        correlation_id = field_id if isinstance(field_id, str) and field_id else None
    topic = getattr(properties, "ResponseTopic", None) or _topic_field(
        fields.get(RESPONSE_TOPIC_KEY)
    )
    return CommandRequest(topic, data, correlation_id, fields.get(REQUEST_KEY), error)


def _topic_field(value: Any) -> str | None:
    """A payload's response topic, if one can be published to."""
    if not isinstance(value, str) or not value or any(c in value for c in "+#\x00"):
        return None
    return value if len(value.encode("utf-8", "replace")) <= MAX_TOPIC_BYTES else None


class PlantSimulator:
    """Runs :class:`PlantPhysics` in real time over MQTT and OPC UA.

    ``rate_hz`` ticks per second (0: no ticking, for ``publish_batch`` only); every tick
    advances the simulation by ``time_scale / rate_hz`` simulated seconds. Telemetry is
    stamped with the wall clock, or with ``plant_clock`` the plant's: the start time plus
    the simulated seconds, so that twins stepping FMUs by the stamps keep the plant's
    pace when ``time_scale`` is not 1.
    ``mqtt_endpoint`` is the broker (with TLS and login, if it wants them); None leaves
    MQTT out. ``opcua_port`` None leaves OPC UA out (0: a free port), and ``opcua_security`` serves it secured (else with no security, for tests). With
    ``subscribe_all`` True the simulator takes commands for every twin (answering 404 for
    twins it does not have), so leave it False on a broker shared with other devices.
    ``mqtt_protocol`` is ``paho.mqtt.client.MQTTv5`` or ``MQTTv311`` (the embedded broker);
    under 3.1.1 commands are answered only in the payload form. ``published`` counts
    telemetry messages the broker acknowledged; ``commands_unanswerable`` counts commands
    not run because they named no response topic.
    """

    def __init__(
        self,
        layout: PlantLayout,
        *,
        mqtt_endpoint: MqttEndpoint | None = LOCAL_BROKER,
        opcua_host: str = "127.0.0.1",
        opcua_port: int | None = 0,
        opcua_security: PlcSecurity | None = None,
        rate_hz: float = 1.0,
        time_scale: float = 1.0,
        seed: int = 7,
        schedule: Iterable[ScheduledFault] = (),
        subscribe_all: bool = False,
        client_id: str = "",
        mqtt_protocol: int = mqtt.MQTTv5,
        plant_clock: bool = False,
    ) -> None:
        if not (math.isfinite(rate_hz) and rate_hz >= 0):
            raise ValueError(f"rate_hz: must be a finite number >= 0, got {rate_hz}")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale: must be a finite number > 0, got {time_scale}")
        if opcua_port is not None and not 0 <= opcua_port <= 65535:
            raise ValueError(f"opcua_port: must be a TCP port 0-65535, got {opcua_port}")
        self.layout = layout
        self.physics = PlantPhysics(layout, seed=seed, schedule=schedule)
        self.mqtt_endpoint = mqtt_endpoint
        self.opcua_host, self.opcua_port = opcua_host, opcua_port
        self.opcua_security = opcua_security
        self.rate_hz, self.time_scale = rate_hz, time_scale
        self.subscribe_all = subscribe_all
        self.mqtt_protocol = check_protocol(mqtt_protocol)
        self.client_id = client_id or f"twinforge-sim-{time.time_ns():x}"
        self.published = 0  # telemetry messages acknowledged by the broker
        self.sent = 0  # telemetry messages handed to the MQTT client
        self.commands_handled = 0
        self.commands_unanswerable = 0
        self._acks = threading.Condition()
        self._telemetry_mids: set[int] = set()
        self._reply_mids: set[int] = set()
        self._early_acks: set[int] = set()
        self._last_ts = 0.0
        self._epoch = time.time() - self.physics.now if plant_clock else None
        self._client: mqtt.Client | None = None
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._writable: dict[tuple[str, str], float] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def opcua_endpoint(self) -> str:
        if self.opcua_port is None:
            raise RuntimeError("opcua_endpoint: OPC UA is off (opcua_port=None)")
        return f"opc.tcp://{self.opcua_host}:{self.opcua_port}"

    @property
    def tick_seconds(self) -> float:
        """Simulated seconds per tick."""
        return self.time_scale / self.rate_hz if self.rate_hz > 0 else self.time_scale

    # Faults, delegated so callers need not reach into the physics.
    def inject(
        self,
        twin_id: str,
        fault: str,
        duration_s: float | None = None,
        *,
        field: str | None = None,
        ramp_s: float | None = None,
    ) -> ActiveFault:
        return self.physics.inject(twin_id, fault, duration_s, field=field, ramp_s=ramp_s)

    def clear(self, twin_id: str, fault: str | None = None) -> list[ActiveFault]:
        return self.physics.clear(twin_id, fault)

    def active_faults(self, twin_id: str | None = None) -> list[ActiveFault]:
        return self.physics.active_faults(twin_id)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the broker, serve OPC UA, and start ticking."""
        try:
            if self.mqtt_endpoint is not None:
                await asyncio.to_thread(self._connect_mqtt)
            if self.opcua_port is not None:
                await self._start_opcua()
        except BaseException:
            await self.stop()
            raise
        if self.rate_hz > 0:
            self._ticker = asyncio.create_task(self._tick_loop(), name="plant-simulator-ticks")

    async def stop(self) -> None:
        """Stop ticking, close the OPC UA server and leave the broker; safe to repeat."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(self._disconnect, client)

    def start_background(self, timeout: float = 60.0) -> None:
        """Run the simulator on its own event loop in a daemon thread (for tests, the CLI)."""
        if self._thread is not None:
            raise RuntimeError("start_background: the simulator is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="plant-simulator", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            raise
        self._loop, self._thread = loop, thread

    def stop_background(self, timeout: float = 60.0) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, thread = self._loop, self._thread
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> PlantSimulator:
        self.start_background()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_background()

    # -- ticking -------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate_hz
        deadline = loop.time()
        while True:
            try:
                await self._tick()
            except Exception:  # one bad tick (a broker hiccup) must not end the simulation
                log.exception("simulator tick failed")
            deadline += period
            delay = deadline - loop.time()
            if delay < 0:  # running behind: skip ticks rather than burst to catch up
                deadline, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def _tick(self) -> None:
        if self._server is not None:
            await self._read_writable_properties()
        values = self.physics.step(self.tick_seconds)
        ts = self._source_time()
        if self._client is not None:
            self._publish(values, ts)
        if self._server is not None:
            await self._write_opcua(values, ts)

    def _source_time(self) -> float:
        # Strictly increasing, so consecutive messages of a twin never share a source time.
        now = time.time() if self._epoch is None else self._epoch + self.physics.now
        self._last_ts = max(now, self._last_ts + 1e-6)
        return self._last_ts

    # -- MQTT ------------------------------------------------------------------------------------
    def _connect_mqtt(self) -> None:
        endpoint = self.mqtt_endpoint
        assert endpoint is not None  # start() connects only with an endpoint
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.mqtt_protocol,
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)  # unbounded: publish_batch queues whole ticks
        ready = threading.Event()
        failure: list[str] = []

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                failure.append(str(reason))
                ready.set()
                return
            if self.subscribe_all:
                c.subscribe(COMMAND_SUBSCRIPTION, qos=1)
            else:
                c.subscribe([(f"twins/{t}/commands/+", 1) for t in self.physics.twin_ids])

        def on_subscribe(_c: mqtt.Client, _u: Any, _m: Any, reasons: Any, _p: Any) -> None:
            bad = [str(r) for r in reasons if r.is_failure]
            if bad:
                failure.append(f"subscribe refused: {bad[0]}")
            ready.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_command
        endpoint.apply(client)
        try:
            client.connect(endpoint.host, endpoint.port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(
                f"mqtt: cannot reach the broker at {endpoint.url}: {exc}"
            ) from exc
        client.loop_start()
        if not ready.wait(15.0) or failure:
            client.loop_stop()
            client.disconnect()
            why = failure[0] if failure else "no CONNACK/SUBACK within 15 s"
            raise ConnectionError(f"mqtt: broker {endpoint.url}: {why}")
        self._client = client

    def _disconnect(self, client: mqtt.Client) -> None:
        self._wait_acks(10.0, raise_on_timeout=False)
        client.disconnect()
        client.loop_stop()

    def _publish(self, values: Mapping[str, Mapping[str, float]], ts: float) -> int:
        client = self._client
        assert client is not None
        count = 0
        for twin_id, fields in values.items():
            payload = json.dumps({**fields, TIMESTAMP_KEY: ts}, separators=(",", ":"))
            with self._acks:
                # Back-pressure: paho's 16-bit message ids must not wrap among pending ones.
                self._acks.wait_for(lambda: self.sent - self.published < MAX_PENDING, 60.0)
                self.sent += 1
            # Never publish while holding _acks: paho calls _on_publish under its own lock.
            info = client.publish(telemetry_topic(twin_id), payload, qos=1)
            self._track(info.mid, telemetry=True)
            count += 1
        return count

    def _track(self, mid: int, *, telemetry: bool) -> None:
        """Register a sent message id; its PUBACK may already have come."""
        with self._acks:
            if mid in self._early_acks:
                self._early_acks.discard(mid)
                if telemetry:
                    self._count_ack()
            else:
                (self._telemetry_mids if telemetry else self._reply_mids).add(mid)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._acks:
            if mid in self._telemetry_mids:
                self._telemetry_mids.discard(mid)
                self._count_ack()
            elif mid in self._reply_mids:
                self._reply_mids.discard(mid)
            else:
                self._early_acks.add(mid)

    def _count_ack(self) -> None:
        self.published += 1
        self._acks.notify_all()

    def _wait_acks(self, timeout: float, *, raise_on_timeout: bool = True) -> None:
        with self._acks:
            done = self._acks.wait_for(lambda: self.published >= self.sent, timeout)
        if not done and raise_on_timeout:
            raise TimeoutError(
                f"publish_batch: {self.sent - self.published} messages unacknowledged "
                f"after {timeout} s"
            )

    def publish_batch(self, ticks: int = 1, *, timeout: float = 120.0) -> int:
        """Advance ``ticks`` ticks as fast as possible, publish every twin's telemetry per
        tick, and wait until the broker acknowledged all of it; the messages published.
        Call from any thread but the simulator's own event loop."""
        if self._client is None:
            raise RuntimeError("publish_batch: start the simulator first (MQTT not connected)")
        if ticks < 1:
            raise ValueError(f"ticks: must be >= 1, got {ticks}")
        count = 0
        for _ in range(ticks):
            count += self._publish(self.physics.step(self.tick_seconds), self._source_time())
        self._wait_acks(timeout)
        return count

    def _on_command(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[0] != "twins" or parts[2] != "commands":
            return
        twin_id, command = parts[1], parts[3]
        received = read_command(message.payload, getattr(message, "properties", None))
        if received.response_topic is None:
            # Not run: its sender could never learn whether the machine moved.
            self.commands_unanswerable += 1
            log.warning(
                "command %s on %s names no response topic (ResponseTopic or %r); not run",
                command,
                twin_id,
                RESPONSE_TOPIC_KEY,
            )
            return
        if received.error is not None:
            reply = {"status": received.error.status, "error": received.error.message}
        else:
            reply = self.physics.execute(twin_id, command, received.request)
        self.commands_handled += 1
        if received.correlation_id is not None:
            reply[CORRELATION_KEY] = received.correlation_id
        properties = None
        if received.correlation_data is not None and self.mqtt_protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = received.correlation_data
        info = client.publish(
            received.response_topic, json.dumps(reply), qos=1, properties=properties
        )
        self._track(info.mid, telemetry=False)

    # -- OPC UA ------------------------------------------------------------------------------------
    async def _start_opcua(self) -> None:
        if self.opcua_port == 0:
            self.opcua_port = _free_port(self.opcua_host)
        security = self.opcua_security
        server = Server(user_manager=security.user_manager()) if security else Server()
        await server.init()
        server.set_endpoint(self.opcua_endpoint)
        server.set_server_name("twinforge plant simulator")
        if security:
            await security.apply(server)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        index = await server.register_namespace(NAMESPACE_URI)
        if index != NAMESPACE_INDEX:
            raise RuntimeError(f"opcua: {NAMESPACE_URI} got namespace index {index}, not 2")
        self._server = server
        last = {t: self.physics.values(t) for t in self.physics.twin_ids}
        for twin_id in self.physics.twin_ids:
            node = await server.nodes.objects.add_object(
                ua.NodeId(twin_id, NAMESPACE_INDEX), ua.QualifiedName(twin_id, NAMESPACE_INDEX)
            )
            for name in self.physics.telemetry_fields(twin_id):
                await node.add_variable(
                    self._node_id(twin_id, name),
                    ua.QualifiedName(name, NAMESPACE_INDEX),
                    ua.Variant(last[twin_id][name], ua.VariantType.Double),
                )
            for name in self.physics.command_names(twin_id):
                await node.add_method(
                    self._node_id(twin_id, name),
                    ua.QualifiedName(name, NAMESPACE_INDEX),
                    self._opcua_method(twin_id, name),
                    [ua.VariantType.String],
                    [ua.VariantType.String],
                )
            for name, value in self.physics.writable_properties(twin_id).items():
                initial = float(value) if isinstance(value, int | float) else 0.0
                variable = await node.add_variable(
                    self._node_id(twin_id, name),
                    ua.QualifiedName(name, NAMESPACE_INDEX),
                    ua.Variant(initial, ua.VariantType.Double),
                )
                await variable.set_writable()
                self._writable[twin_id, name] = initial
        await server.start()

    @staticmethod
    def _node_id(twin_id: str, name: str) -> ua.NodeId:
        return ua.NodeId(f"{twin_id}.{name}", NAMESPACE_INDEX)

    def _opcua_method(self, twin_id: str, command: str) -> Callable[..., Any]:
        async def call(_parent: ua.NodeId, argument: ua.Variant | None = None) -> list[ua.Variant]:
            text = argument.Value if isinstance(argument, ua.Variant) else argument
            if not isinstance(text, str):
                reply = {"status": 400, "error": "request: must be a String of JSON text"}
            else:
                try:
                    request = json.loads(text)
                except ValueError as exc:
                    reply = {"status": 400, "error": f"request: not JSON ({exc})"}
                else:
                    reply = self.physics.execute(twin_id, command, request)
            self.commands_handled += 1
            return [ua.Variant(json.dumps(reply), ua.VariantType.String)]

        return call

    async def _write_opcua(self, values: Mapping[str, Mapping[str, float]], ts: float) -> None:
        server = self._server
        assert server is not None
        source = datetime.fromtimestamp(ts, UTC)
        for twin_id, fields in values.items():
            for name, value in fields.items():
                await server.write_attribute_value(
                    self._node_id(twin_id, name),
                    ua.DataValue(
                        ua.Variant(value, ua.VariantType.Double),
                        SourceTimestamp=source,
                        ServerTimestamp=datetime.now(UTC),
                    ),
                )

    async def _read_writable_properties(self) -> None:
        """Apply what OPC UA clients wrote to writable properties; a value outside the
        machine's limits is written back to the last good one."""
        server = self._server
        assert server is not None
        for (twin_id, name), current in self._writable.items():
            node = server.get_node(self._node_id(twin_id, name))
            value = await node.read_value()
            if value == current:
                continue
            try:
                self.physics.set_property(twin_id, name, value)
            except CommandError as exc:
                log.warning("opcua write refused: %s", exc.message)
                await node.write_value(ua.Variant(current, ua.VariantType.Double))
            else:
                self._writable[twin_id, name] = float(value)
