"""Pump run-to-failure trajectories from the real pump FMU: bearings that wear from new to
failure under a load of each trajectory's own, read by noisy sensors at a coarse interval.

Training data for remaining-useful-life models (:mod:`twinforge.ml.rul_training`). The
caller picks the wear-rate and load ranges, so that an evaluation can run pumps in
conditions its training never saw.

Wear grows as bearings do: faster under load (speed cubed, valve opening), faster as it
progresses (damaged races spall), with a random rate from sample to sample. The FMU takes
the wear as its ``bearingWear`` parameter and its outputs carry it into vibration,
bearing temperature, friction power and current; the pump fails at wear 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinforge.sim.machines import _loaded_fmu, _Pump

__all__ = ["PUMP_FIELDS", "Trajectory", "run_to_failure"]

#: The pump's telemetry names (as :class:`~twinforge.sim.machines._Pump` publishes them),
#: the columns of :attr:`Trajectory.sensors`.
PUMP_FIELDS = (
    "bearingVibration",
    "motorCurrent",
    "powerKw",
    "bearingTemperature",
    "windingTemperature",
    "flowRate",
    "pressure",
    "valvePosition",
)
_OUTPUTS = _Pump.fmu_outputs
_INPUTS = ("speed", "valvePosition", "bearingWear", "ambientTemperature")
#: The load at which ``wear_rate`` holds: wear scales with (speed / this)^3 and valve / this.
_REFERENCE_SPEED, _REFERENCE_VALVE = 0.925, 0.75
_MAX_SAMPLES = 200_000  # a guard: a rate this slow is a caller's mistake


@dataclass(frozen=True, slots=True)
class Trajectory:
    """One pump from new to failure: ``sensors[i]`` (columns :attr:`fields`) read at
    ``times[i]`` hours, ``rul[i]`` the true hours left then (0 at the last sample)."""

    index: int
    times: np.ndarray
    sensors: np.ndarray
    rul: np.ndarray
    wear: np.ndarray
    """The true bearing wear, 0 new to 1 failed (not observable: for checks)."""
    wear_rate: float
    """Wear per hour at the reference load, this pump's own."""
    speed: float
    """Mean shaft speed, fraction of rated."""
    valve: float
    """Mean valve opening."""
    fields: tuple[str, ...] = PUMP_FIELDS

    @property
    def life(self) -> float:
        return float(self.times[-1])


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name}: must be (low, high) with low <= high, got {value!r}")
    if lo < low or hi > high:
        raise ValueError(f"{name}: must lie within [{low}, {high}], got {value!r}")


def run_to_failure(
    count: int,
    *,
    seed: int,
    wear_rate: tuple[float, float] = (1 / 400, 1 / 150),
    valve: tuple[float, float] = (0.6, 0.9),
    speed: tuple[float, float] = (0.85, 1.0),
    ambient: tuple[float, float] = (20.0, 30.0),
    acceleration: tuple[float, float] = (0.5, 2.0),
    sample_s: float = 1800.0,
    noise: float = 1.0,
) -> list[Trajectory]:
    """``count`` pumps run to failure, seeded by ``seed``. Each draws its wear rate (per
    hour at the reference load), its mean valve opening and speed (fraction of rated),
    ambient temperature and wear acceleration from the given ranges; its load then
    shifts between duty regimes around those means. ``sample_s``: seconds between
    readings (the FMU is stepped by as much; its lags are exact, so coarse steps are
    stable); ``noise``: the sensor noise scale (1: the simulated plant's)."""
    if count < 1:
        raise ValueError(f"count: must be at least 1, got {count}")
    if not sample_s > 0:
        raise ValueError(f"sample_s: must be positive, got {sample_s}")
    if not noise >= 0:
        raise ValueError(f"noise: must be non-negative, got {noise}")
    _check_range("wear_rate", wear_rate, 1e-6, 10.0)
    _check_range("valve", valve, 0.05, 1.0)
    _check_range("speed", speed, 0.3, 2.0)
    _check_range("ambient", ambient, -50.0, 100.0)
    _check_range("acceleration", acceleration, 0.0, 20.0)
    children = np.random.default_rng(seed).spawn(count)
    return [
        _one(
            i,
            rng,
            wear_rate=wear_rate,
            valve=valve,
            speed=speed,
            ambient=ambient,
            acceleration=acceleration,
            sample_s=sample_s,
            noise=noise,
        )
        for i, rng in enumerate(children)
    ]


def _one(
    index: int,
    rng: np.random.Generator,
    *,
    wear_rate: tuple[float, float],
    valve: tuple[float, float],
    speed: tuple[float, float],
    ambient: tuple[float, float],
    acceleration: tuple[float, float],
    sample_s: float,
    noise: float,
) -> Trajectory:
    # Log-uniform: the rates span a factor of a few, and a slow pump is as likely as a fast.
    rate = math.exp(rng.uniform(math.log(wear_rate[0]), math.log(wear_rate[1])))
    base_valve, base_speed = rng.uniform(*valve), rng.uniform(*speed)
    accel = rng.uniform(*acceleration)
    dt_h = sample_s / 3600.0
    regime_left = rng.exponential(24.0)
    v, n = base_valve, base_speed
    wear = 0.0
    instance = _loaded_fmu("pump").instantiate(f"run-to-failure-{index}")
    try:
        start = (n * _Pump.RATED_SPEED, v, 0.0, rng.uniform(*ambient))
        instance.initialize(0.0, dict(zip(_INPUTS, start, strict=True)))
        setter = instance.real_setter(_INPUTS[:3])
        getter = instance.real_getter(_OUTPUTS)
        rows: list[list[float]] = []
        wears: list[float] = []
        loads: list[tuple[float, float]] = []
        while True:
            out = dict(zip(_OUTPUTS, getter(), strict=True))
            rows.append(_read(out, v, rng, noise))
            wears.append(wear)
            loads.append((n, v))
            if wear >= 1.0:
                break
            if len(rows) >= _MAX_SAMPLES:
                raise ValueError(
                    f"wear_rate: {rate:.3g}/h does not reach failure within {_MAX_SAMPLES} "
                    "samples; raise the rate or sample_s"
                )
            # Duty regimes of about a day, around the trajectory's own load.
            regime_left -= dt_h
            if regime_left <= 0:
                regime_left = rng.exponential(24.0)
                v = float(np.clip(base_valve + rng.normal(0.0, 0.05), *valve))
                n = float(np.clip(base_speed + rng.normal(0.0, 0.03), *speed))
            v = float(np.clip(v + rng.normal(0.0, 0.005), *valve))
            stress = (n / _REFERENCE_SPEED) ** 3 * (v / _REFERENCE_VALVE)
            # Lognormal jitter of mean one: wear is irregular from sample to sample.
            jitter = rng.lognormal(-0.5 * 0.4**2, 0.4)
            wear = min(1.0, wear + rate * stress * (1.0 + accel * wear) * jitter * dt_h)
            setter([n * _Pump.RATED_SPEED, v, wear])
            instance.step(sample_s)
    finally:
        instance.close()
    times = np.arange(len(rows), dtype=np.float64) * dt_h
    mean_n, mean_v = np.mean(np.asarray(loads), axis=0)
    return Trajectory(
        index=index,
        times=times,
        sensors=np.asarray(rows, dtype=np.float64),
        rul=times[-1] - times,
        wear=np.asarray(wears),
        wear_rate=rate,
        speed=float(mean_n),
        valve=float(mean_v),
    )


def _read(out: dict[str, float], valve: float, rng: np.random.Generator, noise: float) -> list:
    """The sensors' readings of the FMU's outputs, noisy as :class:`_Pump` makes them."""

    def n(scale: float) -> float:
        return float(rng.normal(0.0, scale * noise))

    return [
        abs(out["vibration"] * (1.0 + n(0.06))),
        out["motorCurrent"] * (1.0 + n(0.01)),
        out["electricPower"] * (1.0 + n(0.01)),
        out["bearingTemperature"] + n(0.2),
        out["windingTemperature"] + n(0.2),
        max(0.0, out["flow"] * (1.0 + n(0.01))),
        max(0.0, out["pressure"] + n(0.02)),
        valve,
    ]
