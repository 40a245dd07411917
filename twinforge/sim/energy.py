"""Simulated 15-minute power history per machine: shift patterns, base and production
load per machine kind, start-up peaks, breaks, random downtime, noise and holidays.

Plain numpy, vectorized per machine (a year of 20 machines takes well under a second):
this feeds the power forecasts' training and evaluation, not the real-time plant of
:mod:`twinforge.sim.machines`, whose healthy power bands it keeps to.

Timestamps are plant local time: shifts, weekdays and holidays read a timestamp's own
fields, whatever its time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import numpy as np

from twinforge.sim.layout import CNC, CONVEYOR, ID_PREFIX, MOLDING, PUMP
from twinforge.sim.machines import NORMAL_BANDS

SLOT_MINUTES = 15
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
SLOTS_PER_WEEK = 7 * SLOTS_PER_DAY

#: Shift patterns: on-times per weekday (Monday first) as (start hour, end hour) windows,
#: and the breaks (start hour, 30 minutes each) within them.
SHIFT_PATTERNS: dict[str, tuple[tuple[tuple[tuple[float, float], ...], ...], tuple[float, ...]]] = {
    "one": ((((6.0, 14.5),),) * 5 + ((), ()), (10.0,)),
    "two": ((((6.0, 22.0),),) * 5 + (((6.0, 14.0),), ()), (10.0, 18.0)),
    # Three shifts: from Monday 06:00 through Saturday 06:00 without a stop.
    "three": (
        (((6.0, 24.0),),) + (((0.0, 24.0),),) * 4 + (((0.0, 6.0),), ()),
        (2.0, 10.0, 18.0),
    ),
}

#: Machine kinds simulated here, with their share of a generated fleet.
KINDS = (CNC, MOLDING, PUMP, CONVEYOR)
_KIND_WEIGHTS = (0.35, 0.25, 0.2, 0.2)

#: Per kind: idle (base) and full production load as fractions within the healthy powerKw
#: band of :data:`~twinforge.sim.machines.NORMAL_BANDS`, start-up peak factor, slot noise
#: while producing (CNC part programs vary most), share of production load kept in breaks.
_KIND_LOAD = {
    CNC: {"base": (0.01, 0.03), "prod": (0.55, 0.8), "peak": 1.2, "noise": 0.08, "brk": 0.2},
    MOLDING: {"base": (0.0, 0.1), "prod": (0.55, 0.75), "peak": 1.3, "noise": 0.04, "brk": 0.6},
    PUMP: {"base": (0.05, 0.2), "prod": (0.6, 0.8), "peak": 1.35, "noise": 0.05, "brk": 0.5},
    CONVEYOR: {"base": (0.0, 0.05), "prod": (0.6, 0.85), "peak": 1.3, "noise": 0.05, "brk": 0.1},
}
_KIND_PATTERNS = {
    CNC: ("one", "two", "two", "three"),
    MOLDING: ("two", "three", "three"),
    PUMP: ("two", "three"),
    CONVEYOR: ("one", "two", "three"),
}


@dataclass(frozen=True)
class MachineSpec:
    """One machine's load profile; ``changes`` switch its shift pattern from a date on."""

    machine_id: str
    kind: str
    pattern: str
    base_kw: float
    production_kw: float
    utilization: float = 0.85
    downtime_per_day: float = 0.15
    changes: tuple[tuple[date, str], ...] = ()


@dataclass(frozen=True)
class PowerSeries:
    """A machine's power, one mean kW per 15-minute slot from ``start`` on."""

    machine_id: str
    kind: str
    start: datetime
    kw: np.ndarray
    holidays: tuple[date, ...] = field(default=())


def fleet(n: int, *, seed: int, first_number: int = 1) -> list[MachineSpec]:
    """``n`` machines of mixed kinds, numbered per kind from ``first_number`` (``cnc-01``),
    their loads and shift patterns drawn from ``seed``."""
    if n < 0:
        raise ValueError(f"n: must be at least 0, got {n}")
    rng = np.random.default_rng(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]  # every kind present in small fleets
    if n > len(KINDS):
        kinds[len(KINDS) :] = rng.choice(KINDS, size=n - len(KINDS), p=_KIND_WEIGHTS)
    numbers: dict[str, int] = {}
    specs = []
    for kind in kinds:
        numbers[kind] = numbers.get(kind, first_number - 1) + 1
        low, high = NORMAL_BANDS[kind]["powerKw"]
        load = _KIND_LOAD[kind]
        span = high - low
        specs.append(
            MachineSpec(
                machine_id=f"{ID_PREFIX[kind]}-{numbers[kind]:02d}",
                kind=kind,
                pattern=str(rng.choice(_KIND_PATTERNS[kind])),
                base_kw=low + span * float(rng.uniform(*load["base"])),
                production_kw=low + span * float(rng.uniform(*load["prod"])),
                utilization=float(rng.uniform(0.75, 0.92)),
                downtime_per_day=float(rng.uniform(0.05, 0.25)),
            )
        )
    return specs


def simulate_power(
    machines: int | Sequence[MachineSpec],
    days: int,
    *,
    start: date | datetime,
    seed: int,
    holidays: Iterable[date] = (),
) -> list[PowerSeries]:
    """``days`` of 15-minute power per machine from midnight of ``start``; ``machines`` is a
    fleet or a count (then :func:`fleet` of that size from ``seed``). Holidays stop every
    shift of their day."""
    if days < 0:
        raise ValueError(f"days: must be at least 0, got {days}")
    specs = fleet(machines, seed=seed) if isinstance(machines, int) else list(machines)
    for spec in specs:
        for name in (spec.pattern, *(p for _, p in spec.changes)):
            if name not in SHIFT_PATTERNS:
                raise ValueError(
                    f"pattern: {spec.machine_id} names {name!r}, not one of {sorted(SHIFT_PATTERNS)}"
                )
    first = start.date() if isinstance(start, datetime) else start
    origin = datetime(first.year, first.month, first.day)
    holiday_set = frozenset(holidays)
    day_dates = [first + timedelta(days=d) for d in range(days)]
    weekday = np.array([d.weekday() for d in day_dates], dtype=np.int64)
    is_holiday = np.array([d in holiday_set for d in day_dates], dtype=bool)
    in_range = tuple(sorted(h for h in holiday_set if first <= h < first + timedelta(days=days)))
    rng = np.random.default_rng(seed)
    return [
        PowerSeries(
            machine_id=spec.machine_id,
            kind=spec.kind,
            start=origin,
            kw=_machine_power(spec, day_dates, weekday, is_holiday, rng),
            holidays=in_range,
        )
        for spec in specs
    ]


def _machine_power(
    spec: MachineSpec,
    day_dates: list[date],
    weekday: np.ndarray,
    is_holiday: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    days = len(day_dates)
    names = list(SHIFT_PATTERNS)
    pattern = np.full(days, names.index(spec.pattern), dtype=np.int64)
    for since, name in sorted(spec.changes):
        pattern[np.array([d >= since for d in day_dates], dtype=bool)] = names.index(name)
    on_t, break_t = _TEMPLATES
    on = on_t[pattern, weekday] & ~is_holiday[:, None]
    brk = break_t[pattern, weekday] & on
    on, brk = on.ravel(), brk.ravel()

    # Utilization drifts from day to day (order book, staffing): an AR(1) around the
    # machine's mean, which is what makes yesterday a better guide than last week.
    util = np.empty(days)
    level = 0.0
    shocks = rng.normal(0.0, 0.05, days)
    for d in range(days):
        level = 0.75 * level + shocks[d]
        util[d] = level
    util = np.clip(spec.utilization + util, 0.4, 1.0)

    load = _KIND_LOAD[spec.kind]
    span = spec.production_kw - spec.base_kw
    slot_util = np.repeat(util, SLOTS_PER_DAY) * (1.0 + rng.normal(0.0, load["noise"], on.size))
    kw = np.where(on, spec.base_kw + span * slot_util, spec.base_kw)
    kw = np.where(brk, spec.base_kw + span * load["brk"] * slot_util, kw)

    # Random downtime (tool change, jam, material shortage): the machine idles at base load.
    events = rng.poisson(spec.downtime_per_day * days)
    for begin, length in zip(
        rng.integers(0, max(on.size, 1), events), rng.geometric(1 / 6, events), strict=True
    ):
        kw[begin : begin + length] = np.where(
            on[begin : begin + length], spec.base_kw, kw[begin : begin + length]
        )

    # Start-up peaks: heaters, motors and pumps draw more in the first slot after a stop.
    started = on & ~np.concatenate(([True], on[:-1]))
    kw[started] = spec.base_kw + span * load["peak"]

    kw = kw * (1.0 + rng.normal(0.0, 0.02, kw.size))  # meter and process noise
    low, high = NORMAL_BANDS[spec.kind]["powerKw"]
    return np.clip(kw, low, high)


def _templates() -> tuple[np.ndarray, np.ndarray]:
    """On and break masks per pattern and weekday: (patterns, 7, slots per day)."""
    on = np.zeros((len(SHIFT_PATTERNS), 7, SLOTS_PER_DAY), dtype=bool)
    brk = np.zeros_like(on)
    per_hour = SLOTS_PER_DAY // 24
    for p, (windows, breaks) in enumerate(SHIFT_PATTERNS.values()):
        for day, spans in enumerate(windows):
            for begin, end in spans:
                on[p, day, int(begin * per_hour) : int(end * per_hour)] = True
            for hour in breaks:
                brk[p, day, int(hour * per_hour) : int(hour * per_hour) + 2] = True
    return on, brk


_TEMPLATES = _templates()


@dataclass(frozen=True)
class ForecastScenario:
    """Training and evaluation power for the forecasts' honest evaluation: evaluation is a
    later period, another seed, with what training never saw (``unseen`` says what)."""

    train: list[PowerSeries]
    evaluation: list[PowerSeries]
    unseen: tuple[str, ...]


def forecast_scenario(quick: bool) -> ForecastScenario:
    """Training from January on (seed 11); evaluation from late September (seed 12), after
    a week of warm-up history, with machines not in training, a machine moved from two to
    three shifts, and a Thursday-Friday holiday bridge (training's holidays are single
    Mondays, Fridays and a Wednesday)."""
    trained = fleet(6 if quick else 16, seed=1)
    new = fleet(2 if quick else 4, seed=2, first_number=51)
    changed = next(s for s in trained if s.pattern == "two")
    eval_start = date(2024, 9, 23) if quick else date(2024, 9, 16)
    change_day = date(2024, 10, 1) if quick else date(2024, 10, 14)
    moved = replace(changed, changes=((change_day, "three"),))
    evaluated = [moved if s is changed else s for s in trained] + new
    train_holidays = (
        [date(2024, 1, 1), date(2024, 2, 9)]
        if quick
        else [
            date(2024, 1, 1),
            date(2024, 3, 29),
            date(2024, 4, 1),
            date(2024, 5, 1),
            date(2024, 5, 20),
        ]
    )
    train = simulate_power(
        trained, 49 if quick else 154, start=date(2024, 1, 1), seed=11, holidays=train_holidays
    )
    evaluation = simulate_power(
        evaluated,
        (7 + 14) if quick else (7 + 35),
        start=eval_start,
        seed=12,
        holidays=[date(2024, 10, 3), date(2024, 10, 4)],
    )
    return ForecastScenario(
        train=train,
        evaluation=evaluation,
        unseen=(
            f"machines not in training: {', '.join(s.machine_id for s in new)}",
            f"{changed.machine_id}: two shifts, then three from {change_day}",
            "holiday bridge Thursday 2024-10-03 and Friday 2024-10-04",
        ),
    )
