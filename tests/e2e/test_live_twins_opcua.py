"""Live twins over OPC UA: the simulated PLC's variables feed the asset actors and the
server's commands call its methods, over Basic256Sha256 SignAndEncrypt with a user and
password and the PLC's certificate in the server's trust list; the server's MQTT side is
the embedded broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinforge.config import Settings
from twinforge.runtime.commands import Principal
from twinforge.runtime.stores import open_graph_store
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.server import CommandsPart, FleetPart, IngestPart, TwinServer
from twinforge.sim.layout import CNC, sample_plant
from twinforge.sim.opcua_security import PlcSecurity
from twinforge.sim.simulator import PlantSimulator

pytestmark = pytest.mark.slow

OPERATOR = Principal("olga", frozenset({"operator"}))


@pytest.fixture(scope="module")
def plant():
    return sample_plant(equipment=4)


@pytest.fixture(scope="module")
def plc(plant) -> Iterator[PlantSimulator]:
    security = PlcSecurity({"twinforge": "plc-password"})
    sim = PlantSimulator(
        plant, mqtt_endpoint=None, opcua_port=0, opcua_security=security, rate_hz=5
    )
    sim.start_background()
    yield sim
    sim.stop_background()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, plant, plc) -> Iterator[TwinServer]:
    data_dir: Path = tmp_path_factory.mktemp("opcua")
    store = open_graph_store(None, data_dir)
    try:
        assert not import_ndjson(TwinService(store), plant.to_import_ndjson().splitlines()).errors
    finally:
        store.close()
    trusted = data_dir / "opcua" / "trusted"
    trusted.mkdir(parents=True)
    assert plc.opcua_security is not None
    (trusted / "plc.der").write_bytes(plc.opcua_security.certificate)
    settings = Settings(
        data_dir=data_dir,
        opcua_url=plc.opcua_endpoint,
        opcua_security="Basic256Sha256,SignAndEncrypt",
        opcua_username="twinforge",
        opcua_password="plc-password",
        metrics_port=0,
        api_port=0,
    )
    running = TwinServer(settings, dashboard=False).start()
    yield running
    running.stop()


def test_plc_variables_reach_the_asset_actors(server: TwinServer, plant) -> None:
    assert server.endpoints["MQTT broker"].startswith("mqtt://127.0.0.1:")  # the embedded broker
    cnc = plant.of_model(CNC)[0].id
    deadline = time.monotonic() + 60
    while "spindleSpeed" not in (server.part(FleetPart).fleet.snapshot(cnc) or {}).get("last", {}):
        assert time.monotonic() < deadline, "no OPC UA telemetry reached the asset"
        time.sleep(0.2)
    assert server.part(IngestPart).pipeline.rejected == 0


def test_commands_call_plc_methods(server: TwinServer, plc: PlantSimulator, plant) -> None:
    cnc = plant.of_model(CNC)[0].id
    record = asyncio.run(
        server.part(CommandsPart).service.invoke(OPERATOR, cnc, "setSpindleSpeed", 7000)
    )
    assert record.status == "succeeded", record
    assert plc.physics.state(cnc)["spindleSetpoint"] == 7000
    stopped = asyncio.run(server.part(CommandsPart).service.invoke(OPERATOR, cnc, "stop", None))
    assert stopped.status == "succeeded"
    assert plc.physics.state(cnc)["running"] is False
    entries = server.part(CommandsPart).service.audit.query(twin=cnc)
    assert [e.status for e in entries if e.action == "reply"][:2] == ["succeeded", "succeeded"]
