"""Live twins end to end: the server (graph, Ray fleet, MQTT ingest, commands) against a
real Mosquitto of the test's own (so it can be restarted), fed by the plant simulator.

Counts every message the broker acknowledged to the publisher and finds each one in the
asset's state after an asset host is SIGKILLed mid-stream, the broker is restarted and the
whole server is restarted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from support.mosquitto import Mosquitto

from twinforge.config import Settings
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.runtime.commands import Principal
from twinforge.runtime.stores import open_graph_store
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.server import CommandsPart, FleetPart, GraphPart, IngestPart, TwinServer
from twinforge.sim.factory import ALARM_RULES, SAFETY_POLICY
from twinforge.sim.layout import sample_plant
from twinforge.sim.simulator import PlantSimulator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PUMP = "dtmi:com:twinforge:factory:Pump;1"
COUNTED = "pump-counted"  # a twin only the test publishes to
OPERATOR = Principal("olga", frozenset({"operator"}))
VIEWER = Principal("victor", frozenset({"viewer"}))


class CountingPublisher:
    """Publishes 0, 1, 2... as the counted pump's flowRate (QoS 1) and records which
    numbers the broker acknowledged."""

    def __init__(self, port: int) -> None:
        # paho calls on_publish holding its message mutex, which publish() takes too:
        # our lock is never held around a paho call, or the two threads could deadlock.
        self._lock = threading.Lock()
        self._acked_mids: set[int] = set()
        self._by_mid: dict[int, int] = {}
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-counting", protocol=mqtt.MQTTv5
        )
        self._client.on_publish = self._on_publish
        self._client.reconnect_delay_set(0.1, 1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self.next = 0

    def _on_publish(self, _c, _u, mid: int, _reason, _props) -> None:
        with self._lock:
            self._acked_mids.add(mid)

    @property
    def acked(self) -> set[int]:
        """The numbers acknowledged (an ack may come before publish() noted the mid)."""
        with self._lock:
            return {self._by_mid[m] for m in self._acked_mids if m in self._by_mid}

    def publish(self, count: int, interval: float = 0.005) -> None:
        for _ in range(count):
            payload = json.dumps({"$ts": time.time(), "flowRate": float(self.next)})
            info = self._client.publish(f"twins/{COUNTED}/telemetry", payload, qos=1)
            with self._lock:
                self._by_mid[info.mid] = self.next
            self.next += 1
            time.sleep(interval)

    def wait_acked(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < self.next and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def plant():
    return sample_plant(equipment=8)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto, plant) -> Settings:
    data_dir = tmp_path_factory.mktemp("live")
    store = open_graph_store(None, data_dir)
    try:
        service = TwinService(store)
        report = import_ndjson(service, plant.to_import_ndjson().splitlines())
        assert not report.errors
        service.create_twin(COUNTED, {"$metadata": {"$model": PUMP}})
    finally:
        store.close()
    return Settings(
        data_dir=data_dir,
        mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
        metrics_port=0,
        api_port=0,
        safety_policy=SAFETY_POLICY,
        alarm_rules=ALARM_RULES,
        assets_per_host=10,
    )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[TwinServer]:
    running = TwinServer(settings, dashboard=False).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def simulator(plant, broker: Mosquitto) -> Iterator[PlantSimulator]:
    # time_scale: the plant runs 20x faster, so faults develop within seconds
    sim = PlantSimulator(
        plant,
        mqtt_endpoint=MqttEndpoint("127.0.0.1", broker.port),
        opcua_port=None,
        rate_hz=5,
        time_scale=20,
    )
    sim.start_background()
    yield sim
    sim.stop_background()


def test_simulated_telemetry_reaches_the_asset_actors(server: TwinServer, simulator, plant) -> None:
    cnc = plant.of_model("dtmi:com:twinforge:factory:CncMachine;1")[0].id
    wait_for(
        lambda: (
            "spindleSpeed" in (server.part(FleetPart).fleet.snapshot(cnc) or {}).get("last", {})
        ),
        60,
        "telemetry",
    )
    stats = server.part(FleetPart).fleet.stats()
    assert len(stats) == len(plant.twins) // 10 + 1  # 10 assets per host process
    assert sum(s["assets"] for s in stats) == len(plant.twins) + 1
    metrics = urllib.request.urlopen(server.endpoints["Metrics"], timeout=5).read().decode()
    assert 'twinforge_ingest_accepted_total{transport="mqtt"}' in metrics


def test_commands_are_checked_sent_and_audited(server: TwinServer, simulator, plant) -> None:
    cnc = plant.of_model("dtmi:com:twinforge:factory:CncMachine;1")[0].id
    record = asyncio.run(
        server.part(CommandsPart).service.invoke(OPERATOR, cnc, "setSpindleSpeed", 9000)
    )
    assert record.status == "succeeded", record
    assert simulator.physics.state(cnc)["spindleSetpoint"] == 9000  # the machine changed
    too_fast = asyncio.run(
        server.part(CommandsPart).service.invoke(OPERATOR, cnc, "setSpindleSpeed", 30000)
    )
    assert too_fast.status == "denied" and "24000" in (too_fast.reason or "")
    viewer = asyncio.run(server.part(CommandsPart).service.invoke(VIEWER, cnc, "stop", None))
    assert viewer.status == "denied"
    wrong = asyncio.run(
        server.part(CommandsPart).service.invoke(OPERATOR, cnc, "setSpindleSpeed", "fast")
    )
    assert wrong.status == "invalid"
    audit = server.part(CommandsPart).service.audit.query(twin=cnc, limit=50)
    assert {entry.status for entry in audit} >= {"succeeded", "denied", "invalid"}
    assert all(entry.user in ("olga", "victor") for entry in audit)


def test_an_alarm_interlocks_start(server: TwinServer, simulator, plant) -> None:
    cnc = plant.of_model("dtmi:com:twinforge:factory:CncMachine;1")[1].id
    simulator.inject(cnc, "overheating", 600)
    wait_for(lambda: server.part(FleetPart).fleet.active_alarms(cnc), 90, "an overheating alarm")
    assert server.part(FleetPart).fleet.active_alarms(cnc)[0].name == "spindleOverTemperature"
    record = asyncio.run(server.part(CommandsPart).service.invoke(OPERATOR, cnc, "start", None))
    assert record.status == "denied" and "alarm" in (record.reason or "").lower()
    simulator.clear(cnc)


def test_reported_properties_are_written_back_to_the_graph(
    server: TwinServer, broker: Mosquitto
) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        info = client.publish(f"twins/{COUNTED}/properties", json.dumps({"state": "fault"}), qos=1)
        info.wait_for_publish(10)
        bad = client.publish(f"twins/{COUNTED}/properties", json.dumps({"state": "melted"}), qos=1)
        bad.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    wait_for(
        lambda: server.part(IngestPart).dead_letters.count(reason="wrongType") >= 1,
        30,
        "the bad value refused",
    )
    server.part(
        IngestPart
    ).pipeline.drain()  # the good value, received first, is durable in its host
    server.part(FleetPart).fleet.checkpoint()  # write-backs are batched; a checkpoint flushes them
    twin = server.part(GraphPart).twins.get_twin(COUNTED)
    assert twin["state"] == "fault"
    assert "lastUpdateTime" in twin["$metadata"]["state"]


def test_nothing_acknowledged_is_lost(
    server: TwinServer, broker: Mosquitto, settings: Settings
) -> None:
    publisher = CountingPublisher(broker.port)
    try:
        publisher.publish(100)
        # Kill the asset host of the counted twin mid-stream; Ray restarts it.
        host = server.part(FleetPart).fleet.route(COUNTED)
        pid = next(s["pid"] for s in server.part(FleetPart).fleet.stats() if s["host"] == host)
        killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
        killer.start()
        publisher.publish(100)
        killer.join()
        # Restart the broker mid-stream.
        broker.stop()
        broker.start()
        publisher.publish(100)
        # Restart the server; the broker keeps what arrives meanwhile.
        server.stop()
        publisher.publish(50)
        server.start()
        publisher.publish(50)
        publisher.wait_acked()
    finally:
        publisher.close()
    acked = publisher.acked
    assert len(acked) >= 390  # the broker was down only for a moment

    def held() -> set[int]:
        values = server.part(FleetPart).fleet.series(COUNTED, "flowRate")["values"]
        return {int(v) for v in values}

    try:
        wait_for(lambda: acked <= held(), 90, "every acknowledged message in the asset")
    except AssertionError:
        series = server.part(FleetPart).fleet.series(COUNTED, "flowRate")["values"]
        missing = sorted(acked - held())
        raise AssertionError(
            f"{len(missing)} acknowledged values missing: {missing[:20]}...; the series holds "
            f"{len(series)} values, {len(set(series))} distinct; dead letters "
            f"{[(d.reason, d.message) for d in server.part(IngestPart).dead_letters.list(twin_id=COUNTED)]}"
        ) from None
    stats = {s["host"]: s for s in server.part(FleetPart).fleet.stats()}
    assert stats[server.part(FleetPart).fleet.route(COUNTED)]["pid"] != pid
