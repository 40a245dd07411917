"""A twin's physics in the API: the expected values and residuals of its FMU beside the
live data (``Twin.physics``), what-if runs (``simulate``) and new FMU versions
(``bindFmu``). The ``physicsOff`` subscription is in :mod:`twinforge.graphql.subscription`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import time
from datetime import datetime
from typing import Any, Protocol

import strawberry

from twinforge.graphql.errors import BadInput, NotFoundError
from twinforge.graphql.loaders import PhysicsStatus
from twinforge.graphql.types import load_series, timestamp
from twinforge.physics.asset_physics import expected_field, residual_field
from twinforge.physics.checks import PhysicsPlan
from twinforge.physics.config import PhysicsBinding, parse_binding
from twinforge.physics.errors import FmuError, PhysicsConfigError, PhysicsError
from twinforge.physics.what_if import WhatIf, WhatIfResult


class PhysicsService(PhysicsStatus, Protocol):
    """The server's physics (the fleet part implements it)."""

    def simulate(self, twin_id: str, request: WhatIf) -> WhatIfResult: ...

    def bind_fmu(
        self, interface: str, fmu: bytes, binding: PhysicsBinding | None = None
    ) -> PhysicsPlan: ...


@strawberry.type(description="One value of a physics field at its source time.")
class PhysicsPoint:
    time: datetime
    value: float


@strawberry.type(description="A telemetry field the twin's FMU says what it should be.")
class PhysicsField:
    twin_id: strawberry.Private[str]
    values: strawberry.Private[dict[str, Any]]
    telemetry: str = strawberry.field(description="The telemetry field's name.")

    @strawberry.field(description="The last measured value.")
    def measured(self) -> PhysicsPoint | None:
        return _point(self.values.get(self.telemetry))

    @strawberry.field(description="What the FMU says it should be at that time.")
    def expected(self) -> PhysicsPoint | None:
        return _point(self.values.get(expected_field(self.telemetry)))

    @strawberry.field(description="Measured minus expected: how far the machine is off.")
    def residual(self) -> PhysicsPoint | None:
        return _point(self.values.get(residual_field(self.telemetry)))

    @strawberry.field(description="The newest expected values, oldest first.")
    async def expected_history(self, info: strawberry.Info, last: int = 100) -> list[PhysicsPoint]:
        return await _history(info, self.twin_id, expected_field(self.telemetry), last)

    @strawberry.field(description="The newest residuals, oldest first.")
    async def residual_history(self, info: strawberry.Info, last: int = 100) -> list[PhysicsPoint]:
        return await _history(info, self.twin_id, residual_field(self.telemetry), last)


@strawberry.type(description="A twin's FMU, stepped in time with its telemetry.")
class TwinPhysics:
    twin_id: strawberry.Private[str]
    expected_fields: strawberry.Private[list[str]]
    interface: str = strawberry.field(description="The interface the FMU is bound to.")
    fmu: str = strawberry.field(description="The FMU file of the bound version.")
    running: bool = strawberry.field(description="Whether the FMU steps now.")
    steps: float = strawberry.field(description="FMU steps taken since it (re)started.")
    off: str | None = strawberry.field(description="Why physics is off; null while it runs.")
    quarantined: bool = strawberry.field(
        description="Off because the FMU crashed its host too often; a new version resets it."
    )
    crashes: int = strawberry.field(description="Host crashes counted against this FMU.")

    @classmethod
    def of(cls, twin_id: str, status: dict[str, Any]) -> TwinPhysics:
        return cls(
            twin_id=twin_id,
            expected_fields=list(status["expected"]),
            interface=status["interface"],
            fmu=status["fmu"],
            running=status["running"],
            steps=status["steps"],
            off=status["off"],
            quarantined=status["quarantined"],
            crashes=status["crashes"],
        )

    @strawberry.field(description="Each expected field: measured, expected and residual.")
    async def fields(self, info: strawberry.Info) -> list[PhysicsField]:
        snapshot = await info.context.loaders.snapshot.load(self.twin_id)
        values = {} if snapshot is None else snapshot.get("last", {})
        return [
            PhysicsField(twin_id=self.twin_id, values=values, telemetry=name)
            for name in self.expected_fields
        ]


@strawberry.type(description="One field's values over a what-if run.")
class WhatIfSeries:
    telemetry: str
    values: list[float]


@strawberry.type(description="A what-if run of a twin's FMU; the live twin is untouched.")
class WhatIfRun:
    twin_id: str
    start_time: datetime = strawberry.field(description="Where the twin stood when it began.")
    from_state: bool = strawberry.field(
        description="True: from the FMU's saved state; false: a fresh steady start at the "
        "twin's current inputs (a fixed parameter changed, or the FMU cannot save state)."
    )
    times: list[datetime]
    series: list[WhatIfSeries]
    wall_s: float = strawberry.field(description="Seconds the run took, end to end.")


@strawberry.type(description="An FMU version bound to an interface.")
class BoundFmu:
    interface: str
    fmu: str = strawberry.field(description="The stored FMU file (named by its content).")
    sha256: str
    step_s: float
    inputs: list[str] = strawberry.field(description="Telemetry and properties it is fed.")
    expected: list[str] = strawberry.field(description="Telemetry it gives expected values of.")


async def twin_physics(info: strawberry.Info, twin_id: str) -> TwinPhysics | None:
    status = await info.context.loaders.physics.load(twin_id)
    return None if status is None else TwinPhysics.of(twin_id, status)


async def run_what_if(
    service: PhysicsService,
    twin_id: str,
    horizon_s: float,
    step_s: float | None,
    parameters: Any,
    profiles: Any,
) -> WhatIfRun:
    request = WhatIf(
        horizon_s=horizon_s,
        step_s=step_s,
        parameters=_parameters(parameters),
        profiles=_profiles(profiles),
    )
    started = time.perf_counter()
    try:
        result = await asyncio.to_thread(service.simulate, twin_id, request)
    except PhysicsConfigError as error:
        raise BadInput(str(error)) from None
    except FmuError as error:
        raise BadInput(f"the FMU failed in the what-if run: {error}") from None
    except PhysicsError as error:
        raise NotFoundError(str(error)) from None
    return WhatIfRun(
        twin_id=twin_id,
        start_time=timestamp(result.start_time),  # type: ignore[arg-type]
        from_state=result.from_state,
        times=[timestamp(t) for t in result.times],  # type: ignore[misc]
        series=[WhatIfSeries(telemetry=n, values=v) for n, v in result.series.items()],
        wall_s=time.perf_counter() - started,
    )


async def bind(service: PhysicsService, interface: str, fmu: str, binding: Any) -> BoundFmu:
    try:
        content = base64.b64decode(fmu, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("fmu: must be the FMU file's bytes in base64") from None
    parsed = None
    try:
        if binding is not None:
            if not isinstance(binding, dict):
                raise BadInput(f"binding: must be a JSON object, not {type(binding).__name__}")
            # The uploaded file is the FMU: the binding needs no path of its own.
            parsed = parse_binding({"interface": interface, "fmu": "upload.fmu", **binding})
        plan = await asyncio.to_thread(service.bind_fmu, interface, content, parsed)
    except PhysicsConfigError as error:
        raise BadInput(str(error)) from None
    return BoundFmu(
        interface=plan.interface,
        fmu=plan.fmu.name,
        sha256=hashlib.sha256(content).hexdigest(),
        step_s=plan.step_s,
        inputs=sorted(plan.fields),
        expected=[e.telemetry for e in plan.expected],
    )


def _point(last: dict[str, Any] | None) -> PhysicsPoint | None:
    if last is None:
        return None
    return PhysicsPoint(time=timestamp(last["sourceTime"]), value=last["value"])  # type: ignore[arg-type]


async def _history(info: strawberry.Info, twin_id: str, name: str, last: int) -> list[PhysicsPoint]:
    series = await load_series(info, twin_id, name, last)
    return [
        PhysicsPoint(time=timestamp(t), value=v)  # type: ignore[arg-type]
        for t, v in zip(series["times"], series["values"], strict=True)
    ]


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{field}: must be a finite number, got {value!r}")
    return float(value)


def _parameters(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"parameters: must be a JSON object of numbers, not {type(value).__name__}")
    return {name: _number(v, f"parameters.{name}") for name, v in value.items()}


def _profiles(value: Any) -> dict[str, list[tuple[float, float]]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(
            f"profiles: must be a JSON object of [[offsetS, value], ...] lists, "
            f"not {type(value).__name__}"
        )
    profiles = {}
    for name, points in value.items():
        where = f"profiles.{name}"
        if not isinstance(points, list):
            raise BadInput(f"{where}: must be a list of [offsetS, value] pairs")
        pairs = []
        for index, point in enumerate(points):
            if not isinstance(point, list) or len(point) != 2:
                raise BadInput(f"{where}.{index}: must be an [offsetS, value] pair")
            pairs.append(
                (_number(point[0], f"{where}.{index}"), _number(point[1], f"{where}.{index}"))
            )
        profiles[name] = pairs
    return profiles
