"""twinforge's own FMUs: built from source, valid, and physically right (hand-checked
numbers, affinity laws, time constants, faults), with exact state round trips."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fmpy.validation import validate_fmu

from twinforge.physics.build import build_fmu
from twinforge.physics.errors import FmuError
from twinforge.physics.fmi import FmuInstance, LoadedFmu
from twinforge.physics.model_description import read_description
from twinforge.sim.fmus import FMU_NAMES, HERE, assemble_source_fmu, fmu_path

PUMP_OUT = (
    "flow",
    "pressure",
    "electricPower",
    "motorCurrent",
    "windingTemperature",
    "bearingTemperature",
    "vibration",
)
ZONES = ("zone1Temperature", "zone2Temperature", "zone3Temperature")
E1 = 1.0 - math.exp(-1.0)


@pytest.fixture
def start(loaded: dict[str, LoadedFmu]) -> Iterator:
    """Start an initialized instance of one FMU; every one is closed after the test."""
    made: list[FmuInstance] = []

    def start(name: str, values: Mapping[str, float] = {}) -> FmuInstance:
        instance = loaded[name].instantiate(f"{name}-{len(made)}")
        made.append(instance)
        instance.initialize(0.0, values)
        return instance

    yield start
    for instance in made:
        instance.close()


def run(instance: FmuInstance, seconds: float, dt: float = 1.0) -> None:
    for _ in range(round(seconds / dt)):
        instance.step(dt)


# -- building -----------------------------------------------------------------------


@pytest.mark.parametrize("name", FMU_NAMES)
def test_each_fmu_is_built_from_source_and_valid(name: str, our_fmus: dict[str, Path]) -> None:
    path = our_fmus[name]
    assert validate_fmu(str(path)) == []
    description = read_description(path)
    assert description.has_binary and description.has_sources
    assert description.model_identifier == f"twinforge_{name}"
    assert description.default_step_s == 1.0
    assert description.can_serialize_state
    for variable in description.variables.values():
        assert variable.unit and variable.start is not None, variable.name


def test_a_second_build_is_a_cache_hit(
    our_fmus: dict[str, Path], fmu_cache: Path, tmp_path: Path
) -> None:
    built = our_fmus["pump"]
    stamp = built.stat().st_mtime_ns
    began = time.perf_counter()
    again = build_fmu(assemble_source_fmu(HERE / "pump", tmp_path / "pump"), fmu_cache)
    assert again == built and built.stat().st_mtime_ns == stamp
    assert time.perf_counter() - began < 1.0  # no compiler ran
    assert fmu_path("pump", fmu_cache) is built  # and the process remembers it


def test_two_processes_building_at_once_get_the_same_valid_fmu(tmp_path: Path) -> None:
    script = "import sys; from twinforge.sim.fmus import fmu_path; print(fmu_path(*sys.argv[1:]))"
    args = [sys.executable, "-c", script, "cnc_spindle", str(tmp_path)]
    builders = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    paths = {builder.communicate(timeout=120)[0].strip() for builder in builders}
    assert [builder.returncode for builder in builders] == [0, 0]
    assert len(paths) == 1 and validate_fmu(paths.pop()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_an_unknown_fmu_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'boiler' is not one of"):
        fmu_path("boiler")


@pytest.mark.parametrize("name", FMU_NAMES)
def test_the_binary_starts_from_the_descriptions_values(
    name: str, loaded: dict[str, LoadedFmu]
) -> None:
    """The C variable table and modelDescription.xml agree: same references, same starts."""
    description = loaded[name].description
    instance = loaded[name].instantiate("fresh")
    try:
        values = instance.get(list(description.variables))
    finally:
        instance.close()
    assert values == {n: float(v.start) for n, v in description.variables.items()}


def test_bad_values_are_refused_and_change_nothing(start) -> None:
    pump = start("pump")
    with pytest.raises(
        FmuError,
        match=r"instance pump-0, set flow at t=0: returned Error "
        r"\(setReal: flow is an output and cannot be set\)",
    ):
        pump.set({"flow": 1.0})
    with pytest.raises(
        FmuError,
        match=r"fmi2SetReal at t=0: returned Error \(setReal: bearingWear = 1.5 is outside \[0, 1\]\)",
    ):
        pump.real_setter(["speed", "bearingWear"])([1000.0, 1.5])
    with pytest.raises(FmuError, match=r"returned Error \(setReal: speed is nan\)"):
        pump.real_setter(["speed"])([math.nan])
    with pytest.raises(FmuError, match="no variable 'rpm'"):
        pump.set({"rpm": 1.0})
    assert pump.get(["speed", "bearingWear"]) == {"speed": 2900.0, "bearingWear": 0.0}


def test_an_input_out_of_range_is_clamped(start) -> None:
    """Inputs are measurements: noise past a limit must not stop the physics."""
    pump = start("pump")
    pump.real_setter(["valvePosition", "speed"])([1.02, -0.4])
    assert pump.get(["valvePosition", "speed"]) == {"valvePosition": 1.0, "speed": 0.0}


# -- pump -----------------------------------------------------------------------------


def test_pump_at_the_rated_point_matches_the_hand_calculation(start) -> None:
    pump = start("pump")
    run(pump, 10)
    out = pump.get(PUMP_OUT)
    expected = {"flow": 40.0, "pressure": 4.08, "electricPower": 7.57, "motorCurrent": 12.7}
    for name, value in expected.items():
        assert out[name] == pytest.approx(value, rel=0.01), name
    # a healthy twin starts at its steady state: nothing moved in 10 s
    assert out["windingTemperature"] == pytest.approx(25 + 45 * (out["motorCurrent"] / 13) ** 2)
    assert out["bearingTemperature"] == pytest.approx(25 + 15)


def test_pump_follows_the_affinity_laws(start) -> None:
    rated = start("pump").get(["flow", "pressure"])
    half = start("pump", {"speed": 1450}).get(["flow", "pressure"])
    assert half["flow"] == pytest.approx(rated["flow"] / 2, rel=1e-9)
    assert half["pressure"] == pytest.approx(rated["pressure"] / 4, rel=1e-9)


def test_a_closed_valve_stops_the_flow_at_shutoff_pressure(start) -> None:
    pump = start("pump", {"valvePosition": 0.0})
    assert pump.get(["flow", "pressure"]) == {"flow": 0.0, "pressure": 6.0}


def test_the_winding_follows_a_current_step_with_its_time_constant(start) -> None:
    pump = start("pump")
    before = pump.get(["windingTemperature"])["windingTemperature"]
    pump.set({"speed": 2000.0})
    run(pump, 900)  # tauWinding
    after = pump.get(["windingTemperature", "motorCurrent"])
    target = 25 + 45 * (after["motorCurrent"] / 13) ** 2
    fraction = (after["windingTemperature"] - before) / (target - before)
    assert fraction == pytest.approx(E1, rel=0.02)


def test_bearing_wear_raises_vibration_by_20_mm_s_per_unit(start) -> None:
    healthy = start("pump").get(["vibration"])["vibration"]
    worn = start("pump", {"bearingWear": 0.5}).get(["vibration"])["vibration"]
    assert worn - healthy == pytest.approx(10.0)


# -- molding barrel -------------------------------------------------------------------


def test_the_barrel_holds_its_set_point(start) -> None:
    barrel = start("molding_barrel")
    run(barrel, 600)
    out = barrel.get([*ZONES, "heaterPower", "meltTemperature", "barrelTemperature"])
    for zone in ZONES:
        assert abs(out[zone] - 220.0) < 1.0, zone
    assert 10.0 <= out["heaterPower"] <= 20.0
    assert out["meltTemperature"] > out["barrelTemperature"]


def test_the_barrel_follows_a_set_point_step_in_about_60_s(start) -> None:
    barrel = start("molding_barrel")
    barrel.set({"barrelSetpoint": 224.0})  # small enough that no heater saturates
    run(barrel, 60)
    fraction = (barrel.get(["zone2Temperature"])["zone2Temperature"] - 220.0) / 4.0
    assert 0.55 < fraction < 0.72
    run(barrel, 840)
    for zone, value in barrel.get(ZONES).items():
        assert abs(value - 224.0) < 1.0, zone


def test_a_welded_heater_contactor_overheats_every_zone(start) -> None:
    barrel = start("molding_barrel")
    barrel.set({"heaterStuckOn": 1.0})
    run(barrel, 600)
    out = barrel.get(ZONES)
    # Each zone heads for ambient + (8 kW + shear) / 22 W/K, about 395 degC, with a
    # time constant of C / G = 455 s: 600 s take it about 73% of the way from 220.
    for zone, value in out.items():
        assert 330.0 < value < 370.0, (zone, value)
    assert out["zone1Temperature"] < out["zone2Temperature"] < out["zone3Temperature"]


def test_a_failed_heater_leaves_zone_1_below_its_set_point(start) -> None:
    barrel = start("molding_barrel")
    barrel.set({"heaterFailure": 1.0})
    run(barrel, 600)
    out = barrel.get(ZONES)
    assert out["zone1Temperature"] < 200.0
    assert abs(out["zone3Temperature"] - 220.0) < 1.0


def test_melt_temperature_rises_with_screw_speed_and_falls_with_shorter_cycles(start) -> None:
    def melt(**inputs: float) -> float:
        return start("molding_barrel", inputs).get(["meltTemperature"])["meltTemperature"]

    nominal = melt()
    assert melt(screwSpeed=180.0) > nominal > melt(cycleTime=14.0)


# -- cnc spindle ----------------------------------------------------------------------


def test_the_spindle_starts_at_its_steady_state(start) -> None:
    spindle = start("cnc_spindle")
    run(spindle, 5)
    out = spindle.get(["power", "spindleTemperature", "vibration"])
    assert out == pytest.approx({"power": 12.8, "spindleTemperature": 43.0, "vibration": 1.4})
    idle = start("cnc_spindle", {"spindleSpeed": 0.0}).get(["power", "spindleTemperature"])
    assert idle == pytest.approx({"power": 0.8, "spindleTemperature": 24.0})
    failed = start("cnc_spindle", {"coolantFailure": 1.0, "bearingWear": 0.2})
    assert failed.get(["spindleTemperature"])["spindleTemperature"] == pytest.approx(136.0)
    assert failed.get(["vibration"])["vibration"] == pytest.approx(6.4)


def test_the_spindle_heats_with_its_thermal_time_constant(start) -> None:
    spindle = start("cnc_spindle")
    spindle.set({"spindleLoad": 1.0})
    run(spindle, 40)  # tauThermal
    fraction = (spindle.get(["spindleTemperature"])["spindleTemperature"] - 43.0) / 19.0
    assert fraction == pytest.approx(E1, rel=0.02)


# -- state ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "change", "outputs"),
    [
        ("pump", {"speed": 2000.0}, PUMP_OUT),
        ("molding_barrel", {"barrelSetpoint": 240.0}, (*ZONES, "heaterPower")),
        ("faulty3", {"u": 3.0}, ("y",)),
    ],
)
def test_a_saved_state_continues_identically(
    start, name: str, change: dict, outputs: tuple[str, ...]
) -> None:
    first = start(name)
    first.set(change)
    run(first, 30)
    saved, at = first.save_state(), first.time

    def continuation(instance: FmuInstance) -> list[list[float]]:
        read = instance.real_getter(outputs)
        trace = []
        for _ in range(50):
            instance.step(1.0)
            trace.append(read())
        return trace

    reference = continuation(first)
    first.load_state(saved, at)
    assert first.time == at
    assert continuation(first) == reference
    other = start(name)  # another instance, started elsewhere, takes the state over
    other.load_state(saved, at)
    assert continuation(other) == reference


def test_a_state_of_another_model_is_refused(start) -> None:
    saved = start("pump").save_state()
    with pytest.raises(
        FmuError,
        match=r"deserializeFMUState at t=0: returned Error "
        r"\(deserializeFMUstate: the state is of model",
    ):
        start("cnc_spindle").load_state(saved, 0.0)
