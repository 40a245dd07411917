"""The plant physics: machine models, faults and commands on a simulated clock, no I/O."""

from __future__ import annotations

import pytest
from support.sim_run import run_id as _id

from twinforge.sim.layout import CNC, MOLDING, PUMP, PlantLayout
from twinforge.sim.machines import (
    NORMAL_BANDS,
    PlantPhysics,
    ScheduledFault,
    applicable_faults,
    random_fault_schedule,
)
from twinforge.twin_models import Command, parse_models, validate_telemetry, validate_value


@pytest.fixture
def physics(layout: PlantLayout) -> PlantPhysics:
    return PlantPhysics(layout, seed=11)


def _run(physics: PlantPhysics, seconds: float, dt: float = 1.0) -> list[dict[str, dict]]:
    return [physics.step(dt) for _ in range(int(seconds / dt))]


def _series(ticks: list[dict[str, dict]], twin: str, field: str) -> list[float]:
    return [t[twin][field] for t in ticks if field in t[twin]]


def test_healthy_values_are_valid_and_in_their_normal_bands(
    physics: PlantPhysics, layout: PlantLayout
) -> None:
    models = parse_models(layout.models)
    ticks = _run(physics, 900)
    for twin in layout.equipment():
        interface = models.interface(twin.model)
        assert set(ticks[-1][twin.id]) == set(physics.telemetry_fields(twin.id))
        for tick in ticks[::50]:
            for name, value in tick[twin.id].items():
                assert validate_telemetry(name, value, interface) == [], (twin.id, name)
        for name, (low, high) in NORMAL_BANDS.get(twin.model, {}).items():
            values = _series(ticks, twin.id, name)
            assert low <= min(values) and max(values) <= high, (twin.id, name)
    # Equipment's inherited powerKw is there, and each meter sums its feeder.
    meter = _id("meter-01")
    fed = sum(ticks[-1][t]["powerKw"] for t in layout.metered[meter])
    assert ticks[-1][meter]["activePower"] == pytest.approx(fed, rel=0.02)


def test_same_seed_same_run(layout: PlantLayout) -> None:
    first, second, other = (PlantPhysics(layout, seed=s) for s in (3, 3, 4))
    assert _run(first, 30) == _run(second, 30)
    assert _run(PlantPhysics(layout, seed=3), 30) != _run(other, 30)


def test_overheating_climbs_past_normal_and_blocks_start(physics: PlantPhysics) -> None:
    cnc, molding = _id("cnc-01"), _id("molding-01")
    physics.inject(cnc, "overheating", 300)
    physics.inject(molding, "overheating")
    ticks = _run(physics, 120)
    assert max(_series(ticks, cnc, "spindleTemperature")) > 80
    assert (
        max(_series(ticks, molding, "barrelTemperature"))
        > NORMAL_BANDS[MOLDING]["barrelTemperature"][1]
    )
    physics.execute(cnc, "stop", None)
    refused = physics.execute(cnc, "start", None)
    assert refused["status"] == 409 and "interlock" in refused["error"]
    assert {f.fault for f in physics.active_faults(cnc)} == {"overheating"}
    physics.clear(molding)
    _run(physics, 900)  # the CNC fault expires after 300 s; both cool down
    assert physics.active_faults(cnc) == [] and physics.active_faults(molding) == []
    assert physics.values(cnc)["spindleTemperature"] < 65
    assert physics.execute(cnc, "start", None) == {"status": 200, "response": None}


def test_bearing_wear_grows_vibration(physics: PlantPhysics) -> None:
    cnc, pump = _id("cnc-02"), _id("pump-01")
    physics.inject(cnc, "bearing_wear")
    physics.inject(pump, "bearing_wear")
    ticks = _run(physics, 300)
    for twin, field, band in ((cnc, "vibration", CNC), (pump, "bearingVibration", PUMP)):
        values = _series(ticks, twin, field)
        early, late = sum(values[:20]) / 20, sum(values[-20:]) / 20
        assert late > 3 * early and late > NORMAL_BANDS[band][field][1], twin


def test_power_spike_shows_in_power_and_current(physics: PlantPhysics) -> None:
    pump, meter = _id("pump-02"), _id("meter-02")
    normal = physics.step(1.0)
    physics.inject(pump, "power_spike", 1.0)
    spiked = physics.step(1.0)  # a spike fault always spikes on its first tick
    assert spiked[pump]["powerKw"] > NORMAL_BANDS[PUMP]["powerKw"][1]
    assert spiked[pump]["motorCurrent"] > 2 * normal[pump]["motorCurrent"]
    assert spiked[meter]["activePower"] > normal[meter]["activePower"] + 5
    physics.step(1.0)
    assert physics.active_faults(pump) == []


def test_sensor_dropout_silences_a_field_then_recovers(physics: PlantPhysics) -> None:
    conveyor, cnc = _id("conveyor-01"), _id("cnc-03")
    physics.inject(conveyor, "sensor_dropout", 5)
    active = physics.inject(cnc, "sensor_dropout", field="vibration")
    assert active.field == "vibration"
    ticks = _run(physics, 5)
    assert all("speed" not in t[conveyor] and "load" in t[conveyor] for t in ticks)
    assert all("vibration" not in t[cnc] for t in ticks)
    assert "speed" in physics.values(conveyor)  # still simulated, only not published
    assert "speed" in physics.step(1.0)[conveyor]
    assert [f.fault for f in physics.clear(cnc)] == ["sensor_dropout"]
    assert "vibration" in physics.step(1.0)[cnc]


def test_fault_requests_are_checked(physics: PlantPhysics) -> None:
    with pytest.raises(ValueError, match="fault: 'melting' is not one of"):
        physics.inject(_id("cnc-01"), "melting")
    with pytest.raises(ValueError, match="fault: overheating does not apply to"):
        physics.inject(_id("pump-01"), "overheating")
    with pytest.raises(KeyError, match="twin_id: no equipment twin"):
        physics.inject(_id("line-1"), "power_spike")
    with pytest.raises(ValueError, match="duration_s: must be a positive"):
        physics.inject(_id("cnc-01"), "power_spike", 0)
    with pytest.raises(ValueError, match="field: only a sensor_dropout"):
        physics.inject(_id("cnc-01"), "sensor_dropout", field="powerKW")


def test_scheduled_faults_fire_and_expire(layout: PlantLayout) -> None:
    pump = _id("pump-03")
    physics = PlantPhysics(layout, schedule=[ScheduledFault(10.0, pump, "bearing_wear", 20.0)])
    _run(physics, 9)
    assert physics.active_faults() == []
    _run(physics, 2)
    assert [(f.twin_id, f.fault, f.ends_at) for f in physics.active_faults()] == [
        (pump, "bearing_wear", 30.0)
    ]
    _run(physics, 20)
    assert physics.active_faults() == []
    schedule = random_fault_schedule(layout, count=30, horizon_s=3600, seed=2)
    assert len(schedule) == 30 and schedule == sorted(schedule, key=lambda s: s.at_s)
    for item in schedule:
        assert item.fault in applicable_faults(layout.twin(item.twin_id).model)
    PlantPhysics(layout, schedule=schedule)  # every item is accepted


def test_command_statuses(physics: PlantPhysics, layout: PlantLayout) -> None:
    cnc, station = _id("cnc-04"), _id("inspection-02")
    assert physics.execute(cnc, "setSpindleSpeed", 6000) == {"status": 200, "response": None}
    assert physics.state(cnc)["spindleSetpoint"] == 6000
    too_fast = physics.execute(cnc, "setSpindleSpeed", 30000)
    assert too_fast["status"] == 400 and too_fast["error"].startswith("rpm: 30000")
    wrong_type = physics.execute(cnc, "setSpindleSpeed", "fast")
    assert wrong_type["status"] == 400 and "rpm" in wrong_type["error"]
    assert physics.execute(cnc, "start", {"now": True})["status"] == 400
    assert physics.execute(station, "inspect", None)["status"] == 400
    assert physics.execute(cnc, "inspect", {})["status"] == 404
    assert physics.execute(_id("nope-1"), "start", None)["status"] == 404
    assert physics.execute(_id("conveyor-02"), "setSpeed", 1.2)["status"] == 200
    assert physics.execute(_id("molding-02"), "setBarrelTemperature", 500)["status"] == 400
    result = physics.execute(station, "inspect", {"partId": "p-17", "imageUri": "s3://x/p-17"})
    assert result["status"] == 200
    command = parse_models(layout.models).interface(layout.twin(station).model).contents["inspect"]
    assert isinstance(command, Command) and command.response is not None
    assert validate_value(result["response"], command.response.schema) == []  # type: ignore[arg-type]
    again = physics.execute(station, "inspect", {"partId": "p-17", "imageUri": "s3://x/p-17"})
    assert again == result
