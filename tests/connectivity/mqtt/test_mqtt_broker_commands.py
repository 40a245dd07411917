"""The simulator and the command transport in MQTT 3.1.1 against a real embedded broker
(amqtt in its child process), which has no MQTT v5 properties: commands travel in the
payload form of the wire contract. The v5 side is tested against Mosquitto in
test_simulator.py and test_mqtt_commands.py. Every client logs in with the credentials the
data dir generates for the server and the simulated plant.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from support.ingest_parts import wait_for

from twinforge.auth.devices import plant_credential, server_credential
from twinforge.connectivity.command_reply import CommandReply
from twinforge.connectivity.mqtt.broker import EmbeddedBroker
from twinforge.connectivity.mqtt.commands import MqttCommandTransport
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.sim.layout import PlantLayout, sample_plant
from twinforge.sim.simulator import PlantSimulator
from twinforge.twin_models import parse_models, validate_telemetry

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("broker"))


@pytest.fixture(scope="module")
def broker(data_dir: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(data_dir=data_dir, log_file=data_dir / "broker.log") as running:
        yield running


@pytest.fixture(scope="module")
def layout() -> PlantLayout:
    return sample_plant(8)


@pytest.fixture(scope="module")
def simulator(
    broker: EmbeddedBroker, layout: PlantLayout, data_dir: Path
) -> Iterator[PlantSimulator]:
    username, password = plant_credential(data_dir, [twin.id for twin in layout.twins])
    # 10 ticks a second, 3 simulated seconds each: the spindle settles within a second.
    sim = PlantSimulator(
        layout,
        mqtt_endpoint=MqttEndpoint(HOST, broker.port, username=username, password=password),
        opcua_port=None,
        rate_hz=10,
        time_scale=30,
        mqtt_protocol=mqtt.MQTTv311,
        client_id=f"{username}-sim",
    )
    with sim:
        yield sim


@pytest.fixture(scope="module")
def transport(
    broker: EmbeddedBroker, simulator: PlantSimulator, data_dir: Path
) -> Iterator[MqttCommandTransport]:
    username, password = server_credential(data_dir)
    with MqttCommandTransport(
        MqttEndpoint(HOST, broker.port, username=username, password=password),
        client_id=f"{username}-commands",
        protocol=mqtt.MQTTv311,
    ) as running:
        yield running


class Subscriber:
    """A paho MQTT 3.1.1 client, logged in as the server, collecting the JSON bodies of
    one twin's telemetry."""

    def __init__(self, port: int, twin: str, data_dir: Path) -> None:
        self.bodies: queue.Queue[dict[str, Any]] = queue.Queue()
        username, password = server_credential(data_dir)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{username}-telemetry-{twin}",
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(username, password)
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.bodies.put(json.loads(m.payload))
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(HOST, port)
        self.client.loop_start()
        self.client.subscribe(f"twins/{twin}/telemetry", qos=1)
        assert subscribed.wait(10), "no SUBACK from the embedded broker"

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                body = self.bodies.get(timeout=left)
            except queue.Empty:
                break
            if predicate(body):
                return body
        raise AssertionError(f"no matching telemetry within {timeout} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_telemetry_reaches_a_311_subscriber(
    broker: EmbeddedBroker, simulator: PlantSimulator, layout: PlantLayout, data_dir: Path
) -> None:
    conveyor = layout.twin("conveyor-01")
    subscriber = Subscriber(broker.port, conveyor.id, data_dir)
    try:
        body = subscriber.wait_for(lambda _: True)
    finally:
        subscriber.close()
    assert abs(body.pop("$ts") - time.time()) < 5
    assert set(body) == set(simulator.physics.telemetry_fields(conveyor.id))
    interface = parse_models(layout.models).interface(conveyor.model)
    assert all(validate_telemetry(k, v, interface) == [] for k, v in body.items())
    # The broker may forward a message before the simulator has read its PUBACK.
    wait_for(lambda: simulator.published > 0, timeout=5)


def test_commands_round_trip_in_the_payload_form(
    broker: EmbeddedBroker,
    simulator: PlantSimulator,
    transport: MqttCommandTransport,
    data_dir: Path,
) -> None:
    cnc = "cnc-01"
    subscriber = Subscriber(broker.port, cnc, data_dir)
    handled = simulator.commands_handled

    async def send(command: str, request: Any) -> CommandReply:
        return await transport.send(cnc, command, request, timeout=10)

    try:
        assert asyncio.run(send("setSpindleSpeed", 6000)) == CommandReply(200)
        assert simulator.physics.state(cnc)["spindleSetpoint"] == 6000
        subscriber.wait_for(lambda b: abs(b["spindleSpeed"] - 6000) < 200)
        assert asyncio.run(send("stop", None)) == CommandReply(200)
        assert simulator.physics.state(cnc)["running"] is False
        subscriber.wait_for(lambda b: b["spindleSpeed"] < 50)
        too_fast = asyncio.run(send("setSpindleSpeed", 30000))
        assert too_fast.status == 400 and "maximum" in (too_fast.error or "")
        assert asyncio.run(send("start", None)) == CommandReply(200)
    finally:
        subscriber.close()
    assert simulator.commands_handled == handled + 4
    assert simulator.commands_unanswerable == 0
    assert transport.ignored == {}
