"""The sample factory's machines as physics alone, no I/O: one small physical model per
equipment twin of a :class:`~twinforge.sim.layout.PlantLayout`, faults, and command
execution, all on a simulated clock (:class:`PlantPhysics`).

:mod:`twinforge.sim.simulator` runs this in real time over MQTT and OPC UA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

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
FAULTS = (BEARING_WEAR, OVERHEATING, POWER_SPIKE, SENSOR_DROPOUT)

#: A CNC spindle hotter than this refuses ``start`` (the over-temperature interlock).
CNC_TRIP_TEMPERATURE = 80.0

#: Bands the healthy simulation stays in at its default set-points, per model and field;
#: faults push values out of them (tests and anomaly baselines rely on these).
NORMAL_BANDS: dict[str, dict[str, tuple[float, float]]] = {
    CNC: {"spindleTemperature": (20.0, 65.0), "vibration": (0.0, 4.5), "powerKw": (0.5, 26.0)},
    MOLDING: {"barrelTemperature": (205.0, 235.0), "powerKw": (15.0, 40.0)},
    PUMP: {"bearingVibration": (0.0, 2.5), "motorCurrent": (5.0, 20.0), "powerKw": (3.0, 12.0)},
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
    until cleared). ``field`` is the silenced telemetry field of a sensor dropout."""

    twin_id: str
    fault: str
    started_at: float
    ends_at: float | None
    field: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A fault to inject once the simulation clock reaches ``at_s``."""

    at_s: float
    twin_id: str
    fault: str
    duration_s: float | None = None
    field: str | None = None


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


class _Machine:
    """One equipment twin's state and physics. Subclasses set the model id, the faults
    that affect them, the field a sensor dropout silences by default, and their commands."""

    model: ClassVar[str]
    faults_apply: ClassVar[frozenset[str]]
    dropout_field: ClassVar[str]

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


class _CncMachine(_Machine):
    model = CNC
    faults_apply = frozenset(FAULTS)
    dropout_field = "spindleTemperature"
    MAX_RPM = 24_000.0

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.setpoint = 12_000.0
        self.feed_rate = float(spec.properties.get("targetFeedRate", 1500.0))
        self.speed = self.setpoint
        # The part program: cutting, then a tool change with the tool out of the cut.
        self.cycle_s = float(rng.uniform(90.0, 150.0))
        self.cycle_at = float(rng.uniform(0.0, self.cycle_s))
        self.temperature = self._heat_target(self._load())

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

    @staticmethod
    def _heat_target(load: float) -> float:
        return 24.0 + 38.0 * load

    def step(self, dt: float) -> dict[str, float]:
        target_speed = self.setpoint if self.running else 0.0
        self.speed = _lag(self.speed, target_speed, dt, 0.8)
        if self.running:
            self.cycle_at = (self.cycle_at + dt) % self.cycle_s
        load = self._load()
        heat = self._heat_target(load)
        wear = self.age(BEARING_WEAR)
        hot = self.age(OVERHEATING)
        if hot is not None:
            heat += min(90.0, 1.5 * hot)  # failing coolant: heat builds while it lasts
        if wear is not None:
            heat += min(15.0, 0.1 * wear)  # bearing friction
        self.temperature = _lag(self.temperature, heat, dt, 40.0)
        vibration = (0.3 + 2.2 * self.speed / self.MAX_RPM) * (1.0 + self.noise(0.05))
        if wear is not None:
            vibration += min(25.0, 0.08 * wear) * (1.0 + abs(self.noise(0.2)))
        power = 0.8 + ((2.0 + 20.0 * load) if self.running else 0.0)
        return {
            "spindleSpeed": max(0.0, self.speed * (1.0 + self.noise(0.002))),
            "spindleTemperature": self.temperature + self.noise(0.15),
            "vibration": abs(vibration),
            "powerKw": power * (1.0 + self.noise(0.01)) * self.spike(),
        }


class _MoldingMachine(_Machine):
    model = MOLDING
    faults_apply = frozenset({OVERHEATING, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "barrelTemperature"
    MIN_TEMPERATURE, MAX_TEMPERATURE = 160.0, 320.0

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
        target = self.setpoint
        hot = self.age(OVERHEATING)
        if hot is not None:
            target += min(120.0, 2.0 * hot)  # a heater band stuck on
        self.temperature = _lag(self.temperature, target, dt, 60.0)
        # Hotter melt flows more easily: lower pressure, and a cycle slowed by any deviation.
        pressure = 1100.0 * math.exp(-(self.temperature - 220.0) / 150.0)
        cycle = 28.0 + 0.05 * abs(self.temperature - self.setpoint) + 0.02 * abs(target - 220.0)
        power = 6.0 + 0.03 * (self.temperature - 20.0) + 10.0 + 0.005 * pressure
        return {
            "barrelTemperature": self.temperature + self.noise(0.3),
            "injectionPressure": pressure * (1.0 + self.noise(0.02)),
            "cycleTime": max(1.0, cycle + self.noise(0.4)),
            "powerKw": power * (1.0 + self.noise(0.015)) * self.spike(),
        }


class _Pump(_Machine):
    model = PUMP
    faults_apply = frozenset({BEARING_WEAR, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "pressure"
    NOMINAL_FLOW = 40.0  # m³/h at full speed and nominal demand
    SHUTOFF_PRESSURE = 6.0  # bar
    VOLTAGE, POWER_FACTOR = 400.0, 0.86

    def __init__(self, spec: TwinSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng)
        self.running = spec.properties.get("state", "running") == "running"
        self.demand = 1.0  # process demand, a slow random walk around nominal

    def step(self, dt: float) -> dict[str, float]:
        speed = 1.0 if self.running else 0.0
        self.demand = min(1.1, max(0.7, self.demand + self.noise(0.01 * math.sqrt(dt))))
        flow = self.NOMINAL_FLOW * speed * self.demand * (1.0 + self.noise(0.01))
        # Pump curve: head falls with the square of the flow.
        pressure = max(0.0, self.SHUTOFF_PRESSURE * speed**2 - 1.2e-3 * flow**2)
        hydraulic_kw = flow / 3600.0 * pressure * 1e5 / 1000.0
        power = hydraulic_kw / 0.65 / 0.92
        vibration = (1.0 * speed + 0.1) * (1.0 + self.noise(0.06))
        wear = self.age(BEARING_WEAR)
        if wear is not None:
            vibration += min(20.0, 0.06 * wear) * (1.0 + abs(self.noise(0.2)))
            power *= 1.0 + min(0.3, 0.002 * wear)  # friction
        power *= self.spike()
        current = power * 1000.0 / (math.sqrt(3) * self.VOLTAGE * self.POWER_FACTOR)
        return {
            "flowRate": max(0.0, flow),
            "pressure": pressure + abs(self.noise(0.02)),
            "bearingVibration": abs(vibration),
            "motorCurrent": current * (1.0 + self.noise(0.01)),
            "powerKw": power,
        }


class _Conveyor(_Machine):
    model = CONVEYOR
    faults_apply = frozenset({BEARING_WEAR, POWER_SPIKE, SENSOR_DROPOUT})
    dropout_field = "speed"
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
        friction = 1.0
        wear = self.age(BEARING_WEAR)
        if wear is not None:
            friction += min(1.5, 0.01 * wear)  # seized idlers drag the belt
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
            self._check_fault(item.twin_id, item.fault, item.duration_s, item.field)
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
            self._last = {t: {k: round(v, 4) for k, v in vals.items()} for t, vals in out.items()}
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
            self.inject(item.twin_id, item.fault, item.duration_s, field=item.field)

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
    ) -> ActiveFault:
        """Start ``fault`` on the twin for ``duration_s`` simulated seconds (None: until
        cleared); injecting an active fault restarts it. ``field`` picks the field a
        ``sensor_dropout`` silences (default: the model's main sensor)."""
        with self._lock:
            machine = self._check_fault(twin_id, fault, duration_s, field)
            if fault == SENSOR_DROPOUT and field is None:
                field = machine.dropout_field
            ends = None if duration_s is None else self.now + duration_s
            active = ActiveFault(twin_id, fault, self.now, ends, field)
            machine.faults[fault] = active
            return dataclasses.replace(active)

    def _check_fault(
        self, twin_id: str, fault: str, duration_s: float | None, field: str | None
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
