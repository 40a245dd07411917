"""A physics binding checked against its FMU's model description and its DTDL interface,
and compiled into the :class:`PhysicsPlan` an asset steps by.

Every mismatch is reported at once, each naming the configuration's field, the FMU's
variable and the interface's content: ``inputs.speed: FMU input 'speed' is in rpm, Pump
telemetry 'speed' in bar: not the same quantity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinforge.physics.config import PhysicsBinding
from twinforge.physics.errors import FmuError, PhysicsConfigError
from twinforge.physics.model_description import FmuDescription, Variable, read_description
from twinforge.physics.units import Conversion, conversion
from twinforge.twin_models import Interface, PrimitiveSchema, Property, Telemetry

_NUMERIC = frozenset({"double", "float", "integer", "long"})
_INPUT_VARIABILITY = frozenset({"continuous", "discrete"})
_PARAMETER_VARIABILITY = frozenset({"fixed", "tunable"})
_PARAMETER_TYPES = frozenset({"Real", "Float64", "Float32", "Integer", "Int32", "Int64"})


@dataclass(frozen=True, slots=True)
class InputFeed:
    variable: str
    field: str
    to_fmu: Conversion


@dataclass(frozen=True, slots=True)
class ExpectedField:
    telemetry: str
    variable: str
    from_fmu: Conversion


@dataclass(frozen=True, slots=True)
class PhysicsPlan:
    """A checked binding: what an asset of ``interface`` feeds its FMU and reads back,
    with unit conversions resolved."""

    interface: str
    fmu: Path
    step_s: float
    max_gap_s: float
    inputs: tuple[InputFeed, ...]
    parameters: dict[str, float]
    tunable: frozenset[str]
    """Parameters that may change while the FMU runs (the others need a restart)."""
    expected: tuple[ExpectedField, ...]

    @property
    def fields(self) -> frozenset[str]:
        """Telemetry and property names whose values feed the FMU."""
        return frozenset(feed.field for feed in self.inputs)


def check_binding(
    binding: PhysicsBinding, interface: Interface, description: FmuDescription | None = None
) -> PhysicsPlan:
    """The plan of ``binding`` for ``interface``; raises :class:`PhysicsConfigError` with
    every problem found. ``description`` defaults to the one of ``binding.fmu``."""
    if interface.id != binding.interface:
        raise PhysicsConfigError(
            [f"interface: the binding is for {binding.interface}, not {interface.id}"]
        )
    if description is None:
        try:
            description = read_description(binding.fmu)
        except FmuError as error:
            raise PhysicsConfigError([str(error)]) from None  # it names the fmu
    problems: list[str] = []
    where = f"{_short(interface.id)}"
    fmu = Path(binding.fmu).name
    variables = description.variables
    inputs = []
    for name, field in binding.inputs.items():
        variable = _variable(problems, f"inputs.{name}", fmu, variables, name, "input")
        content = interface.contents.get(field)
        if not isinstance(content, Telemetry | Property):
            problems.append(
                f"inputs.{name}: {where} has no telemetry or property {field!r} to feed "
                f"FMU input {name!r}"
            )
            continue
        if variable is None:
            continue
        side = f"{where} {_kind(content)} {field!r}"
        if not variable.is_real or variable.variability not in _INPUT_VARIABILITY:
            problems.append(
                f"inputs.{name}: FMU input {name!r} of {fmu} is {variable.variability} "
                f"{variable.type}; an input fed from {side} must be a continuous or "
                "discrete real"
            )
        if not _numeric(content):
            problems.append(f"inputs.{name}: {side} is not numeric; FMU input {name!r} is real")
        unit = _unit(problems, f"inputs.{name}", side, content.unit, variable, fmu)
        if unit is not None:
            inputs.append(InputFeed(name, field, unit))
    # Every tunable parameter of the FMU, bound or not: a what-if may override any.
    tunable = {
        n for n, v in variables.items() if v.causality == "parameter" and v.variability == "tunable"
    }
    for name in binding.parameters:
        variable = _variable(problems, f"parameters.{name}", fmu, variables, name, "parameter")
        if variable is None:
            continue
        if (
            variable.type not in _PARAMETER_TYPES
            or variable.variability not in _PARAMETER_VARIABILITY
        ):
            problems.append(
                f"parameters.{name}: FMU parameter {name!r} of {fmu} is {variable.variability} "
                f"{variable.type}; twinforge sets fixed or tunable numbers"
            )
    expected = []
    for telemetry, name in binding.expected.items():
        content = interface.contents.get(telemetry)
        variable = _variable(problems, f"expected.{telemetry}", fmu, variables, name, "output")
        if not isinstance(content, Telemetry):
            problems.append(
                f"expected.{telemetry}: {where} has no telemetry {telemetry!r} for FMU "
                f"output {name!r} to be the expected value of"
            )
            continue
        if variable is None:
            continue
        side = f"{where} telemetry {telemetry!r}"
        if not variable.is_real:
            problems.append(
                f"expected.{telemetry}: FMU output {name!r} of {fmu} is {variable.type}; the "
                f"expected value of {side} must be real"
            )
        if not _numeric(content):
            problems.append(f"expected.{telemetry}: {side} is not numeric")
        unit = _unit(problems, f"expected.{telemetry}", side, content.unit, variable, fmu)
        if unit is not None:
            # The FMU's value in the telemetry's unit: the inverse direction of an input.
            scale, offset = unit
            expected.append(ExpectedField(telemetry, name, (1 / scale, -offset / scale)))
    if problems:
        raise PhysicsConfigError(problems)
    return PhysicsPlan(
        binding.interface,
        Path(binding.fmu),
        binding.step_s,
        binding.max_gap_s,
        tuple(inputs),
        dict(binding.parameters),
        frozenset(tunable),
        tuple(expected),
    )


def _variable(
    problems: list[str],
    at: str,
    fmu: str,
    variables: dict[str, Variable],
    name: str,
    causality: str,
) -> Variable | None:
    variable = variables.get(name)
    if variable is None:
        choices = sorted(n for n, v in variables.items() if v.causality == causality)
        problems.append(
            f"{at}: {fmu} has no {causality} {name!r} (its {causality}s: "
            f"{', '.join(choices) or 'none'})"
        )
        return None
    if variable.causality != causality:
        problems.append(
            f"{at}: {name!r} of {fmu} has causality {variable.causality}, not {causality}"
        )
        return None
    return variable


def _unit(
    problems: list[str],
    at: str,
    side: str,
    dtdl_unit: str | None,
    variable: Variable,
    fmu: str,
) -> Conversion | None:
    """The map from the twin's unit to the FMU variable's."""
    found = conversion(dtdl_unit, variable.unit)
    if found is None:
        problems.append(
            f"{at}: FMU {variable.causality} {variable.name!r} of {fmu} is in "
            f"{variable.unit}, {side} in {dtdl_unit}: not the same quantity"
        )
    return found


def _numeric(content: Telemetry | Property) -> bool:
    schema = content.schema
    return isinstance(schema, PrimitiveSchema) and schema.name in _NUMERIC


def _kind(content: Telemetry | Property) -> str:
    return "telemetry" if isinstance(content, Telemetry) else "property"


def _short(dtmi: str) -> str:
    """``dtmi:com:example:Pump;1`` -> ``Pump``: errors read better with the local name."""
    return dtmi.rsplit(":", 1)[-1].split(";", 1)[0]
