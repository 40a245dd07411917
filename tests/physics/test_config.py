"""The physics configuration as a user writes it, and the unit maps between a twin and
its FMU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from twinforge.physics.config import load_physics_config
from twinforge.physics.errors import PhysicsConfigError
from twinforge.physics.units import IDENTITY, conversion

PUMP = "dtmi:com:example:Pump;1"


def _binding(**extra: object) -> dict:
    return {"interface": PUMP, "fmu": "pump.fmu", "expected": {"flowRate": "flow"}} | extra


def test_fmu_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "physics.json"
    config.parent.mkdir()
    config.write_text(json.dumps([_binding(inputs={"speed": "speed"})]))
    [binding] = load_physics_config(config)
    assert binding.fmu == (tmp_path / "conf" / "pump.fmu").resolve()
    assert binding.step_s == 1.0 and binding.inputs == {"speed": "speed"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([_binding(step_s=0)], "0.step_s: Input should be greater than 0"),
        ([_binding(expected={})], "0.expected: Dictionary should have at least 1 item"),
        ([_binding(colour="red")], "0.colour: Extra inputs are not permitted"),
        ([_binding(parameters={"bearingWear": math.nan})], "must be a finite number"),
        ([_binding(parameters={"bearingWear": "high"})], "0.parameters.bearingWear"),
        ([_binding(), _binding()], f"1.interface: {PUMP} is bound already by binding 0"),
        ({"interface": PUMP}, "Input should be a valid list"),
        ([{"fmu": "x.fmu", "expected": {"a": "b"}}], "0.interface: Field required"),
    ],
)
def test_bad_configurations_name_the_field(data: object, message: str) -> None:
    with pytest.raises(PhysicsConfigError, match=message.replace("(", r"\(")):
        load_physics_config(data)  # type: ignore[arg-type]


def test_text_that_is_not_json_or_no_file(tmp_path: Path) -> None:
    with pytest.raises(PhysicsConfigError, match="not JSON"):
        load_physics_config("[{")
    with pytest.raises(PhysicsConfigError, match="cannot read"):
        load_physics_config(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("source", "target", "value", "expected"),
    [
        ("degreeCelsius", "K", 20.0, 293.15),
        ("K", "degreeCelsius", 293.15, 20.0),
        ("bar", "Pa", 4.08, 408_000.0),
        ("cubicMetrePerHour", "m3/s", 36.0, 0.01),
        ("revolutionPerMinute", "rad/s", 60.0, 2 * math.pi),
        ("kilowatt", "W", 7.5, 7500.0),
        ("percent", "1", 50.0, 0.5),
        ("degreeCelsius", "°C", 25.0, 25.0),
    ],
)
def test_units_convert_between_dtdl_and_fmu_names(
    source: str, target: str, value: float, expected: float
) -> None:
    found = conversion(source, target)
    assert found is not None
    scale, offset = found
    assert value * scale + offset == pytest.approx(expected)


def test_units_of_different_quantities_do_not_convert() -> None:
    assert conversion("bar", "K") is None
    assert conversion("ampere", "furlongs") is None
    assert conversion("furlongs", "furlongs") == IDENTITY
    assert conversion(None, "bar") == IDENTITY  # undeclared: taken as the same
