"""One twin's FMU, stepped in time with its telemetry.

Each sample moves the FMU to the sample's source time, in steps of at most the plan's
``step_s``: the sample's inputs are taken as the inputs over the interval that ends with
it (the simulated plant computes its values so), and inputs a sample does not carry keep
their last value. The FMU's clock is the source clock, so it cannot drift from the
machine's. A sample older than the FMU's clock (a late delivery) gets no derived values;
a silence longer than ``max_gap_s`` restarts the FMU from the next sample, initialized at
steady state for its inputs.

For each expected field the sample gets ``<field>.expected`` and, when it carries the
field, ``<field>.residual`` (measured minus expected): derived live values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twinforge.physics.checks import PhysicsPlan
from twinforge.physics.fmi import FmuInstance, LoadedFmu

EXPECTED = ".expected"
RESIDUAL = ".residual"


def expected_field(telemetry: str) -> str:
    return telemetry + EXPECTED


def residual_field(telemetry: str) -> str:
    return telemetry + RESIDUAL


@dataclass(frozen=True, slots=True)
class PhysicsState:
    """Where a twin's FMU stands: what a what-if run starts from."""

    time: float
    inputs: dict[str, float]
    """FMU input -> value (FMU units) held now."""
    fmu_state: bytes | None
    """The FMU's serialized state, if the FMU can serialize it."""


class AssetPhysics:
    """The FMU instance of one twin and the inputs it holds."""

    def __init__(self, plan: PhysicsPlan, fmu: LoadedFmu, twin_id: str) -> None:
        self.plan = plan
        self.fmu = fmu
        self.twin_id = twin_id
        self.steps = 0
        variables = fmu.description.variables
        self._feeds = [(f.field, index, f.to_fmu) for index, f in enumerate(plan.inputs)]
        self._input_names = [f.variable for f in plan.inputs]
        self._inputs = [float(variables[n].start or 0.0) for n in self._input_names]
        self._outputs = [e.variable for e in plan.expected]
        self._expected = [
            (e.telemetry, expected_field(e.telemetry), residual_field(e.telemetry), e.from_fmu)
            for e in plan.expected
        ]
        self._instance: FmuInstance | None = None
        self._time = -math.inf

    @property
    def running(self) -> bool:
        return self._instance is not None

    def update(self, values: Mapping[str, Any], source_time: float) -> dict[str, float]:
        """Feed one sample; its derived values (none for a late sample)."""
        if source_time < self._time:
            return {}
        changed = False
        for name, index, (scale, offset) in self._feeds:
            value = values.get(name)
            if value is not None and not isinstance(value, bool):
                self._inputs[index] = value * scale + offset
                changed = True
        instance = self._instance
        if instance is None or source_time - self._time > self.plan.max_gap_s:
            instance = self._start(source_time)
        elif source_time > self._time:
            if changed:
                self._set(self._inputs)
            step, time = self.plan.step_s, self._time
            while source_time - time > 1e-9:
                dt = min(step, source_time - time)
                instance.step(dt)
                time += dt
                self.steps += 1
            self._time = source_time
        elif changed:  # a second sample at the same time: new inputs, no step
            self._set(self._inputs)
        out = self._get()
        derived: dict[str, float] = {}
        for (telemetry, expected, residual, (scale, offset)), value in zip(
            self._expected, out, strict=True
        ):
            value = value * scale + offset
            derived[expected] = value
            measured = values.get(telemetry)
            if measured is not None and not isinstance(measured, bool):
                derived[residual] = measured - value
        return derived

    def state(self) -> PhysicsState | None:
        """Where the FMU stands now (None before its first sample)."""
        if self._instance is None:
            return None
        saved = self._instance.save_state() if self._instance.can_save_state else None
        return PhysicsState(
            self._time, dict(zip(self._input_names, self._inputs, strict=True)), saved
        )

    def close(self) -> None:
        if self._instance is not None:
            self._instance.close()
            self._instance = None
        self._time = -math.inf

    def _start(self, source_time: float) -> FmuInstance:
        self.close()
        instance = self.fmu.instantiate(self.twin_id)
        try:
            instance.initialize(
                source_time,
                self.plan.parameters | dict(zip(self._input_names, self._inputs, strict=True)),
            )
            self._set = instance.real_setter(self._input_names)
            self._get = instance.real_getter(self._outputs)
        except BaseException:
            instance.close()
            raise
        self._instance, self._time = instance, source_time
        return instance
