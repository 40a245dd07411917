"""The sample factory's machines as physics alone, no I/O: one small physical model per
equipment twin of a :class:`~twinforge.sim.layout.PlantLayout`, faults, and command
execution, all on a simulated clock (:class:`PlantPhysics`).

Pumps, molding barrels and CNC spindles run twinforge's own FMUs
(:mod:`twinforge.sim.fmus`), the ones their twins run: each step sets the step's inputs
and fault parameters, steps the FMU by ``dt`` and reads its outputs, which is what a twin
does with each sample, so a healthy machine and its twin agree up to sensor noise. What
the FMUs leave out (process demand, the part program, injection pressure, cycle time,
power spikes, sensor noise, commands and interlocks) is modelled here.

:mod:`twinforge.sim.simulator` runs this in real time over MQTT and OPC UA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np

from twinforge.physics.fmi import FmuInstance, LoadedFmu
from twinforge.sim.fmus import fmu_path
from twinforge.sim.layout import (
    CNC,
    CONVEYOR,
    INSPECTION,
    METER,
    MOLDING,
    PUMP,
    PlantLayout,
    TwinSpec,
)
from twinforge.twin_models import (
    Command,
    Interface,
    Property,
    Telemetry,
    parse_models,
    validate_command_request,
)

log = logging.getLogger(__name__)

BEARING_WEAR = "bearing_wear"
OVERHEATING = "overheating"
POWER_SPIKE = "power_spike"
SENSOR_DROPOUT = "sensor_dropout"
FOULING = "fouling"
HEATER_FAILURE = "heater_failure"
FAULTS = (BEARING_WEAR, OVERHEATING, POWER_SPIKE, SENSOR_DROPOUT, FOULING, HEATER_FAILURE)

#: Decimals of published values; FMU inputs are rounded alike, so that a twin fed the
#: published inputs drives its FMU exactly as the plant did.
DECIMALS = 4

#: A CNC spindle hotter than this refuses ``start`` (the over-temperature interlock).
CNC_TRIP_TEMPERATURE = 80.0

#: Bands the healthy simulation stays in at its default set-points, per model and field;
#: faults push values out of them (tests and anomaly baselines rely on these).
NORMAL_BANDS: dict[str, dict[str, tuple[float, float]]] = {
    CNC: {
        "spindleTemperature": (20.0, 65.0),
        "vibration": (0.0, 4.5),
        "powerKw": (0.5, 26.0),
        "spindleLoad": (0.0, 1.0),
    },
    MOLDING: {
        "barrelTemperature": (205.0, 235.0),
        "meltTemperature": (205.0, 260.0),
        "heaterPowerKw": (3.0, 25.0),
        "powerKw": (15.0, 40.0),
    },
    PUMP: {
        "bearingVibration": (0.0, 2.5),
        "motorCurrent": (5.0, 20.0),
        "powerKw": (3.0, 12.0),
        "bearingTemperature": (30.0, 50.0),
        "windingTemperature": (40.0, 80.0),
        "valvePosition": (0.6, 1.0),
    },
    CONVEYOR: {"powerKw": (0.2, 2.5)},
    INSPECTION: {"defectRate": (0.0, 0.15), "powerKw": (0.4, 0.8)},
}


class CommandError(Exception):
    """A command the simulated PLC refuses: ``status`` 400, 404, 409 or 500."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class ActiveFault:
    """A fault in effect on one twin; times are simulation seconds (``ends_at`` None:
    until cleared). ``field`` is the silenced telemetry field of a sensor dropout;
    ``ramp_s`` the time a gradual fault takes to reach full severity (0: at once)."""

    twin_id: str
    fault: str
    started_at: float
    ends_at: float | None
    field: str | None = None
    ramp_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A fault to inject once the simulation clock reaches ``at_s``."""

    at_s: float
    twin_id: str
    fault: str
    duration_s: float | None = None
    field: str | None = None
    ramp_s: float | None = None
    """None: the machine's default ramp for the fault."""


# -- machine models ------------------------------------------------------------------


def _lag(value: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: exact for any step, so large simulated steps stay stable."""
    return target + (value - target) * math.exp(-dt / tau)


def _in_range(name: str, value: Any, low: float, high: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandError(400, f"{name}: must be a finite number, got {value!r}")
    if value < low:
        raise CommandError(400, f"{name}: {value} {unit} is below the minimum of {low} {unit}")
    if value > high:
        raise CommandError(400, f"{name}: {value} {unit} is above the maximum of {high} {unit}")
    return float(value)


@cache
def _loaded_fmu(name: str) -> LoadedFmu:
    """One loaded FMU per name and process, unpacked beside the built FMU (shared by the
    processes of one machine)."""
    path = fmu_path(name)
    work_dir = path.parent / "unpacked"
    work_dir.mkdir(parents=True, exist_ok=True)
    return LoadedFmu(path, work_dir=work_dir)


class _Machine:
    """One equipment twin's state and physics. Subclasses set the model id, the faults
    that affect them, the field a sensor dropout silences by default, their commands,
    and ``ramps``: the gradual faults and the seconds each takes by default to reach full
    severity (short enough that a fault shows within minutes)."""

    model: ClassVar[str]
    faults_apply: ClassVar[frozenset[str]]
    dropout_field: ClassVar[str]
    ramps: ClassVar[dict[str, float]] = {}

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        self.id = spec.id
        self.rng = rng
        self.running = True
        self.faults: dict[str, ActiveFault] = {}
        self.now = 0.0
        self.dt = 0.0

    def commands(self) -> dict[str, Callable[[Any], Any]]:
        return {}

    def state(self) -> dict[str, Any]:
        return {"running": self.running}

    def set_property(self, name: str, value: Any) -> None:
        raise CommandError(404, f"{name}: {self.id} has no writable property {name!r}")

    def step(self, dt: float) -> dict[str, float]:
        raise NotImplementedError

    # Fault helpers: how long a fault has been active (None: not active).
    def age(self, fault: str) -> float | None:
        active = self.faults.get(fault)
        return None if active is None else max(0.0, self.now - active.started_at)

    def severity(self, fault: str) -> float:
        """0 (no fault) to 1: a gradual fault grows linearly over its ramp."""
        active = self.faults.get(fault)
        if active is None:
            return 0.0
        if active.ramp_s == 0:
            return 1.0
        return min(1.0, max(0.0, self.now - active.started_at) / active.ramp_s)

    def spike(self) -> float:
        """Power multiplier: short spikes while ``power_spike`` is active, always one on
        the fault's first tick so that even a short fault is visible."""
        age = self.age(POWER_SPIKE)
        if age is None:
            return 1.0
        if age <= self.dt + 1e-9 or self.rng.random() < 0.35:
            return float(self.rng.uniform(2.5, 4.0))
        return 1.0

    def noise(self, scale: float) -> float:
        return float(self.rng.normal(0.0, scale))


class _FmuMachine(_Machine):
    """A machine whose physics is one of twinforge's FMUs. ``fault_parameters`` maps a
    fault to the FMU parameter its severity sets."""

    fmu_name: ClassVar[str]
    fmu_outputs: ClassVar[tuple[str, ...]]
    fault_parameters: ClassVar[dict[str, str]]

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self._fmu: FmuInstance | None = None
        self._set: Callable[[list[float]], None] = lambda _: None
        self._get: Callable[[], list[float]] = list

    def run_fmu(
        self, inputs: Mapping[str, float], dt: float
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Set ``inputs`` and the fault parameters, step ``dt`` (0: no step), read the
        outputs; the inputs as set (rounded as published) and the outputs."""
        held = {name: round(value, DECIMALS) for name, value in inputs.items()}
        values = [*held.values(), *(self.severity(f) for f in self.fault_parameters)]
        if self._fmu is None:
            # Initialized for the first inputs: the FMU starts at their steady state.
            names = [*held, *self.fault_parameters.values()]
            instance = _loaded_fmu(self.fmu_name).instantiate(self.id)
            instance.initialize(self.now, dict(zip(names, values, strict=True)))
            self._set = instance.real_setter(names)
            self._get = instance.real_getter(self.fmu_outputs)
            self._fmu = instance
        else:
            self._set(values)
            if dt > 0:
                self._fmu.step(dt)
        return held, dict(zip(self.fmu_outputs, self._get(), strict=True))


class _CncMachine(_FmuMachine):
    model = CNC
    faults_apply = frozenset({BEARING_WEAR, OVERHEATING, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "spindleTemperature"
    # Overheating: the coolant fails over a minute; worn bearings over five.
    ramps: ClassVar[dict[str, float]] = {BEARING_WEAR: 300.0, OVERHEATING: 60.0}
    fmu_name = "cnc_spindle"
    fmu_outputs = ("power", "spindleTemperature", "vibration")
    fault_parameters: ClassVar[dict[str, str]] = {
        BEARING_WEAR: "bearingWear",
        OVERHEATING: "coolantFailure",
    }
    MAX_RPM = 24_000.0

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.setpoint = 12_000.0
        self.feed_rate = float(spec.properties.get("targetFeedRate", 1500.0))
        self.speed = self.setpoint
        # The part program: cutting, then a tool change with the tool out of the cut.
        self.cycle_s = float(rng.uniform(90.0, 150.0))
        self.cycle_at = float(rng.uniform(0.0, self.cycle_s))
        self.temperature = 0.0  # the spindle's, from the FMU on every step

    def commands(self) -> dict[str, Callable[[Any], Any]]:
        return {"start": self.start, "stop": self.stop, "setSpindleSpeed": self.set_speed}

    def state(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "spindleSetpoint": self.setpoint,
            "targetFeedRate": self.feed_rate,
        }

    def start(self, _: Any) -> None:
        if self.temperature > CNC_TRIP_TEMPERATURE:
            raise CommandError(
                409,
                f"start: refused, spindle at {self.temperature:.1f} °C is above the "
                f"{CNC_TRIP_TEMPERATURE:.0f} °C over-temperature interlock",
            )
        self.running = True

    def stop(self, _: Any) -> None:
        self.running = False

    def set_speed(self, rpm: Any) -> None:
        self.setpoint = _in_range("rpm", rpm, 0.0, self.MAX_RPM, "rpm")

    def set_property(self, name: str, value: Any) -> None:
        if name == "targetFeedRate":
            self.feed_rate = _in_range(name, value, 1.0, 20_000.0, "mm/min")
        else:
            super().set_property(name, value)

    def _load(self) -> float:
        if not self.running:
            return 0.0
        cut = min(1.5, max(0.2, self.feed_rate / 2000.0))
        engaged = 1.0 if self.cycle_at < 0.85 * self.cycle_s else 0.2
        return min(1.0, self.speed / self.MAX_RPM * (0.6 + 0.4 * cut) * engaged)

    def step(self, dt: float) -> dict[str, float]:
        target_speed = self.setpoint if self.running else 0.0
        self.speed = _lag(self.speed, target_speed, dt, 0.8)
        if self.running:
            self.cycle_at = (self.cycle_at + dt) % self.cycle_s
        inputs, out = self.run_fmu({"spindleSpeed": self.speed, "spindleLoad": self._load()}, dt)
        self.temperature = out["spindleTemperature"]
        return {
            # The drive reports its encoder speed and the load it commands: exact.
            "spindleSpeed": inputs["spindleSpeed"],
            "spindleLoad": inputs["spindleLoad"],
            "spindleTemperature": self.temperature + self.noise(0.15),
            "vibration": abs(out["vibration"] * (1.0 + self.noise(0.05))),
            "powerKw": out["power"] * (1.0 + self.noise(0.01)) * self.spike(),
        }


class _MoldingMachine(_FmuMachine):
    model = MOLDING
    faults_apply = frozenset({OVERHEATING, HEATER_FAILURE, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "barrelTemperature"
    # The main heater contactor welds shut (overheating) or a heater band burns out: at once.
    ramps: ClassVar[dict[str, float]] = {OVERHEATING: 0.0, HEATER_FAILURE: 0.0}
    fmu_name = "molding_barrel"
    fmu_outputs = ("barrelTemperature", "meltTemperature", "heaterPower")
    fault_parameters: ClassVar[dict[str, str]] = {
        OVERHEATING: "heaterStuckOn",
        HEATER_FAILURE: "heaterFailure",
    }
    MIN_TEMPERATURE, MAX_TEMPERATURE = 160.0, 320.0
    SCREW_SPEED = 120.0  # rpm
    DRIVES_KW = 8.0  # hydraulics, screw drive and controls, besides the heaters

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.setpoint = 220.0
        self.temperature = self.setpoint

    def commands(self) -> dict[str, Callable[[Any], Any]]:
        return {"setBarrelTemperature": self.set_temperature}

    def state(self) -> dict[str, Any]:
        return {"running": self.running, "barrelSetpoint": self.setpoint}

    def set_temperature(self, value: Any) -> None:
        self.setpoint = _in_range(
            "temperature", value, self.MIN_TEMPERATURE, self.MAX_TEMPERATURE, "°C"
        )

    def step(self, dt: float) -> dict[str, float]:
        # A barrel off its set-point slows the cycle (set before the step: the cycle time
        # is an input of the interval it ends); the jitter is the process's own.
        cycle = max(1.0, 28.0 + 0.05 * abs(self.temperature - self.setpoint) + self.noise(0.4))
        inputs, out = self.run_fmu(
            {"barrelSetpoint": self.setpoint, "screwSpeed": self.SCREW_SPEED, "cycleTime": cycle},
            dt,
        )
        self.temperature = out["barrelTemperature"]
        # Hotter melt flows more easily: lower injection pressure.
        pressure = 1100.0 * math.exp(-(self.temperature - 220.0) / 150.0)
        heater = out["heaterPower"]
        power = heater + self.DRIVES_KW + 0.005 * pressure
        return {
            "barrelSetpoint": inputs["barrelSetpoint"],
            "screwSpeed": inputs["screwSpeed"],
            "cycleTime": inputs["cycleTime"],
            "barrelTemperature": self.temperature + self.noise(0.3),
            "meltTemperature": out["meltTemperature"] + self.noise(0.3),
            "heaterPowerKw": heater * (1.0 + self.noise(0.01)),
            "injectionPressure": pressure * (1.0 + self.noise(0.02)),
            "powerKw": power * (1.0 + self.noise(0.015)) * self.spike(),
        }


class _Pump(_FmuMachine):
    model = PUMP
    faults_apply = frozenset({BEARING_WEAR, FOULING, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "pressure"
    ramps: ClassVar[dict[str, float]] = {BEARING_WEAR: 300.0, FOULING: 600.0}
    fmu_name = "pump"
    fmu_outputs = (
        "flow",
        "pressure",
        "vibration",
        "motorCurrent",
        "electricPower",
        "bearingTemperature",
        "windingTemperature",
    )
    fault_parameters: ClassVar[dict[str, str]] = {BEARING_WEAR: "bearingWear", FOULING: "fouling"}
    RATED_SPEED = 2900.0  # rpm
    VALVE_RANGE = (0.6, 1.0)  # the process opens its control valve within this

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.running = spec.properties.get("state", "running") == "running"
        self.valve = 0.85  # process demand, a slow random walk of the control valve

    def step(self, dt: float) -> dict[str, float]:
        low, high = self.VALVE_RANGE
        self.valve = min(high, max(low, self.valve + self.noise(0.01 * math.sqrt(dt))))
        speed = self.RATED_SPEED if self.running else 0.0
        inputs, out = self.run_fmu({"speed": speed, "valvePosition": self.valve}, dt)
        spike = self.spike()
        return {
            "speed": inputs["speed"],
            "valvePosition": inputs["valvePosition"],
            "flowRate": max(0.0, out["flow"] * (1.0 + self.noise(0.01))),
            "pressure": max(0.0, out["pressure"] + self.noise(0.02)),
            "bearingVibration": abs(out["vibration"] * (1.0 + self.noise(0.06))),
            "motorCurrent": out["motorCurrent"] * (1.0 + self.noise(0.01)) * spike,
            "powerKw": out["electricPower"] * (1.0 + self.noise(0.01)) * spike,
            "bearingTemperature": out["bearingTemperature"] + self.noise(0.2),
            "windingTemperature": out["windingTemperature"] + self.noise(0.2),
        }


class _Conveyor(_Machine):
    model = CONVEYOR
    faults_apply = frozenset({BEARING_WEAR, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "speed"
    ramps: ClassVar[dict[str, float]] = {BEARING_WEAR: 150.0}
    MAX_SPEED = 2.0

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.setpoint = 0.5
        self.speed = self.setpoint
        self.load = 35.0

    def commands(self) -> dict[str, Callable[[Any], Any]]:
        return {"setSpeed": self.set_speed}

    def state(self) -> dict[str, Any]:
        return {"running": self.setpoint > 0, "speedSetpoint": self.setpoint}

    def set_speed(self, value: Any) -> None:
        self.setpoint = _in_range("speed", value, 0.0, self.MAX_SPEED, "m/s")

    def step(self, dt: float) -> dict[str, float]:
        self.speed = _lag(self.speed, self.setpoint, dt, 2.0)
        self.load = min(60.0, max(10.0, self.load + self.noise(1.5 * math.sqrt(dt))))
        load = self.load if self.speed > 0.01 else self.load * 0.5
        friction = 1.0 + 1.5 * self.severity(BEARING_WEAR)  # seized idlers drag the belt
        power = 0.15 + (300.0 * friction + 25.0 * load) * self.speed / 1000.0 / 0.85
        return {
            "speed": max(0.0, self.speed * (1.0 + self.noise(0.005))),
            "load": max(0.0, load + self.noise(0.5)),
            "powerKw": power * (1.0 + self.noise(0.01)) * self.spike(),
        }


class _InspectionStation(_Machine):
    model = INSPECTION
    faults_apply = frozenset({POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "defectRate"
    PARTS_PER_SECOND = 0.5
    BASE_DEFECT_RATE = 0.02
    LABELS = ("scratch", "dent", "short_shot", "burr")

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.defect_rate = self.BASE_DEFECT_RATE
        self.inspected = 0

    def commands(self) -> dict[str, Callable[[Any], Any]]:
        return {"inspect": self.inspect}

    def state(self) -> dict[str, Any]:
        return {"running": self.running, "inspected": self.inspected}

    def inspect(self, part: Any) -> dict[str, Any]:
        # The score is a stable function of the part, so a re-inspection agrees with itself.
        key = f"{part.get('partId', '')}|{part.get('imageUri', '')}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        score = int.from_bytes(digest[:4], "big") / 2**32
        defect = score >= 0.9
        label = self.LABELS[digest[4] % len(self.LABELS)] if defect else "ok"
        self._record(1, int(defect))
        return {"defect": defect, "score": round(score, 4), "label": label}

    def _record(self, parts: int, defects: int) -> None:
        if parts:
            self.inspected += parts
            alpha = min(1.0, parts / 50.0)  # moving average over about 50 parts
            self.defect_rate += alpha * (defects / parts - self.defect_rate)

    def step(self, dt: float) -> dict[str, float]:
        parts = int(self.rng.poisson(self.PARTS_PER_SECOND * dt)) if dt > 0 else 0
        self._record(parts, int(self.rng.binomial(parts, self.BASE_DEFECT_RATE)))
        return {
            "defectRate": min(1.0, max(0.0, self.defect_rate)),
            "powerKw": 0.6 * (1.0 + self.noise(0.02)) * self.spike(),
        }


class _PowerMeter(_Machine):
    model = METER
    faults_apply = frozenset({POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "voltage"
    NOMINAL_VOLTAGE, POWER_FACTOR = 400.0, 0.9

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.energy = float(rng.uniform(10_000.0, 90_000.0))
        self.feeder_kw = 0.0  # set by PlantPhysics before each step

    def step(self, dt: float) -> dict[str, float]:
        spike = self.spike()
        power = self.feeder_kw * (1.0 + self.noise(0.002)) * spike
        voltage = self.NOMINAL_VOLTAGE - 0.02 * power + self.noise(1.0)  # feeder droop
        self.energy += power * dt / 3600.0
        return {
            "activePower": power,
            "voltage": voltage,
            "current": power * 1000.0 / (math.sqrt(3) * voltage * self.POWER_FACTOR),
            "energyTotal": self.energy,
            "powerKw": 0.005,  # the meter's own electronics
        }


_MACHINES: dict[str, type[_Machine]] = {
    cls.model: cls
    for cls in (_CncMachine, _MoldingMachine, _Pump, _Conveyor, _InspectionStation, _PowerMeter)
}


def applicable_faults(model: str) -> frozenset[str]:
    """The faults that affect equipment of ``model``."""
    cls = _MACHINES.get(model)
    return frozenset() if cls is None else cls.faults_apply


# -- the plant -----------------------------------------------------------------------


class PlantPhysics:
    """Every equipment twin's simulation on one simulated clock; thread-safe, no I/O.

    ``step(dt)`` advances the clock by ``dt`` simulated seconds and returns what each twin
    publishes (a silenced field is left out). Commands, faults and properties act at once.
    """

    def __init__(
        self, layout: PlantLayout, *, seed: int = 7, schedule: Iterable[ScheduledFault] = ()
    ) -> None:
        self.layout = layout
        self.now = 0.0
        self._lock = threading.RLock()
        models = parse_models(layout.models)
        self._interfaces: dict[str, Interface] = {}
        self._machines: dict[str, _Machine] = {}
        for index, spec in enumerate(layout.equipment()):
            cls = _MACHINES[spec.model]
            self._machines[spec.id] = cls(spec, np.random.default_rng([seed, index]))
            self._interfaces[spec.id] = models.interface(spec.model)
        self._telemetry = {
            twin_id: tuple(n for n, c in i.contents.items() if isinstance(c, Telemetry))
            for twin_id, i in self._interfaces.items()
        }
        self._meters = [m for m in self._machines.values() if isinstance(m, _PowerMeter)]
        self._schedule = sorted(schedule, key=lambda s: s.at_s)
        for item in self._schedule:
            self._check_fault(item.twin_id, item.fault, item.duration_s, item.field, item.ramp_s)
        self._last: dict[str, dict[str, float]] = {}
        self.step(0.0)
        for twin_id, values in self._last.items():
            if set(values) != set(self._telemetry[twin_id]):
                raise RuntimeError(
                    f"simulator for {self._interfaces[twin_id].id} publishes {sorted(values)}, "
                    f"the model declares {sorted(self._telemetry[twin_id])}"
                )

    # -- introspection -----------------------------------------------------------------
    @property
    def twin_ids(self) -> list[str]:
        return list(self._machines)

    def interface(self, twin_id: str) -> Interface:
        return self._interfaces[self._machine(twin_id).id]

    def telemetry_fields(self, twin_id: str) -> tuple[str, ...]:
        """The DTDL telemetry names of the twin, inherited ones included."""
        return self._telemetry[self._machine(twin_id).id]

    def command_names(self, twin_id: str) -> tuple[str, ...]:
        contents = self.interface(twin_id).contents
        return tuple(n for n, c in contents.items() if isinstance(c, Command))

    def writable_properties(self, twin_id: str) -> dict[str, Any]:
        """Writable DTDL properties of the twin and their initial values from the layout."""
        spec = self.layout.twin(twin_id)
        return {
            name: spec.properties.get(name)
            for name, c in self.interface(twin_id).contents.items()
            if isinstance(c, Property) and c.writable
        }

    def values(self, twin_id: str) -> dict[str, float]:
        """The twin's latest simulated values, silenced fields included."""
        with self._lock:
            return dict(self._last[self._machine(twin_id).id])

    def state(self, twin_id: str) -> dict[str, Any]:
        """Running state and set-points of the twin."""
        with self._lock:
            return self._machine(twin_id).state()

    # -- simulation ----------------------------------------------------------------------
    def step(self, dt: float) -> dict[str, dict[str, float]]:
        """Advance ``dt`` simulated seconds; the published values of every twin."""
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"dt: must be a finite number of seconds >= 0, got {dt}")
        with self._lock:
            self.now += dt
            self._run_schedule()
            for machine in self._machines.values():
                self._expire(machine)
                machine.now, machine.dt = self.now, dt
            out: dict[str, dict[str, float]] = {}
            for twin_id, machine in self._machines.items():
                if not isinstance(machine, _PowerMeter):
                    out[twin_id] = machine.step(dt)
            for meter in self._meters:
                meter.feeder_kw = sum(
                    out[t]["powerKw"] for t in self.layout.metered.get(meter.id, ()) if t in out
                )
                out[meter.id] = meter.step(dt)
            self._last = {
                t: {k: round(v, DECIMALS) for k, v in vals.items()} for t, vals in out.items()
            }
            published = {}
            for twin_id, vals in self._last.items():
                dropout = self._machines[twin_id].faults.get(SENSOR_DROPOUT)
                if dropout is not None:
                    vals = {k: v for k, v in vals.items() if k != dropout.field}
                published[twin_id] = vals
            return published

    def _run_schedule(self) -> None:
        while self._schedule and self._schedule[0].at_s <= self.now:
            item = self._schedule.pop(0)
            self.inject(
                item.twin_id, item.fault, item.duration_s, field=item.field, ramp_s=item.ramp_s
            )

    def _expire(self, machine: _Machine) -> None:
        for name, fault in list(machine.faults.items()):
            if fault.ends_at is not None and self.now > fault.ends_at:
                del machine.faults[name]

    # -- faults --------------------------------------------------------------------------
    def inject(
        self,
        twin_id: str,
        fault: str,
        duration_s: float | None = None,
        *,
        field: str | None = None,
        ramp_s: float | None = None,
    ) -> ActiveFault:
        """Start ``fault`` on the twin for ``duration_s`` simulated seconds (None: until
        cleared); injecting an active fault restarts it. ``field`` picks the field a
        ``sensor_dropout`` silences (default: the model's main sensor). ``ramp_s`` is the
        time a gradual fault (bearing wear, fouling, overheating, heater failure) takes
        to reach full severity, e.g. hours for real-world wear (default: the machine's,
        minutes or less)."""
        with self._lock:
            machine = self._check_fault(twin_id, fault, duration_s, field, ramp_s)
            if fault == SENSOR_DROPOUT and field is None:
                field = machine.dropout_field
            if ramp_s is None:
                ramp_s = machine.ramps.get(fault, 0.0)
            ends = None if duration_s is None else self.now + duration_s
            active = ActiveFault(twin_id, fault, self.now, ends, field, float(ramp_s))
            machine.faults[fault] = active
            return dataclasses.replace(active)

    def _check_fault(
        self,
        twin_id: str,
        fault: str,
        duration_s: float | None,
        field: str | None,
        ramp_s: float | None = None,
    ) -> _Machine:
        machine = self._machine(twin_id)
        if fault not in FAULTS:
            raise ValueError(f"fault: {fault!r} is not one of {', '.join(FAULTS)}")
        if fault not in machine.faults_apply:
            raise ValueError(
                f"fault: {fault} does not apply to {twin_id} ({machine.model}); "
                f"it can have {', '.join(sorted(machine.faults_apply))}"
            )
        if duration_s is not None and not (
            isinstance(duration_s, int | float) and math.isfinite(duration_s) and duration_s > 0
        ):
            raise ValueError(f"duration_s: must be a positive number of seconds, got {duration_s}")
        if field is not None and (fault != SENSOR_DROPOUT or field not in self._telemetry[twin_id]):
            raise ValueError(
                f"field: only a sensor_dropout takes a field, one of {self._telemetry[twin_id]}"
            )
        if ramp_s is not None:
            if fault not in machine.ramps:
                raise ValueError(
                    f"ramp_s: {fault} on {twin_id} has no ramp; only "
                    f"{', '.join(sorted(machine.ramps)) or 'no fault'} grow over time there"
                )
            if not (isinstance(ramp_s, int | float) and math.isfinite(ramp_s) and ramp_s >= 0):
                raise ValueError(f"ramp_s: must be a number of seconds >= 0, got {ramp_s}")
        return machine

    def clear(self, twin_id: str, fault: str | None = None) -> list[ActiveFault]:
        """End the twin's faults (or only ``fault``); the ones that were active."""
        with self._lock:
            machine = self._machine(twin_id)
            names = list(machine.faults) if fault is None else [fault]
            return [machine.faults.pop(n) for n in names if n in machine.faults]

    def active_faults(self, twin_id: str | None = None) -> list[ActiveFault]:
        """The faults in effect, for one twin or all."""
        with self._lock:
            machines = self._machines.values() if twin_id is None else [self._machine(twin_id)]
            return [dataclasses.replace(f) for m in machines for f in m.faults.values()]

    # -- commands and properties -----------------------------------------------------------
    def execute(self, twin_id: str, command: str, request: Any) -> dict[str, Any]:
        """Run a command; the wire response ``{"status": 200, "response": ...}`` or
        ``{"status": 400|404|409|500, "error": "..."}``. Never raises."""
        try:
            return {"status": 200, "response": self._execute(twin_id, command, request)}
        except CommandError as exc:
            return {"status": exc.status, "error": exc.message}
        except Exception as exc:  # a bug must not take the PLC down; the caller gets a 500
            log.exception("command %s on %s failed", command, twin_id)
            return {"status": 500, "error": f"{command}: internal error: {exc}"}

    def _execute(self, twin_id: str, command: str, request: Any) -> Any:
        machine = self._machines.get(twin_id)
        if machine is None:
            raise CommandError(404, f"twin: no equipment twin {twin_id!r} in this plant")
        element = self._interfaces[twin_id].contents.get(command)
        if not isinstance(element, Command):
            raise CommandError(
                404, f"command: {twin_id} ({machine.model}) has no command {command!r}"
            )
        problems = validate_command_request(request, element)
        if problems:
            raise CommandError(400, "; ".join(str(p) for p in problems))
        handler = machine.commands().get(command)
        if handler is None:
            raise CommandError(500, f"command: the simulator does not implement {command!r}")
        with self._lock:
            return handler(request)

    def set_property(self, twin_id: str, name: str, value: Any) -> None:
        """Write a writable property (e.g. a CNC's ``targetFeedRate``); raises
        :class:`CommandError` (400) for a value outside the machine's limits."""
        with self._lock:
            self._machine(twin_id).set_property(name, value)

    def _machine(self, twin_id: str) -> _Machine:
        machine = self._machines.get(twin_id)
        if machine is None:
            raise KeyError(f"twin_id: no equipment twin {twin_id!r} in this plant")
        return machine


def random_fault_schedule(
    layout: PlantLayout,
    *,
    count: int,
    horizon_s: float,
    seed: int = 7,
    duration_s: tuple[float, float] = (30.0, 300.0),
) -> list[ScheduledFault]:
    """``count`` faults at random times in ``[0, horizon_s)``, each on a random equipment
    twin with a fault that applies to it, lasting a random time within ``duration_s``."""
    if count < 0:
        raise ValueError(f"count: must be >= 0, got {count}")
    if not horizon_s > 0:
        raise ValueError(f"horizon_s: must be > 0, got {horizon_s}")
    rng = np.random.default_rng(seed)
    equipment = layout.equipment()
    out = []
    for _ in range(count):
        spec = equipment[int(rng.integers(len(equipment)))]
        fault = str(rng.choice(sorted(applicable_faults(spec.model))))
        at = float(rng.uniform(0.0, horizon_s))
        out.append(ScheduledFault(at, spec.id, fault, float(rng.uniform(*duration_s))))
    return sorted(out, key=lambda s: s.at_s)
