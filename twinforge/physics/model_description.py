"""An FMU's ``modelDescription.xml`` as plain data: what the configuration checks and the
runner steps by (FMI 2.0 and 3.0, read with fmpy)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fmpy

from twinforge.physics.errors import FmuError

SUPPORTED_VERSIONS = ("2.0", "3.0")
#: FMI type names of the real-valued variables (FMI 2.0, 3.0).
REAL_TYPES = frozenset({"Real", "Float64", "Float32"})


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    value_reference: int
    causality: str
    """parameter, calculatedParameter, input, output, local, independent, structuralParameter"""
    variability: str
    """constant, fixed, tunable, discrete, continuous"""
    type: str
    """the FMI type name: Real (2.0) or Float64 (3.0), Integer, Int32, Boolean, ..."""
    unit: str | None
    start: Any

    @property
    def is_real(self) -> bool:
        return self.type in REAL_TYPES


@dataclass(frozen=True, slots=True)
class FmuDescription:
    fmi_version: str
    model_name: str
    model_identifier: str
    guid: str
    variables: dict[str, Variable]
    default_step_s: float | None
    can_serialize_state: bool
    platforms: tuple[str, ...]
    """Platforms with a binary in the FMU, and ``c-code`` if it carries sources."""

    @property
    def has_binary(self) -> bool:
        return fmpy.platform in self.platforms

    @property
    def has_sources(self) -> bool:
        return "c-code" in self.platforms

    def with_causality(self, causality: str) -> dict[str, Variable]:
        return {n: v for n, v in self.variables.items() if v.causality == causality}


def read_description(path: Path) -> FmuDescription:
    """The description of the FMU file (or unpacked FMU directory) at ``path``; raises
    :class:`FmuError` for a file that is no FMU, or one that is not Co-Simulation FMI 2.0
    or 3.0."""
    name = Path(path).name
    try:
        md = fmpy.read_model_description(str(path), validate=False)
        platforms = tuple(fmpy.supported_platforms(str(path)))
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise FmuError(f"fmu: {name} is not a readable FMU ({error})") from error
    except Exception as error:  # fmpy raises plain Exceptions for malformed descriptions
        raise FmuError(f"fmu: {name} has a malformed modelDescription.xml ({error})") from error
    if md.fmiVersion not in SUPPORTED_VERSIONS:
        raise FmuError(
            f"fmu: {name} is FMI {md.fmiVersion}; twinforge runs FMI "
            f"{' and '.join(SUPPORTED_VERSIONS)} Co-Simulation FMUs"
        )
    if md.coSimulation is None:
        raise FmuError(f"fmu: {name} has no Co-Simulation interface (Model Exchange only)")
    cs = md.coSimulation
    variables = {
        v.name: Variable(
            v.name,
            int(v.valueReference),
            v.causality,
            v.variability,
            v.type,
            v.unit or (v.declaredType.unit if v.declaredType is not None else None),
            v.start,
        )
        for v in md.modelVariables
    }
    experiment = md.defaultExperiment
    step = None if experiment is None or not experiment.stepSize else float(experiment.stepSize)
    return FmuDescription(
        md.fmiVersion,
        md.modelName,
        cs.modelIdentifier,
        md.guid,  # the instantiation token in FMI 3.0
        variables,
        step,
        bool(cs.canSerializeFMUstate and cs.canGetAndSetFMUstate),
        platforms,
    )
