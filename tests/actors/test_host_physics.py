"""Physics in asset hosts (without Ray): a twin's FMU stepped on its telemetry, derived
expected values and residuals, alarms on residuals, swaps, failing FMUs and crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fmus import FAULTY, faulty_plan

from twinforge.actors.alarms import load_alarm_rules
from twinforge.actors.asset_host import AssetHost, HostConfig
from twinforge.actors.physics import QUARANTINE_AFTER
from twinforge.physics.checks import PhysicsPlan, check_binding
from twinforge.physics.config import PhysicsBinding
from twinforge.sim.fmus import fmu_path
from twinforge.twin_models import parse_models

PUMP = "dtmi:com:example:physics:Pump;1"
MODEL = {
    "@context": ["dtmi:dtdl:context;3", "dtmi:dtdl:extension:quantitativeTypes;1"],
    "@id": PUMP,
    "@type": "Interface",
    "contents": [
        {"@type": ["Telemetry", "AngularVelocity"], "name": "speed", "schema": "double",
         "unit": "revolutionPerMinute"},
        {"@type": "Telemetry", "name": "valvePosition", "schema": "double"},
        {"@type": ["Telemetry", "VolumeFlowRate"], "name": "flowRate", "schema": "double",
         "unit": "cubicMetrePerHour"},
        {"@type": ["Telemetry", "Pressure"], "name": "pressure", "schema": "double",
         "unit": "kilopascal"},
        {"@type": "Telemetry", "name": "bearingVibration", "schema": "double"},
    ],
}  # fmt: skip


def pump_plan(fmu: Path | None = None, **extra: object) -> PhysicsPlan:
    interface = parse_models([MODEL]).interface(PUMP)
    binding = PhysicsBinding(
        interface=PUMP,
        fmu=fmu or fmu_path("pump"),
        inputs={"speed": "speed", "valvePosition": "valvePosition"},
        expected={"flowRate": "flow", "pressure": "pressure", "bearingVibration": "vibration"},
        **extra,  # type: ignore[arg-type]
    )
    return check_binding(binding, interface)


def sample(twin: str, ts: float, **values: float) -> tuple:
    return (twin, "telemetry", values, ts, ts + 0.01)


RATED = {"speed": 2900.0, "valvePosition": 1.0}


def test_a_sample_gets_expected_values_and_residuals(tmp_path: Path) -> None:
    host = AssetHost(0, HostConfig(tmp_path, physics=(pump_plan(),)), {"p1": PUMP})
    result = host.ingest([sample("p1", 1000.0, **RATED, flowRate=41.0, pressure=400.0)])
    [(twin, kind, derived, ts, _)] = result.derived
    assert (twin, kind, ts) == ("p1", "telemetry", 1000.0)
    # Rated point of our pump: 40 m³/h at 4.08 bar (408 kPa: the twin's unit).
    assert derived["flowRate.expected"] == pytest.approx(40.0, rel=1e-3)
    assert derived["flowRate.residual"] == pytest.approx(1.0, abs=0.05)
    assert derived["pressure.expected"] == pytest.approx(408.0, rel=1e-3)
    assert derived["pressure.residual"] == pytest.approx(-8.0, abs=0.5)
    assert "bearingVibration.residual" not in derived  # the sample did not carry it
    assert derived["bearingVibration.expected"] == pytest.approx(1.1, rel=1e-3)
    last = host.snapshot("p1")["last"]  # live values, like any telemetry
    assert last["flowRate.residual"]["value"] == derived["flowRate.residual"]
    assert host.series("p1", "pressure.expected")["times"] == [1000.0]
    status = host.physics_status("p1")
    assert status["running"] and status["fmu"].endswith(".fmu") and status["off"] is None
    # A caller that publishes no live events asks for none back; they are still recorded.
    quiet = host.ingest([sample("p1", 1001.0, **RATED, flowRate=39.0)], derived=False)
    assert quiet.derived == () and quiet.applied == 1
    assert host.snapshot("p1")["last"]["flowRate.residual"]["sourceTime"] == 1001.0


def test_expected_values_and_residuals_reach_the_history_at_their_interval(
    tmp_path: Path,
) -> None:
    from twinforge.runtime.history import open_history_store

    config = HostConfig(tmp_path, physics=(pump_plan(),), physics_history_interval_s=10.0)
    host = AssetHost(0, config, {"p1": PUMP})
    host.ingest([sample("p1", 1000.0 + k, **RATED, flowRate=41.0) for k in range(25)])
    host.checkpoint()  # flushes history
    store = open_history_store(None, tmp_path)
    # The measured values every second, what physics derived every 10 s.
    assert len(store.query("p1", "flowRate")) == 25
    times = [p.ts.timestamp() for p in store.query("p1", "flowRate.residual")]
    assert times == [1000.0, 1010.0, 1020.0]
    assert [p.ts.timestamp() for p in store.query("p1", "pressure.expected")] == times
    # The live ring buffer holds every sample's.
    assert len(host.series("p1", "flowRate.residual")["times"]) == 25
    store.close()
    host.close()


def test_the_fmu_steps_on_source_time_with_inputs_held(tmp_path: Path) -> None:
    host = AssetHost(0, HostConfig(tmp_path, physics=(pump_plan(step_s=0.5),)), {"p1": PUMP})
    host.ingest([sample("p1", 100.0, **RATED)])
    half = host.ingest([sample("p1", 103.0, speed=1450.0)])  # valve held at 1
    assert host.physics_status("p1")["steps"] == 6  # 3 s in 0.5 s steps
    flow = half.derived[0][2]["flowRate.expected"]
    assert flow == pytest.approx(20.0, rel=1e-3)  # affinity: half speed, half flow
    late = host.ingest([sample("p1", 101.0, speed=2900.0, flowRate=40.0)])
    assert late.derived == () and late.applied == 1  # kept as telemetry, no physics
    host.ingest([sample("p1", 103.0, flowRate=19.0)])  # same time: no step, residual
    assert host.physics_status("p1")["steps"] == 6
    assert host.snapshot("p1")["last"]["flowRate.residual"]["value"] == pytest.approx(-1.0, 1e-2)
    host.ingest([sample("p1", 103.0 + 301.0, **RATED)])  # a silence past max_gap_s
    assert host.physics_status("p1")["steps"] == 6  # restarted there, not stepped through


def test_alarm_rules_use_residuals(tmp_path: Path) -> None:
    rules = load_alarm_rules(
        [{"name": "wearResidual", "model": PUMP, "field": "bearingVibration.residual",
          "above": 1.0, "severity": 2}]
    )  # fmt: skip
    config = HostConfig(tmp_path, physics=(pump_plan(),), alarm_rules=tuple(rules))
    host = AssetHost(0, config, {"p1": PUMP})
    quiet = host.ingest([sample("p1", 10.0, **RATED, bearingVibration=1.3)])
    assert quiet.alarms == ()
    worn = host.ingest([sample("p1", 11.0, **RATED, bearingVibration=2.4)])
    [raised] = worn.alarms
    assert raised.name == "wearResidual" and raised.value == pytest.approx(1.3, abs=1e-3)


def test_twins_without_a_plan_are_left_alone(tmp_path: Path) -> None:
    other = "dtmi:com:example:physics:Fan;1"
    host = AssetHost(0, HostConfig(tmp_path, physics=(pump_plan(),)), {"f1": other})
    assert host.ingest([sample("f1", 1.0, speed=1.0)]).derived == ()
    assert host.physics_status("f1") is None


def test_a_swapped_plan_restarts_the_twins_fmu(tmp_path: Path) -> None:
    host = AssetHost(0, HostConfig(tmp_path, physics=(pump_plan(),)), {"p1": PUMP})
    host.ingest([sample("p1", 1.0, **RATED)])
    host.ingest([sample("p1", 2.0, **RATED)])
    assert host.physics_status("p1")["steps"] == 1
    worn = pump_plan(parameters={"bearingWear": 0.5})
    assert host.set_physics((worn,)) == [PUMP]
    result = host.ingest([sample("p1", 3.0, **RATED)])
    assert result.derived[0][2]["bearingVibration.expected"] == pytest.approx(11.1, rel=1e-3)
    assert host.physics_status("p1")["steps"] == 0  # a fresh instance
    assert host.set_physics((worn,)) == []  # the same plan: nothing restarts


def test_a_restarted_host_recomputes_physics_from_its_log(tmp_path: Path) -> None:
    config = HostConfig(tmp_path, physics=(pump_plan(),))
    host = AssetHost(0, config, {"p1": PUMP})
    for t in range(5):
        host.ingest([sample("p1", 100.0 + t, **RATED, flowRate=40.5)])
    host._wal.close()  # a crash: no checkpoint, no close
    again = AssetHost(0, config)
    assert again.replayed == 5
    residual = again.snapshot("p1")["last"]["flowRate.residual"]
    assert residual["sourceTime"] == 104.0 and residual["value"] == pytest.approx(0.5, abs=0.01)


def test_a_host_that_died_in_an_fmu_counts_it_and_quarantines_it(tmp_path: Path) -> None:
    config = HostConfig(tmp_path, physics=(pump_plan(),))
    host = AssetHost(0, config, {"p1": PUMP, "p2": PUMP})
    host.ingest([sample("p1", 1.0, **RATED), sample("p2", 1.0, **RATED)])
    mark = tmp_path / "actors" / "host-0000.physics.mark"
    for crash in range(1, QUARANTINE_AFTER + 1):
        # What a process that died inside p1's doStep leaves behind.
        with open(mark, "r+b") as file:
            file.write(len(b"p1").to_bytes(2, "little") + b"p1")
        host._wal.close()
        host = AssetHost(0, config)
        assert host.physics_status("p1")["crashes"] == crash
    result = host.ingest([sample("p1", 2.0, **RATED), sample("p2", 2.0, **RATED)])
    assert result.applied == 2
    [off] = result.physics_off
    assert off.twin_id == "p1" and off.quarantined and "crashed the host 3 times" in off.reason
    assert [e[0] for e in result.derived] == ["p2"]  # the other twin keeps its physics
    assert host.physics_status("p1")["quarantined"]
    host.set_physics((pump_plan(parameters={"fouling": 0.0}),))  # a new version: a new chance
    assert host.ingest([sample("p1", 3.0, **RATED)]).derived
    assert host.physics_status("p1")["crashes"] == 0


@pytest.mark.parametrize(
    ("fail_mode", "reason"),
    [
        (1, "returned Error (doStep at t=2: failing as asked"),
        (2, "returned Fatal"),
        (3, "output 'y' is nan"),
    ],
)
def test_a_failing_fmu_switches_physics_off_and_ingest_goes_on(
    tmp_path: Path, test_fmus: dict[str, Path], fail_mode: int, reason: str
) -> None:
    plan = faulty_plan(test_fmus["faulty"], 2.5, fail_mode)
    host = AssetHost(0, HostConfig(tmp_path, physics=(plan,)), {"f1": FAULTY, "f2": FAULTY})
    assert host.ingest([sample("f1", 1.0, u=1.0, y=0.0)]).derived
    # f1's FMU fails past t=2.5; f2's own instance has not got there yet.
    result = host.ingest([sample("f1", 3.0, u=1.0, y=2.0), sample("f2", 1.0, u=1.0, y=0.0)])
    assert result.applied == 2
    assert [twin for twin, *_ in result.derived] == ["f2"]
    [off] = result.physics_off
    assert off.twin_id == "f1" and reason in off.reason, off.reason
    assert host.physics_status("f1")["off"] == off.reason
    assert host.physics_status("f2")["running"]
    # Off is said once; the measured values go on being ingested.
    assert host.ingest([sample("f1", 4.0, u=1.0, y=7.0)]).physics_off == ()
    assert host.snapshot("f1")["last"]["y"]["value"] == 7.0
