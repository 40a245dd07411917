"""The plant simulator's transports: MQTT v5 against Mosquitto on 127.0.0.1:1883 and an
asyncua client against the simulator's OPC UA server (the MQTT 3.1.1 side, against the
embedded broker, is in test_embedded_commands.py).

Twin ids carry a per-run prefix, and the simulator takes commands only for its own twins,
so parallel runs on the shared broker do not see each other's messages.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from asyncua import Client, ua
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.sim_run import RUN
from support.sim_run import run_id as _id

from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.sim.layout import PlantLayout, sample_plant
from twinforge.sim.simulator import NAMESPACE_URI, PlantSimulator
from twinforge.twin_models import parse_models, validate_telemetry

BROKER = ("127.0.0.1", 1883)


class Listener:
    """A real MQTT client collecting what arrives on some topics."""

    def __init__(self, topics: list[str]) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex}",
            protocol=mqtt.MQTTv5,
        )
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.messages.put(m)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(*BROKER)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        assert subscribed.wait(10), "no SUBACK from the broker"

    def wait_for(
        self, predicate: Callable[[mqtt.MQTTMessage], bool], timeout: float = 15.0
    ) -> mqtt.MQTTMessage:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if predicate(message):
                return message
        raise AssertionError(f"no matching message within {timeout} s")

    def telemetry(
        self, twin: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        topic = f"twins/{twin}/telemetry"
        message = self.wait_for(lambda m: m.topic == topic and predicate(json.loads(m.payload)))
        return json.loads(message.payload)

    def command(self, twin: str, name: str, payload: bytes | str) -> dict[str, Any]:
        """Send a command with v5 properties only; the reply, which carries our correlation
        data both as the property and, in hex, as its ``correlationId``."""
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = uuid.uuid4().bytes
        self.client.publish(f"twins/{twin}/commands/{name}", payload, qos=1, properties=props)
        reply = self.wait_for(
            lambda m: (
                m.topic == self.reply_topic
                and m.properties.CorrelationData == props.CorrelationData
            ),
            timeout=10,
        )
        body = json.loads(reply.payload)
        assert body.pop("correlationId") == props.CorrelationData.hex()
        return body

    reply_topic = f"test/{RUN}replies"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def simulator(layout: PlantLayout) -> Iterator[PlantSimulator]:
    # 20 ticks a second, 1.5 simulated seconds each: slow physics shows within seconds.
    sim = PlantSimulator(layout, rate_hz=20, time_scale=30, seed=5)
    with sim:
        yield sim


@pytest.fixture(scope="module")
def listener(layout: PlantLayout, simulator: PlantSimulator) -> Iterator[Listener]:
    topics = [f"twins/{t.id}/telemetry" for t in layout.equipment()] + [Listener.reply_topic]
    listener = Listener(topics)
    yield listener
    listener.close()


def test_telemetry_arrives_for_every_twin_with_valid_values(
    simulator: PlantSimulator, listener: Listener, layout: PlantLayout
) -> None:
    models = parse_models(layout.models)
    waiting = {t.id: t for t in layout.equipment()}
    deadline = time.monotonic() + 15
    while waiting and time.monotonic() < deadline:
        message = listener.wait_for(lambda m: m.topic.endswith("/telemetry"))
        assert message.qos == 1
        twin = waiting.pop(message.topic.split("/")[1], None)
        if twin is None:
            continue
        body = json.loads(message.payload)
        assert isinstance(body.pop("$ts"), float)
        assert set(body) == set(simulator.physics.telemetry_fields(twin.id))
        for name, value in body.items():
            assert validate_telemetry(name, value, models.interface(twin.model)) == []
    assert not waiting, f"no telemetry from {sorted(waiting)}"
    ts = listener.telemetry(_id("cnc-01"))["$ts"]
    assert abs(ts - time.time()) < 5
    acknowledged = simulator.published
    assert acknowledged > 0
    asyncio.run(_until(lambda: simulator.published > acknowledged))


def test_faults_show_over_mqtt(simulator: PlantSimulator, listener: Listener) -> None:
    cnc, conveyor = _id("cnc-05"), _id("conveyor-03")
    try:
        simulator.inject(cnc, "overheating")
        listener.telemetry(cnc, lambda b: b["spindleTemperature"] > 70)
        started = time.time()
        simulator.inject(conveyor, "sensor_dropout")
        body = listener.telemetry(conveyor, lambda b: b["$ts"] > started + 0.2)
        assert "speed" not in body and "load" in body
    finally:
        simulator.clear(cnc)
        simulator.clear(conveyor)
    assert simulator.active_faults(cnc) == []
    listener.telemetry(conveyor, lambda b: "speed" in b)


def test_mqtt_commands_round_trip_and_act(simulator: PlantSimulator, listener: Listener) -> None:
    cnc = _id("cnc-02")
    ok = listener.command(cnc, "setSpindleSpeed", json.dumps({"request": 6000.0}))
    assert ok == {"status": 200, "response": None}
    assert simulator.physics.state(cnc)["spindleSetpoint"] == 6000.0
    listener.telemetry(cnc, lambda b: abs(b["spindleSpeed"] - 6000) < 200)
    assert listener.command(cnc, "stop", json.dumps({"request": None}))["status"] == 200
    listener.telemetry(cnc, lambda b: b["spindleSpeed"] < 50)
    assert simulator.physics.state(cnc)["running"] is False
    assert listener.command(cnc, "start", '{"request": null}')["status"] == 200

    too_fast = listener.command(cnc, "setSpindleSpeed", json.dumps({"request": 30000}))
    assert too_fast["status"] == 400 and "maximum" in too_fast["error"]
    assert listener.command(cnc, "setSpindleSpeed", "not json")["status"] == 400
    assert listener.command(cnc, "setSpindleSpeed", "[6000]")["status"] == 400
    assert listener.command(cnc, "warpDrive", '{"request": null}')["status"] == 404

    result = listener.command(_id("inspection-01"), "inspect", '{"request": {"partId": "a"}}')
    assert result["status"] == 200 and set(result["response"]) == {"defect", "score", "label"}


def test_commands_in_the_payload_form_are_answered(
    simulator: PlantSimulator, listener: Listener
) -> None:
    """What a 3.1.1 sender does: the reply route in the payload, no properties."""
    conveyor = _id("conveyor-04")
    request = {"request": 1.25, "responseTopic": Listener.reply_topic, "correlationId": "c0ffee"}
    listener.client.publish(f"twins/{conveyor}/commands/setSpeed", json.dumps(request), qos=1)
    reply = listener.wait_for(
        lambda m: m.topic == Listener.reply_topic and b"c0ffee" in m.payload, timeout=10
    )
    assert json.loads(reply.payload) == {
        "status": 200,
        "response": None,
        "correlationId": "c0ffee",
    }
    assert simulator.physics.state(conveyor)["speedSetpoint"] == 1.25

    # Nowhere to answer: not run (its sender could not learn the outcome), but counted.
    unanswerable = simulator.commands_unanswerable
    for payload in ('{"request": 0.5}', "not json", '{"request": 0.5, "responseTopic": "a/#"}'):
        listener.client.publish(f"twins/{conveyor}/commands/setSpeed", payload, qos=1)
    asyncio.run(_until(lambda: simulator.commands_unanswerable == unanswerable + 3))
    assert simulator.physics.state(conveyor)["speedSetpoint"] == 1.25


def test_publish_batch_is_counted(layout: PlantLayout) -> None:
    batch_layout = sample_plant(10, id_prefix=RUN + "b-")
    topics = [f"twins/{t.id}/telemetry" for t in batch_layout.equipment()]
    listener = Listener(topics)
    sim = PlantSimulator(batch_layout, rate_hz=0, opcua_port=None)
    try:
        with sim:
            assert sim.publish_batch(ticks=20) == 200
            assert sim.published == sim.sent == 200
        for _ in range(200):
            listener.wait_for(lambda m: True, timeout=10)
    finally:
        listener.close()
    with pytest.raises(RuntimeError, match="start the simulator first"):
        sim.publish_batch()


def test_opcua_plc_serves_values_methods_and_properties(
    simulator: PlantSimulator, layout: PlantLayout
) -> None:
    cnc, station = _id("cnc-06"), _id("inspection-03")

    async def session() -> None:
        async with Client(simulator.opcua_endpoint, timeout=10) as client:
            assert await client.get_namespace_index(NAMESPACE_URI) == 2
            for name in simulator.physics.telemetry_fields(cnc):
                data = await client.get_node(ua.NodeId(f"{cnc}.{name}", 2)).read_data_value()
                assert data.Value is not None and data.Value.VariantType == ua.VariantType.Double
                assert data.SourceTimestamp is not None

            async def call(twin: str, name: str, text: str) -> dict[str, Any]:
                target = client.get_node(ua.NodeId(twin, 2))
                return json.loads(await target.call_method(ua.NodeId(f"{twin}.{name}", 2), text))

            assert await call(cnc, "setSpindleSpeed", "9000") == {"status": 200, "response": None}
            assert simulator.physics.state(cnc)["spindleSetpoint"] == 9000
            assert (await call(cnc, "setSpindleSpeed", "30000"))["status"] == 400
            assert (await call(cnc, "setSpindleSpeed", "{oops"))["status"] == 400
            assert (await call(cnc, "stop", "null"))["status"] == 200
            assert simulator.physics.state(cnc)["running"] is False
            assert (await call(cnc, "start", "null"))["status"] == 200
            inspected = await call(station, "inspect", '{"partId": "p-1"}')
            assert inspected["status"] == 200 and isinstance(inspected["response"]["defect"], bool)

            feed = client.get_node(ua.NodeId(f"{cnc}.targetFeedRate", 2))
            await feed.write_value(ua.Variant(1234.0, ua.VariantType.Double))
            await _until(lambda: simulator.physics.state(cnc)["targetFeedRate"] == 1234.0)
            await feed.write_value(ua.Variant(-5.0, ua.VariantType.Double))  # refused: reverted
            await _until_async(lambda: _read(feed), 1234.0)
            assert simulator.physics.state(cnc)["targetFeedRate"] == 1234.0

    asyncio.run(session())


async def _read(node: Any) -> Any:
    return await node.read_value()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _until_async(read: Callable[[], Any], expected: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r}, expected {expected!r}"
        await asyncio.sleep(0.05)


def test_bad_settings_and_unreachable_broker(layout: PlantLayout) -> None:
    with pytest.raises(ValueError, match="rate_hz: must be a finite number >= 0"):
        PlantSimulator(layout, rate_hz=-1)
    with pytest.raises(ValueError, match="time_scale: must be a finite number > 0"):
        PlantSimulator(layout, time_scale=0)
    with pytest.raises(ValueError, match="opcua_port: must be a TCP port"):
        PlantSimulator(layout, opcua_port=70000)
    with pytest.raises(ValueError, match="protocol: must be paho"):
        PlantSimulator(layout, mqtt_protocol=mqtt.MQTTv31)
    assert PlantSimulator(layout, mqtt_endpoint=None, opcua_port=None).subscribe_all is False
    sim = PlantSimulator(
        layout, mqtt_endpoint=MqttEndpoint("127.0.0.1", 1), opcua_port=None
    )  # nothing listens on port 1
    with pytest.raises(
        ConnectionError, match=r"mqtt: cannot reach the broker at mqtt://127\.0\.0\.1:1: "
    ):
        sim.start_background()
