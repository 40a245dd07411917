"""What-if runs: a twin's FMU run ahead from where it stands, with parameters and input
profiles overridden, on an instance of its own (the live twin is not touched).

Input profiles are piecewise constant: ``[(offset_s, value), ...]`` in the twin's units,
each value held from its offset until the next; before the first offset the input keeps
the twin's current value.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from twinforge.physics.asset_physics import PhysicsState
from twinforge.physics.checks import PhysicsPlan
from twinforge.physics.errors import PhysicsConfigError
from twinforge.physics.fmi import LoadedFmu

#: The longest run one request may ask for, in steps (a day at 1 s is 86,400).
MAX_STEPS = 200_000


@dataclass(frozen=True, slots=True)
class WhatIf:
    """One what-if request."""

    horizon_s: float
    step_s: float | None = None
    """The reporting and FMU step (None: the plan's)."""
    parameters: Mapping[str, float] = field(default_factory=dict)
    profiles: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    """Telemetry or property name feeding an FMU input -> its profile."""


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    times: list[float]
    """Source times, from the start time plus one step to the horizon."""
    series: dict[str, list[float]]
    """Expected telemetry name -> its values at ``times``, in the twin's units."""
    start_time: float
    from_state: bool
    """True when the run started from the twin's saved FMU state, False when from a
    fresh, steady initialization at the twin's current inputs."""


def check_what_if(plan: PhysicsPlan, request: WhatIf, parameters: frozenset[str]) -> None:
    """Raise :class:`PhysicsConfigError` naming each bad field of ``request``;
    ``parameters`` are the FMU's parameter names."""
    problems = []
    step = request.step_s or plan.step_s
    if not (math.isfinite(request.horizon_s) and request.horizon_s > 0):
        problems.append(f"horizonS: must be a positive number of seconds, got {request.horizon_s}")
    if not (math.isfinite(step) and step > 0):
        problems.append(f"stepS: must be a positive number of seconds, got {step}")
    elif math.isfinite(request.horizon_s) and request.horizon_s / step > MAX_STEPS:
        problems.append(
            f"horizonS: {request.horizon_s} s at {step} s steps is more than {MAX_STEPS} steps"
        )
    for name, value in request.parameters.items():
        if name not in parameters:
            problems.append(
                f"parameters.{name}: the FMU has no parameter {name!r} "
                f"(it has {', '.join(sorted(parameters))})"
            )
        elif not math.isfinite(value):
            problems.append(f"parameters.{name}: must be a finite number, got {value}")
    fed = plan.fields
    for name, profile in request.profiles.items():
        if name not in fed:
            problems.append(
                f"profiles.{name}: {name!r} feeds no FMU input (inputs are fed from "
                f"{', '.join(sorted(fed)) or 'nothing'})"
            )
            continue
        offsets = [t for t, _ in profile]
        if not profile:
            problems.append(f"profiles.{name}: needs at least one (offset, value) point")
        elif any(not (math.isfinite(t) and math.isfinite(v)) for t, v in profile):
            problems.append(f"profiles.{name}: offsets and values must be finite numbers")
        elif offsets != sorted(offsets) or offsets[0] < 0:
            problems.append(f"profiles.{name}: offsets must be >= 0 and in ascending order")
    if problems:
        raise PhysicsConfigError(problems)


def simulate(
    plan: PhysicsPlan,
    fmu: LoadedFmu,
    start: PhysicsState,
    request: WhatIf,
) -> WhatIfResult:
    """Run ``request`` from ``start``; raises :class:`PhysicsConfigError` for a bad
    request and :class:`~twinforge.physics.errors.FmuError` for a failing FMU."""
    description = fmu.description
    check_what_if(plan, request, frozenset(description.with_causality("parameter")))
    step = request.step_s or plan.step_s
    names = [f.variable for f in plan.inputs]
    held = [start.inputs.get(n, float(description.variables[n].start or 0.0)) for n in names]
    profiles = []
    for index, feed in enumerate(plan.inputs):
        profile = request.profiles.get(feed.field)
        if profile:
            scale, offset = feed.to_fmu
            offsets = [t for t, _ in profile]
            values = [v * scale + offset for _, v in profile]
            profiles.append((index, offsets, values))
    # A fixed parameter can only change at initialization: its override means a fresh
    # start, as does an FMU that cannot restore a saved state.
    fixed = set(request.parameters) - plan.tunable
    from_state = start.fmu_state is not None and not fixed
    instance = fmu.instantiate(f"what-if-{id(request):x}")
    try:
        if from_state:
            instance.initialize(start.time, plan.parameters | dict(zip(names, held, strict=True)))
            instance.load_state(start.fmu_state, start.time)  # type: ignore[arg-type]
            instance.set(dict(request.parameters))
        else:
            instance.initialize(
                start.time,
                plan.parameters | dict(request.parameters) | dict(zip(names, held, strict=True)),
            )
        set_inputs = instance.real_setter(names)
        get_outputs = instance.real_getter([e.variable for e in plan.expected])
        conversions = [e.from_fmu for e in plan.expected]
        steps = math.ceil(request.horizon_s / step - 1e-9)
        times: list[float] = []
        rows: list[list[float]] = []
        for k in range(1, steps + 1):
            elapsed = min(k * step, request.horizon_s)
            for index, offsets, values in profiles:
                # The value in force over the step that ends at ``elapsed``.
                at = bisect.bisect_left(offsets, elapsed) - 1
                if at >= 0:
                    held[index] = values[at]
            set_inputs(held)
            instance.step(elapsed - (times[-1] - start.time if times else 0.0))
            times.append(start.time + elapsed)
            rows.append(get_outputs())
    finally:
        instance.close()
    series = {
        e.telemetry: [value * scale + offset for value in column]
        for e, (scale, offset), column in zip(
            plan.expected, conversions, zip(*rows, strict=True), strict=True
        )
    }
    return WhatIfResult(times, series, start.time, from_state)
