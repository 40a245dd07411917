"""Injection molding as a factory records it: machines run lots of one item at one
setting combination, every shot's process values are logged, and quality is known only
per lot (a lot's good and bad part counts), not per shot.

Each shot steps the plant's molding-barrel FMU (with its faults) and the twin's healthy
one on the same inputs, so the shot carries the physics residuals a twin would compute.
Items have an ideal melt window; recipes (setting clusters) far from it, and faults, make
defects. Ground truth per shot (which fault, if any) is kept for evaluation only: what a
factory has, and what training may use, is the lot record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from twinforge.sim.machines import HEATER_FAILURE, OVERHEATING, _loaded_fmu

#: The setting combination of a lot: what the process engineer sets on the machine.
SETTINGS = ("barrelSetpoint", "screwSpeed", "cycleTime")
#: Process values logged per shot, then the residuals the twin's FMU gives them.
PROCESS = ("barrelTemperature", "meltTemperature", "heaterPowerKw", "injectionPressure", "powerKw")
RESIDUALS = ("barrelTemperature.residual", "meltTemperature.residual", "heaterPowerKw.residual")
#: The check ring (non-return valve) of the screw wears: melt leaks back, so injection
#: pressure falls and the cycle wanders. The FMU knows nothing of it (a barrel model):
#: only the process values show it, and its residuals stay healthy.
CHECK_RING_WEAR = "check_ring_wear"
MOLDING_FAULTS = (HEATER_FAILURE, OVERHEATING, CHECK_RING_WEAR)

_FMU_INPUTS = ("barrelSetpoint", "screwSpeed", "cycleTime", "heaterFailure", "heaterStuckOn")
_FMU_OUTPUTS = ("barrelTemperature", "meltTemperature", "heaterPower")


@dataclass(frozen=True, slots=True)
class Item:
    """A molded part: its ideal melt temperature and the recipes engineers run it with
    (barrel set-point, screw speed, cycle time); the last recipe is a poor one."""

    name: str
    ideal_melt: float
    recipes: tuple[tuple[float, float, float], ...]


ITEMS = (
    Item("housing-A", 238.0, ((225.0, 120.0, 28.0), (232.0, 100.0, 30.0), (212.0, 90.0, 34.0))),
    Item("cap-B", 226.0, ((214.0, 110.0, 22.0), (220.0, 95.0, 24.0), (240.0, 140.0, 20.0))),
    Item("gear-C", 250.0, ((240.0, 130.0, 36.0), (246.0, 115.0, 38.0), (226.0, 100.0, 42.0))),
)
#: A recipe no lot of the training period ran (the evaluation period runs it on some
#: lots): the detector must fall back to the nearest trained cluster.
NEW_RECIPES = {"housing-A": (228.0, 135.0, 26.0), "cap-B": (217.0, 125.0, 21.0)}


@dataclass(frozen=True, slots=True)
class Lot:
    """One lot as the quality record has it: ``good`` and ``bad`` part counts."""

    lot_id: str
    facility: str
    machine: str
    item: str
    start_s: float
    end_s: float
    setting: tuple[float, ...]
    good: int
    bad: int

    @property
    def defect_rate(self) -> float:
        return self.bad / max(1, self.good + self.bad)


@dataclass(slots=True)
class MoldingRecords:
    """Every shot of a period, one row each, and the lot records. ``lot`` indexes
    ``lots``; ``fault`` is ground truth (empty: healthy), for evaluation only."""

    times: np.ndarray
    lot: np.ndarray
    settings: np.ndarray
    process: np.ndarray
    residuals: np.ndarray
    fault: np.ndarray
    defect: np.ndarray
    lots: list[Lot] = field(default_factory=list)

    @property
    def features(self) -> np.ndarray:
        """Settings, process values and residuals side by side (see :data:`FEATURES`)."""
        return np.hstack([self.settings, self.process, self.residuals])

    def training_columns(self) -> dict[str, object]:
        """What a factory has for training: the shots and the lot records, by the names
        of :class:`twinforge.ml.anomaly.training.TrainingSet` (no ground truth)."""
        return {
            "features": self.features,
            "names": FEATURES,
            "settings": SETTINGS,
            "groups": self.column("facility") + "/" + self.column("item"),
            "lots": self.column("lot_id"),
            "machines": self.column("machine"),
            "lot_defect_rate": {lot.lot_id: lot.defect_rate for lot in self.lots},
        }

    def column(self, name: str) -> np.ndarray:
        """One lot attribute (``facility``, ``machine``, ``item``, ``lot_id``) per shot."""
        values = np.array([getattr(lot, name) for lot in self.lots], dtype=object)
        return values[self.lot]


FEATURES = (*SETTINGS, *PROCESS, *RESIDUALS)


@dataclass(frozen=True, slots=True)
class FaultEpisode:
    fault: str
    start_s: float
    end_s: float
    ramp_s: float
    severity: float

    def level(self, t: float) -> float:
        if not self.start_s <= t < self.end_s:
            return 0.0
        if self.ramp_s <= 0:
            return self.severity
        return self.severity * min(1.0, (t - self.start_s) / self.ramp_s)


def simulate_lots(
    *,
    seed: int,
    days: int = 7,
    facilities: tuple[str, ...] = ("F1", "F2"),
    machines_per_facility: int = 2,
    faults: tuple[str, ...] = (HEATER_FAILURE, OVERHEATING),
    fault_lots: float = 0.25,
    new_recipes: bool = False,
) -> MoldingRecords:
    """``days`` of molding on ``machines_per_facility`` machines per facility, lots of a
    few hours to a day each; a share ``fault_lots`` of lots has one episode of one of
    ``faults``; with ``new_recipes`` some lots run a recipe of :data:`NEW_RECIPES`."""
    if days < 1:
        raise ValueError(f"days: must be >= 1, got {days}")
    for fault in faults:
        if fault not in MOLDING_FAULTS:
            raise ValueError(f"faults: {fault!r} is not one of {', '.join(MOLDING_FAULTS)}")
    rng = np.random.default_rng(seed)
    rows: list[MoldingRecords] = []
    lots: list[Lot] = []
    for facility in facilities:
        for m in range(machines_per_facility):
            machine = _Molder(f"{facility}-IMM{m + 1}", rng)
            now = 0.0
            while now < days * 86_400.0:
                hours = float(rng.choice([4.0, 8.0, 12.0, 24.0]))
                end = min(days * 86_400.0, now + hours * 3600.0)
                item = ITEMS[int(rng.integers(len(ITEMS)))]
                setting = _lot_setting(item, rng, new_recipes)
                episode = None
                if faults and rng.random() < fault_lots:
                    episode = _episode(str(rng.choice(faults)), now, end, rng)
                block = machine.run(item, setting, now, end, episode, len(lots))
                bad = int(block.defect.sum())
                lot_id = f"{machine.id}-{len(lots):04d}"
                lots.append(
                    Lot(
                        lot_id,
                        facility,
                        machine.id,
                        item.name,
                        now,
                        end,
                        setting,
                        len(block.times) - bad,
                        bad,
                    )
                )
                rows.append(block)
                now = end
    return MoldingRecords(
        times=np.concatenate([r.times for r in rows]),
        lot=np.concatenate([r.lot for r in rows]),
        settings=np.vstack([r.settings for r in rows]),
        process=np.vstack([r.process for r in rows]),
        residuals=np.vstack([r.residuals for r in rows]),
        fault=np.concatenate([r.fault for r in rows]),
        defect=np.concatenate([r.defect for r in rows]),
        lots=lots,
    )


def _lot_setting(item: Item, rng: np.random.Generator, new_recipes: bool) -> tuple[float, ...]:
    new = NEW_RECIPES.get(item.name) if new_recipes else None
    if new is not None and rng.random() < 0.3:
        base = new
    else:
        # The poor recipe is run rarely: engineers know it, but use it when a mold is hot.
        base = item.recipes[int(rng.choice(3, p=[0.55, 0.35, 0.10]))]
    # Engineers adjust each lot a little, at the machine's resolution.
    return (
        round(base[0] + rng.normal(0, 1.5)),
        5 * round((base[1] + rng.normal(0, 3.0)) / 5),
        round(2 * (base[2] + rng.normal(0, 0.4))) / 2,
    )


def _episode(fault: str, start: float, end: float, rng: np.random.Generator) -> FaultEpisode:
    length = end - start
    at = start + float(rng.uniform(0.1, 0.6)) * length
    duration = float(rng.uniform(0.15, 0.4)) * length
    if fault == HEATER_FAILURE:  # a heater band burns out: at once, one zone or two
        return FaultEpisode(fault, at, at + duration, 0.0, float(rng.choice([0.34, 0.67])))
    if fault == OVERHEATING:  # the contactor welds shut: at once
        return FaultEpisode(fault, at, at + duration, 0.0, 1.0)
    # The check ring wears over an hour or two, then is replaced.
    return FaultEpisode(fault, at, at + duration, float(rng.uniform(1800, 5400)), 1.0)


class _Molder:
    """One machine: the plant's FMU (faults applied) and the twin's (healthy)."""

    DRIVES_KW = 8.0

    def __init__(self, machine_id: str, rng: np.random.Generator) -> None:
        self.id = machine_id
        self.rng = rng
        fmu = _loaded_fmu("molding_barrel")
        self.plant = fmu.instantiate(f"{machine_id}-plant")
        self.twin = fmu.instantiate(f"{machine_id}-twin")
        self.started = False

    def run(
        self,
        item: Item,
        setting: tuple[float, ...],
        start: float,
        end: float,
        episode: FaultEpisode | None,
        lot: int,
    ) -> MoldingRecords:
        """The lot's shots (``lots`` left empty: the caller adds the lot record)."""
        barrel, speed, cycle_set = setting
        rng = self.rng
        n = max(1, int((end - start) // cycle_set))
        cycles = np.maximum(1.0, cycle_set + rng.normal(0.0, 0.3, n))
        noise = rng.normal(0.0, 1.0, (n, 6))
        draws = rng.random(n)
        if not self.started:
            inputs = dict(zip(_FMU_INPUTS, (barrel, speed, cycle_set, 0.0, 0.0), strict=True))
            for instance in (self.plant, self.twin):
                instance.initialize(start, inputs)
            self.set_plant = self.plant.real_setter(_FMU_INPUTS)
            self.set_twin = self.twin.real_setter(_FMU_INPUTS[:3])
            self.get_plant = self.plant.real_getter(_FMU_OUTPUTS)
            self.get_twin = self.twin.real_getter(_FMU_OUTPUTS)
            self.started = True
        times = np.empty(n)
        process = np.empty((n, len(PROCESS)))
        residuals = np.empty((n, len(RESIDUALS)))
        faults = np.full(n, "", dtype=object)
        defect = np.zeros(n, dtype=bool)
        t = start
        for k in range(n):
            failure = stuck = ring = 0.0
            if episode is not None:
                level = episode.level(t)
                if level > 0:
                    faults[k] = episode.fault
                    if episode.fault == HEATER_FAILURE:
                        failure = level
                    elif episode.fault == OVERHEATING:
                        stuck = level
                    else:
                        ring = level
            cycle = float(cycles[k]) + (rng.normal(0.0, 1.2) if ring else 0.0)
            cycle = max(1.0, cycle)
            self.set_plant([barrel, speed, cycle, failure, stuck])
            self.set_twin([barrel, speed, cycle])
            self.plant.step(cycle)
            self.twin.step(cycle)
            temp, melt, heater = self.get_plant()
            e_temp, e_melt, e_heater = self.get_twin()
            pressure = (1100.0 * math.exp(-(melt - 230.0) / 150.0) * (speed / 120.0) ** 0.3) * (
                1.0 - 0.15 * ring
            )
            n_k = noise[k]
            m_temp = temp + 0.3 * n_k[0]
            m_melt = melt + 0.3 * n_k[1]
            m_heater = heater * (1.0 + 0.01 * n_k[2])
            m_pressure = pressure * (1.0 + 0.02 * n_k[3])
            power = (heater + self.DRIVES_KW + 0.005 * pressure * speed / 120.0) * (
                1.0 + 0.015 * n_k[4]
            )
            process[k] = (m_temp, m_melt, m_heater, m_pressure, power)
            residuals[k] = (m_temp - e_temp, m_melt - e_melt, m_heater - e_heater)
            defect[k] = draws[k] < _defect_probability(item, melt, ring)
            t += cycle
            times[k] = t
        settings = np.tile(np.asarray(setting, dtype=float), (n, 1))
        lots = np.full(n, lot, dtype=np.int32)
        return MoldingRecords(times, lots, settings, process, residuals, faults, defect)


def _defect_probability(item: Item, melt: float, ring: float) -> float:
    """Short shots and flash grow with the melt's distance from the item's window (6 K
    either side is fine); a leaking check ring gives short shots."""
    off = max(0.0, abs(melt - item.ideal_melt) - 6.0) / 14.0
    return min(0.9, 0.002 + 0.3 * off * off + 0.25 * ring)
