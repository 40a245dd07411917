"""The physics configuration: which FMU runs beside the twins of a DTDL interface, what
feeds it and what its outputs are the expected values of.

A JSON list, one binding per interface::

    [{"interface": "dtmi:com:example:Pump;1", "fmu": "pump.fmu", "step_s": 1.0,
      "inputs": {"speed": "speed", "valvePosition": "valvePosition"},
      "parameters": {"ratedSpeed": 2900},
      "expected": {"flowRate": "flow", "pressure": "pressure"}}]

``inputs`` maps FMU inputs to the twin's telemetry or property names, ``parameters`` sets
FMU parameters, ``expected`` maps telemetry names to the FMU outputs that say what they
should be. ``fmu`` is an FMU file or an unpacked FMU folder, relative to the
configuration file. :func:`twinforge.physics.checks.check_binding` checks a binding
against its FMU and its interface.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from twinforge.physics.errors import PhysicsConfigError

Name = Annotated[str, Field(min_length=1, max_length=256)]


class PhysicsBinding(BaseModel):
    """One interface's FMU and how its twins drive it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interface: Name = Field(description="DTMI of the interface; twins of it run the FMU")
    fmu: Path = Field(description="FMU file or unpacked FMU folder")
    step_s: float = Field(default=1.0, gt=0, le=3600, description="FMU communication step")
    max_gap_s: float = Field(
        default=300.0,
        gt=0,
        description="a longer silence restarts the FMU from the next sample, steady",
    )
    inputs: dict[Name, Name] = Field(default_factory=dict)
    """FMU input -> telemetry or property name."""
    parameters: dict[Name, float] = Field(default_factory=dict)
    """FMU parameter -> value."""
    expected: dict[Name, Name] = Field(min_length=1)
    """Telemetry name -> the FMU output that is its expected value."""

    @field_validator("parameters")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        for name, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"parameter {name!r} must be a finite number, got {value}")
        return values


_BINDINGS = TypeAdapter(list[PhysicsBinding])


def load_physics_config(
    source: Path | str | list[dict[str, Any]], *, base_dir: Path | None = None
) -> list[PhysicsBinding]:
    """The bindings of a JSON file, JSON text or decoded list, with ``fmu`` paths made
    absolute (relative to the file, or to ``base_dir``); raises
    :class:`PhysicsConfigError` naming each bad field, and for two bindings of one
    interface."""
    if isinstance(source, Path):
        base_dir = base_dir or source.resolve().parent
        try:
            source = source.read_text(encoding="utf-8")
        except OSError as error:
            raise PhysicsConfigError([f"physics config: cannot read {source}: {error}"]) from None
    try:
        data = json.loads(source) if isinstance(source, str) else source
    except json.JSONDecodeError as error:
        raise PhysicsConfigError([f"physics config: not JSON: {error}"]) from None
    try:
        bindings = _BINDINGS.validate_python(data)
    except ValidationError as error:
        raise PhysicsConfigError(_problems(error, "physics config")) from None
    seen: dict[str, int] = {}
    problems = []
    for index, binding in enumerate(bindings):
        if binding.interface in seen:
            problems.append(
                f"{index}.interface: {binding.interface} is bound already by binding "
                f"{seen[binding.interface]}; an interface runs one FMU"
            )
        seen[binding.interface] = index
    if problems:
        raise PhysicsConfigError(problems)
    base = base_dir or Path.cwd()
    return [b.model_copy(update={"fmu": (base / b.fmu).resolve()}) for b in bindings]


def parse_binding(data: Any, *, field: str = "binding") -> PhysicsBinding:
    """One binding from decoded JSON (an API's argument); raises
    :class:`PhysicsConfigError` naming each bad field under ``field``."""
    try:
        return PhysicsBinding.model_validate(data)
    except ValidationError as error:
        raise PhysicsConfigError(_problems(error, field, prefix=True)) from None


def _problems(error: ValidationError, name: str, *, prefix: bool = False) -> list[str]:
    problems = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"])
        if prefix or not where:
            where = f"{name}.{where}" if where else name
        problems.append(f"{where}: {problem['msg']}")
    return problems
