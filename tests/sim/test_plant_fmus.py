"""The simulated pumps, molding machines and CNC machines run twinforge's FMUs, and the
sample factory's physics bindings fit its DTDL models: a twin running the binding on the
plant's published values agrees with a healthy plant up to sensor noise, and a fault shows
in the residuals as the FMU parameter it sets.

``uv run python tests/sim/test_plant_fmus.py [seconds]`` measures the largest healthy
residual per model and field over a simulated day (or ``seconds``) and prints it as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from twinforge.actors.alarms import load_alarm_rules
from twinforge.physics.asset_physics import AssetPhysics, residual_field
from twinforge.physics.checks import PhysicsPlan, check_binding
from twinforge.physics.fmi import LoadedFmu
from twinforge.sim.factory import ALARM_RULES, sample_physics
from twinforge.sim.layout import CNC, MOLDING, PUMP, PlantLayout, load_factory_models, sample_plant
from twinforge.sim.machines import PlantPhysics, ScheduledFault
from twinforge.twin_models import parse_models

PHYSICS_MODELS = (PUMP, MOLDING, CNC)


def sample_plans() -> dict[str, PhysicsPlan]:
    """The sample bindings checked against the factory's interfaces, as the server does."""
    models = parse_models(load_factory_models())
    return {b.interface: check_binding(b, models.interface(b.interface)) for b in sample_physics()}


class Twins:
    """The twin side: one :class:`AssetPhysics` per bound twin, fed what the plant
    publishes, stamped with the plant's clock."""

    def __init__(self, physics: PlantPhysics, plans: dict[str, PhysicsPlan]) -> None:
        self.physics = physics
        self.fmus = {model: LoadedFmu(plan.fmu) for model, plan in plans.items()}
        self.assets = {
            spec.id: AssetPhysics(plans[spec.model], self.fmus[spec.model], spec.id)
            for spec in physics.layout.equipment()
            if spec.model in plans
        }

    def step(self, dt: float) -> dict[str, dict[str, float]]:
        """Step the plant; each bound twin's derived values."""
        published = self.physics.step(dt)
        return {
            twin: asset.update(published[twin], self.physics.now)
            for twin, asset in self.assets.items()
        }

    def close(self) -> None:
        for asset in self.assets.values():
            asset.close()
        for fmu in self.fmus.values():
            fmu.close()


def healthy_residuals(seconds: int, seed: int = 11) -> dict[str, dict[str, float]]:
    """The largest |residual| per model and field of the healthy sample plant over
    ``seconds`` one-second steps."""
    layout = sample_plant(24)
    plans = sample_plans()
    twins = Twins(PlantPhysics(layout, seed=seed), plans)
    try:
        worst: dict[str, dict[str, float]] = {m: {} for m in plans}
        for _ in range(seconds):
            for twin, derived in twins.step(1.0).items():
                row = worst[layout.twin(twin).model]
                for name, value in derived.items():
                    if name.endswith(".residual"):
                        row[name] = max(row.get(name, 0.0), abs(value))
        return worst
    finally:
        twins.close()


@pytest.fixture(scope="module")
def plans() -> dict[str, PhysicsPlan]:
    return sample_plans()


@pytest.fixture
def twins(layout: PlantLayout, plans: dict[str, PhysicsPlan]) -> Iterator[Twins]:
    twins = Twins(PlantPhysics(layout, seed=11), plans)
    twins.step(0.0)
    yield twins
    twins.close()


def _first(layout: PlantLayout, model: str) -> str:
    return layout.of_model(model)[0].id


def _mean(rows: list[dict[str, dict[str, float]]], twin: str, field: str) -> float:
    values = [row[twin][residual_field(field)] for row in rows]
    return sum(values) / len(values)


def _run(twins: Twins, seconds: int) -> list[dict[str, dict[str, float]]]:
    return [twins.step(1.0) for _ in range(seconds)]


def test_the_sample_bindings_fit_the_factory_models(plans: dict[str, PhysicsPlan]) -> None:
    assert set(plans) == set(PHYSICS_MODELS)
    pump = plans[PUMP]
    assert [(f.variable, f.field) for f in pump.inputs] == [
        ("speed", "speed"),
        ("valvePosition", "valvePosition"),
    ]
    expected = {e.telemetry: (e.variable, e.from_fmu) for e in pump.expected}
    assert expected["powerKw"] == ("electricPower", (1.0, 0.0))
    assert expected["flowRate"] == ("flow", (1.0, 0.0))
    assert {e.telemetry for e in plans[MOLDING].expected} == {
        "barrelTemperature",
        "meltTemperature",
        "heaterPowerKw",
    }
    assert {e.telemetry for e in plans[CNC].expected} == {
        "spindleTemperature",
        "vibration",
        "powerKw",
    }


def test_a_healthy_plant_agrees_with_its_twins_within_noise(
    twins: Twins, layout: PlantLayout
) -> None:
    rows = _run(twins, 900)
    rules = {r.field: r for r in load_alarm_rules(ALARM_RULES) if ".residual" in r.field}
    assert rules, "the sample factory has residual alarm rules"
    # Sensor noise per field (the plant's): a healthy residual stays within 6 sigma.
    noise = {
        PUMP: {
            "flowRate": 0.01 * 40,
            "pressure": 0.02,
            "motorCurrent": 0.01 * 13,
            "bearingVibration": 0.06 * 1.1,
            "bearingTemperature": 0.2,
            "windingTemperature": 0.2,
            "powerKw": 0.01 * 7.6,
        },
        MOLDING: {"barrelTemperature": 0.3, "meltTemperature": 0.3, "heaterPowerKw": 0.01 * 20},
        CNC: {"spindleTemperature": 0.15, "vibration": 0.05 * 2.5, "powerKw": 0.01 * 23},
    }
    for model, fields in noise.items():
        for twin in (t.id for t in layout.of_model(model)):
            for field, sigma in fields.items():
                values = [row[twin][residual_field(field)] for row in rows]
                assert max(map(abs, values)) < 6 * sigma, (twin, field, max(map(abs, values)))
                assert abs(sum(values) / len(values)) < sigma, (twin, field)
                rule = rules.get(residual_field(field))
                if rule is not None and rule.above is not None:
                    assert max(values) < rule.above, (twin, field)


def test_pump_values_are_the_fmus_at_the_healthy_set_point(
    twins: Twins, layout: PlantLayout
) -> None:
    pump = _first(layout, PUMP)
    rows = _run(twins, 60)
    values = twins.physics.values(pump)
    assert values["speed"] == 2900.0 and 0.6 <= values["valvePosition"] <= 1.0
    expected = rows[-1][pump]
    for field in ("flowRate", "pressure", "motorCurrent", "powerKw", "windingTemperature"):
        assert values[field] == pytest.approx(expected[f"{field}.expected"], rel=0.05), field
    # Rated point of the pump curve with the valve as the plant holds it.
    assert 25.0 < expected["flowRate.expected"] <= 40.0
    assert 4.0 <= expected["pressure.expected"] < 5.2


def test_bearing_wear_grows_over_its_ramp_into_the_vibration_residual(
    twins: Twins, layout: PlantLayout
) -> None:
    pump, cnc = _first(layout, PUMP), _first(layout, CNC)
    active = twins.physics.inject(pump, "bearing_wear", ramp_s=1000.0)
    assert active.ramp_s == 1000.0
    assert twins.physics.inject(cnc, "bearing_wear").ramp_s == 300.0  # the default
    rows = _run(twins, 500)
    # bearingWear 0.5 after half the ramp: the pump FMU adds 20 mm/s per unit.
    assert _mean(rows[-20:], pump, "bearingVibration") == pytest.approx(20 * 0.49, abs=1.0)
    assert _mean(rows[:20], pump, "bearingVibration") < 0.5
    # The CNC's spindle (25 mm/s per unit) is fully worn after its default 300 s.
    assert _mean(rows[-20:], cnc, "vibration") == pytest.approx(25.0, abs=2.5)
    assert _mean(rows[-20:], cnc, "spindleTemperature") > 5.0  # bearing friction heats


def test_a_scheduled_fault_keeps_its_ramp(layout: PlantLayout, plans) -> None:
    pump = _first(layout, PUMP)
    schedule = [ScheduledFault(10.0, pump, "bearing_wear", ramp_s=3600.0)]
    twins = Twins(PlantPhysics(layout, seed=3, schedule=schedule), plans)
    try:
        rows = _run(twins, 370)
        assert [f.ramp_s for f in twins.physics.active_faults(pump)] == [3600.0]
        # 360 s into a one-hour ramp: a tenth of full wear, 2 mm/s more vibration.
        assert _mean(rows[-30:], pump, "bearingVibration") == pytest.approx(1.96, abs=0.3)
    finally:
        twins.close()


def test_fouling_costs_the_pump_flow(twins: Twins, layout: PlantLayout) -> None:
    pump = _first(layout, PUMP)
    twins.physics.inject(pump, "fouling", ramp_s=0.0)
    rows = _run(twins, 30)
    assert _mean(rows, pump, "flowRate") < -2.0  # m³/h below the clean pump's
    assert _mean(rows, pump, "motorCurrent") < 0.0


def test_heater_faults_move_the_barrel_off_its_twin(twins: Twins, layout: PlantLayout) -> None:
    stuck, failed = (t.id for t in layout.of_model(MOLDING)[:2])
    twins.physics.inject(stuck, "overheating")
    twins.physics.inject(failed, "heater_failure")
    rows = _run(twins, 600)
    assert _mean(rows[-30:], stuck, "barrelTemperature") > 20.0
    assert _mean(rows[-30:], stuck, "heaterPowerKw") > 0.0
    assert _mean(rows[-30:], failed, "barrelTemperature") < -5.0


def test_failing_coolant_heats_the_spindle_past_its_twin(twins: Twins, layout: PlantLayout) -> None:
    cnc = _first(layout, CNC)
    twins.physics.inject(cnc, "overheating", ramp_s=120.0)
    rows = _run(twins, 400)
    early, late = (
        _mean(rows[:10], cnc, "spindleTemperature"),
        _mean(rows[-10:], cnc, "spindleTemperature"),
    )
    assert early < 5.0 and late == pytest.approx(90.0, abs=5.0)  # coolantFailure 1: +90 K


def test_ramps_are_checked(twins: Twins, layout: PlantLayout) -> None:
    pump, cnc = _first(layout, PUMP), _first(layout, CNC)
    with pytest.raises(ValueError, match=r"ramp_s: power_spike on .* has no ramp"):
        twins.physics.inject(pump, "power_spike", 5.0, ramp_s=10.0)
    with pytest.raises(ValueError, match="ramp_s: must be a number of seconds >= 0"):
        twins.physics.inject(pump, "fouling", ramp_s=-1.0)
    with pytest.raises(ValueError, match="fault: fouling does not apply to"):
        twins.physics.inject(cnc, "fouling")
    with pytest.raises(ValueError, match="ramp_s: must be"):
        PlantPhysics(layout, schedule=[ScheduledFault(1.0, pump, "fouling", ramp_s=float("nan"))])


if __name__ == "__main__":
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 86_400
    measured = healthy_residuals(seconds)
    print(json.dumps({"seconds": seconds, "max_abs_residual": measured}, indent=1))
