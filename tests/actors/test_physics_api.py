"""Physics through the GraphQL API, on real parts: the sample factory in an embedded
FalkorDB, its twins in asset hosts on Ray stepping the factory's own FMUs, telemetry
through a real ingest pipeline, and the real FastAPI app over HTTP and WebSockets."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support.fmus import FAULTY, FAULTY_MODEL
from support.graphql_parts import Api, serving

from twinforge.actors.part import FleetPart
from twinforge.actors.twin_sync import TwinSync
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.physics.config import PhysicsBinding
from twinforge.physics.library import PhysicsLibrary
from twinforge.runtime.events import EventBus
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.sim.factory import sample_physics
from twinforge.sim.layout import PUMP, sample_plant

#: The pump's steady operating point: these inputs, held, are what the samples carry.
SPEED, VALVE = 2900.0, 0.8

PHYSICS = """query($id: String!) { twin(id: $id) { dtId physics {
  interface fmu running steps off quarantined crashes
  fields { telemetry measured { value } expected { time value } residual { value }
           expectedHistory(last: 50) { value } residualHistory(last: 50) { value } } } } }"""
SIMULATE = """mutation($id: String!, $h: Float!, $step: Float, $p: JSON, $prof: JSON) {
  simulate(twinId: $id, horizonS: $h, stepS: $step, parameters: $p, profiles: $prof) {
    twinId startTime fromState wallS times series { telemetry values } } }"""
BIND = """mutation($i: String!, $fmu: String!, $b: JSON) {
  bindFmu(interface: $i, fmu: $fmu, binding: $b) { interface fmu sha256 stepS inputs expected } }"""


@dataclass
class Served:
    api: Api
    pipeline: IngestPipeline
    part: FleetPart
    pump: str
    fmus: dict[str, Path]

    def feed(self, offers: list[tuple[str, dict[str, Any], float]]) -> None:
        """Offer ``(twin, values, source time)`` telemetry and wait until all of it is
        durable and published."""

        async def offer() -> None:
            futures = [
                self.pipeline.offer(twin, values, source_time=ts, origin="test:")
                for twin, values, ts in offers
            ]
            for future in futures:
                assert await asyncio.wrap_future(future) is True
            await asyncio.to_thread(self.pipeline.drain)

        asyncio.run(offer())

    def feed_pump(self, seconds: int, start: float) -> None:
        """The pump at its operating point, one sample a second."""
        values = {"speed": SPEED, "valvePosition": VALVE, "flowRate": 50.0}
        self.feed([(self.pump, values, start + k) for k in range(1, seconds + 1)])


@pytest.fixture
def served(
    embedded_store, make_fleet, our_fmus, test_fmus, fmu_cache, tmp_path
) -> Iterator[Served]:
    embedded_store.clear()
    twins = TwinService(embedded_store)
    layout = sample_plant(equipment=16)
    assert not import_ndjson(twins, layout.to_import_ndjson().splitlines()).errors
    twins.models.upload([FAULTY_MODEL])
    twins.create_twin("faulty-1", {"$metadata": {"$model": FAULTY}})
    data_dir = tmp_path / "data"
    # From source time 5 on the faulty FMU answers NaN: its twin's physics goes off.
    faulty = PhysicsBinding(
        interface=FAULTY,
        fmu=test_fmus["faulty"],
        inputs={"u": "u"},
        parameters={"failAt": 5.0, "failMode": 3.0},
        expected={"y": "y"},
    )
    library = PhysicsLibrary(data_dir, [*sample_physics(fmu_cache), faulty], twins.models.interface)
    lineage = {m.id: tuple(twins.models.lineage(m.id)) for m in twins.models.list()}
    fleet = make_fleet(50, physics=library.all_plans(), lineage=lineage)
    sync = TwinSync(twins, fleet).start()
    part = FleetPart(fleet, sync, library)
    live = EventBus()
    api_parts = serving(
        twins, embedded_store, tmp_path / "keys.sqlite3", live=live, assets=fleet, physics=part
    )
    pump = next(t.id for t in layout.twins if t.model == PUMP)
    validator = TelemetryValidator(sync.model_of, twins.models.interface)
    with api_parts as api, DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(validator, fleet, letters, live=live)
        try:
            yield Served(api, pipeline, part, pump, our_fmus)
        finally:
            pipeline.close()


def data(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def error(answer: dict[str, Any]) -> tuple[str, str]:
    [first] = answer["errors"]
    return first["extensions"]["code"], first["message"]


def test_a_pump_twin_shows_its_expected_values_and_residuals(served: Served) -> None:
    start = time.time() - 3600
    served.feed_pump(60, start)
    twin = data(served.api.post(PHYSICS, {"id": served.pump}, role="viewer"))["twin"]
    physics = twin["physics"]
    assert physics["running"] and physics["off"] is None and physics["steps"] == 59
    assert physics["interface"] == PUMP and physics["fmu"].startswith("pump")
    fields = {f["telemetry"]: f for f in physics["fields"]}
    assert set(fields) == {
        "flowRate",
        "pressure",
        "motorCurrent",
        "bearingVibration",
        "bearingTemperature",
        "windingTemperature",
        "powerKw",
    }
    flow = fields["flowRate"]
    # Measured minus expected, at the sample's source time.
    assert flow["residual"]["value"] == pytest.approx(50.0 - flow["expected"]["value"])
    assert flow["expected"]["time"].startswith(time.strftime("%Y-%m-%d", time.gmtime(start + 60)))
    assert len(flow["expectedHistory"]) == len(flow["residualHistory"]) == 50
    # A field the samples did not carry has an expected value and no residual.
    assert fields["pressure"]["measured"] is None and fields["pressure"]["residual"] is None
    assert fields["pressure"]["expected"]["value"] > 0
    # A twin whose interface has no FMU bound has no physics.
    plain = data(served.api.post(PHYSICS, {"id": "line-1"}, role="viewer"))["twin"]
    assert plain["physics"] is None


def test_simulate_runs_the_pump_ahead_without_touching_the_twin(served: Served) -> None:
    start = time.time() - 3600
    served.feed_pump(30, start)
    before = data(served.api.post(PHYSICS, {"id": served.pump}))["twin"]["physics"]
    variables = {
        "id": served.pump,
        "h": 600.0,
        "step": 1.0,
        "prof": {"valvePosition": [[300, 0.2]]},
    }
    run = data(served.api.post(SIMULATE, variables, role="operator"))["simulate"]
    assert run["twinId"] == served.pump and run["fromState"] is True
    assert len(run["times"]) == 600
    flow = next(s["values"] for s in run["series"] if s["telemetry"] == "flowRate")
    # Steady at the operating point for 300 s, then the valve closes to 0.2 open and the
    # flow falls.
    assert flow[0] == pytest.approx(flow[299], rel=1e-3)
    assert flow[-1] < 0.6 * flow[299]
    # The live twin did not move: same steps, same expected values.
    after = data(served.api.post(PHYSICS, {"id": served.pump}))["twin"]["physics"]
    assert after == before


@pytest.mark.parametrize(
    ("variables", "code", "names"),
    [
        ({"h": -5.0}, "BAD_USER_INPUT", "horizonS"),
        ({"h": 60.0, "p": {"noSuchParameter": 1}}, "BAD_USER_INPUT", "parameters.noSuchParameter"),
        ({"h": 60.0, "p": {"bearingWear": "lots"}}, "BAD_USER_INPUT", "parameters.bearingWear"),
        ({"h": 60.0, "prof": {"flowRate": [[0, 1]]}}, "BAD_USER_INPUT", "profiles.flowRate"),
        ({"h": 60.0, "prof": {"speed": [[0]]}}, "BAD_USER_INPUT", "profiles.speed.0"),
        ({"h": 60.0, "prof": {"speed": [[10, 1], [5, 2]]}}, "BAD_USER_INPUT", "profiles.speed"),
        ({"h": 1e9}, "BAD_USER_INPUT", "horizonS"),
    ],
)
def test_a_bad_what_if_is_refused_naming_the_field(
    served: Served, variables: dict[str, Any], code: str, names: str
) -> None:
    served.feed_pump(3, time.time() - 3600)
    answer = served.api.post(SIMULATE, {"id": served.pump, **variables}, role="operator")
    got_code, message = error(answer)
    assert got_code == code and names in message, message


def test_what_if_needs_running_physics_and_an_operator(served: Served) -> None:
    code, message = error(served.api.post(SIMULATE, {"id": "line-1", "h": 60.0}))
    assert code == "NOT_FOUND" and "line-1" in message
    served.feed_pump(3, time.time() - 3600)
    code, _ = error(served.api.post(SIMULATE, {"id": served.pump, "h": 60.0}, role="viewer"))
    assert code == "FORBIDDEN"


def test_a_new_fmu_version_swaps_in_on_the_running_twins(served: Served) -> None:
    start = time.time() - 3600
    served.feed_pump(20, start)
    old = data(served.api.post(PHYSICS, {"id": served.pump}))["twin"]["physics"]
    content = base64.b64encode(served.fmus["pump"].read_bytes()).decode()
    # The same FMU with a higher shut-off pressure: a new version of the pump's physics.
    binding = {
        "inputs": {"speed": "speed", "valvePosition": "valvePosition"},
        "parameters": {"shutoffPressure": 6.0},
        "expected": {"flowRate": "flow", "pressure": "pressure"},
    }
    bound = data(served.api.post(BIND, {"i": PUMP, "fmu": content, "b": binding}, role="engineer"))[
        "bindFmu"
    ]
    assert bound["interface"] == PUMP and bound["expected"] == ["flowRate", "pressure"]
    assert bound["fmu"] != old["fmu"] or bound["sha256"]
    served.feed_pump(5, start + 20)
    new = data(served.api.post(PHYSICS, {"id": served.pump}))["twin"]["physics"]
    assert new["running"] and new["steps"] == 4  # restarted at the first sample after
    assert [f["telemetry"] for f in new["fields"]] == ["flowRate", "pressure"]


@pytest.mark.parametrize(
    ("variables", "role", "code", "names"),
    [
        ({"fmu": "not base64!"}, "engineer", "BAD_USER_INPUT", "fmu"),
        ({"fmu": base64.b64encode(b"PK not a zip").decode()}, "engineer", "BAD_USER_INPUT", "fmu"),
        (
            {"b": {"inputs": {"noSuchInput": "speed"}, "expected": {"flowRate": "flow"}}},
            "engineer",
            "BAD_USER_INPUT",
            "noSuchInput",
        ),
        (
            {"b": {"inputs": {"speed": "noSuchTelemetry"}, "expected": {"flowRate": "flow"}}},
            "engineer",
            "BAD_USER_INPUT",
            "noSuchTelemetry",
        ),
        ({"b": {"expected": {}}}, "engineer", "BAD_USER_INPUT", "binding.expected"),
        ({"b": {"stepS": 1}}, "engineer", "BAD_USER_INPUT", "binding.stepS"),
        ({}, "operator", "FORBIDDEN", ""),
    ],
)
def test_a_bad_fmu_upload_is_refused_and_the_running_version_stays(
    served: Served, variables: dict[str, Any], role: str, code: str, names: str
) -> None:
    content = base64.b64encode(served.fmus["pump"].read_bytes()).decode()
    answer = served.api.post(BIND, {"i": PUMP, "fmu": content, **variables}, role=role)
    got_code, message = error(answer)
    assert got_code == code and names in message, message
    served.feed_pump(3, time.time() - 3600)
    physics = data(served.api.post(PHYSICS, {"id": served.pump}))["twin"]["physics"]
    assert physics["running"] and len(physics["fields"]) == 7


def test_physics_switching_off_reaches_subscribers(served: Served) -> None:
    query = "subscription { physicsOff { twinId reason quarantined time } }"
    with (
        TestClient(served.api.app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as socket,
    ):
        socket.send_json(
            {
                "type": "connection_init",
                "payload": {"Authorization": f"Bearer {served.api.secrets['viewer']}"},
            }
        )
        assert socket.receive_json()["type"] == "connection_ack"
        socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        time.sleep(0.3)  # the subscription opens on the server's loop
        # The faulty FMU answers NaN from source time 5: its physics goes off, ingest
        # goes on.
        served.feed([("faulty-1", {"u": 1.0, "y": float(k)}, float(k)) for k in range(1, 9)])
        event = socket.receive_json()["payload"]["data"]["physicsOff"]
    assert event["twinId"] == "faulty-1" and not event["quarantined"]
    assert "nan" in event["reason"], event["reason"]
    status = served.part.physics_of(["faulty-1"])["faulty-1"]
    assert status["off"] == event["reason"] and not status["running"]
    assert served.part.fleet.series("faulty-1", "y")["values"] == [float(k) for k in range(1, 9)]
