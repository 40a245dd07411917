"""A binding checked against its FMU's model description and its DTDL interface: every
mismatch is named, with both sides."""

from __future__ import annotations

import pytest

from twinforge.physics.checks import check_binding
from twinforge.physics.config import PhysicsBinding
from twinforge.physics.errors import PhysicsConfigError
from twinforge.sim.fmus import fmu_path
from twinforge.twin_models import parse_models

PUMP = "dtmi:com:example:checks:Pump;1"


def _interface(*contents: dict):
    model = {
        "@context": ["dtmi:dtdl:context;3", "dtmi:dtdl:extension:quantitativeTypes;1"],
        "@id": PUMP,
        "@type": "Interface",
        "contents": list(contents),
    }
    return parse_models([model]).interface(PUMP)


SPEED = {"@type": ["Telemetry", "AngularVelocity"], "name": "speed", "schema": "double",
         "unit": "revolutionPerMinute"}  # fmt: skip
FLOW = {"@type": ["Telemetry", "VolumeFlowRate"], "name": "flowRate", "schema": "double",
        "unit": "litrePerSecond"}  # fmt: skip
TEMPERATURE = {"@type": ["Telemetry", "Temperature"], "name": "bearing", "schema": "double",
               "unit": "kelvin"}  # fmt: skip
STATE = {"@type": "Property", "name": "state", "schema": "string"}


def _binding(**fields: object) -> PhysicsBinding:
    base: dict = {"interface": PUMP, "fmu": fmu_path("pump"), "expected": {"flowRate": "flow"}}
    return PhysicsBinding(**(base | fields))


def test_a_fitting_binding_compiles_with_unit_maps() -> None:
    interface = _interface(SPEED, FLOW, TEMPERATURE)
    plan = check_binding(
        _binding(
            inputs={"speed": "speed"},
            parameters={"bearingWear": 0.2},
            expected={"flowRate": "flow", "bearing": "bearingTemperature"},
        ),
        interface,
    )
    assert [(f.variable, f.field, f.to_fmu) for f in plan.inputs] == [
        ("speed", "speed", (1.0, 0.0))
    ]
    flow, bearing = plan.expected
    assert 40.0 * flow.from_fmu[0] == pytest.approx(40 / 3.6)  # m³/h -> l/s
    assert 25.0 * bearing.from_fmu[0] + bearing.from_fmu[1] == pytest.approx(298.15)  # °C -> K
    assert "bearingWear" in plan.tunable and plan.fields == {"speed"}


def test_every_mismatch_is_named_with_both_sides() -> None:
    interface = _interface(SPEED, FLOW, TEMPERATURE, STATE)
    binding = _binding(
        inputs={"speed": "state", "torque": "speed", "flow": "speed", "valvePosition": "nope"},
        parameters={"bearingWar": 1.0, "speed": 3.0},
        expected={"flowRate": "pressure", "bearing": "flow", "missing": "flow"},
    )
    with pytest.raises(PhysicsConfigError) as raised:
        check_binding(binding, interface)
    problems = raised.value.problems
    expected = [
        "inputs.speed: Pump property 'state' is not numeric; FMU input 'speed' is real",
        "inputs.torque: pump",  # no such FMU input: its inputs are listed
        "inputs.flow: 'flow' of ",  # an output fed as an input
        "inputs.valvePosition: Pump has no telemetry or property 'nope'",
        "parameters.bearingWar: ",
        "parameters.speed: 'speed' of ",
        "expected.flowRate: FMU output 'pressure' of ",  # bar against l/s
        "expected.bearing: FMU output 'flow' of ",  # m³/h against K
        "expected.missing: Pump has no telemetry 'missing'",
    ]
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)
    text = "\n".join(problems)
    assert "has no input 'torque' (its inputs: speed, valvePosition)" in text
    assert "has causality output, not input" in text
    assert "is in bar, Pump telemetry 'flowRate' in litrePerSecond: not the same quantity" in text


def test_an_fmu_that_is_no_fmu_is_a_config_error(tmp_path) -> None:
    junk = tmp_path / "junk.fmu"
    junk.write_bytes(b"not a zip")
    with pytest.raises(PhysicsConfigError, match=r"fmu: .*junk\.fmu"):
        check_binding(_binding(fmu=junk), _interface(FLOW))


def test_the_binding_must_be_for_the_interface() -> None:
    with pytest.raises(PhysicsConfigError, match="interface: the binding is for"):
        check_binding(_binding(interface="dtmi:com:example:Other;1"), _interface(FLOW))
