"""Physics bound to the assets of one host: each twin of a bound interface steps its own
FMU instance on its telemetry, and a failing FMU costs its twin its physics, not more.

An FMU that returns Error or Fatal, answers NaN or raises switches physics off for that
twin, with the reason, until a new FMU version is bound. An FMU that crashes the host
process can't be caught: before each step the host writes which twin it is stepping into
a small memory-mapped file that outlives the process, so the restarted host knows whose
FMU it was and counts it; after :data:`QUARANTINE_AFTER` crashes that twin's physics is
quarantined (off, across restarts) and the host replays its log without it.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinforge.physics.asset_physics import AssetPhysics, PhysicsState
from twinforge.physics.checks import PhysicsPlan
from twinforge.physics.errors import PhysicsError
from twinforge.physics.fmi import LoadedFmu

log = logging.getLogger(__name__)

#: Host crashes in one twin's FMU after which its physics is quarantined.
QUARANTINE_AFTER = 3
_MARK_SIZE = 1024


def plans_file(data_dir: Path) -> Path:
    """Where the server keeps the bound plans, for hosts that restart after a swap."""
    return data_dir / "physics" / "plans.pickle"


def save_plans(data_dir: Path, plans: tuple[PhysicsPlan, ...]) -> None:
    path = plans_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(pickle.dumps(plans))
    os.replace(partial, path)


def load_plans(data_dir: Path, default: tuple[PhysicsPlan, ...]) -> tuple[PhysicsPlan, ...]:
    path = plans_file(data_dir)
    if not path.exists():
        return default
    return pickle.loads(path.read_bytes())  # written by this server: trusted


@dataclass(frozen=True, slots=True)
class PhysicsOff:
    """Physics switched off for a twin: the ``physics.off`` event."""

    twin_id: str
    reason: str
    time: float
    quarantined: bool = False

    def event_data(self) -> dict[str, Any]:
        return {"reason": self.reason, "time": self.time, "quarantined": self.quarantined}


class HostPhysics:
    """The physics of one host's assets."""

    def __init__(
        self,
        plans: tuple[PhysicsPlan, ...],
        lineage: Mapping[str, tuple[str, ...]],
        data_dir: Path,
        host_id: int,
    ) -> None:
        self._lineage = lineage
        self._work_dir = data_dir / "physics" / "unpacked"
        base = data_dir / "actors" / f"host-{host_id:04d}"
        self._crashes_path = base.with_suffix(".physics.json")
        self.crashes: dict[str, int] = (
            json.loads(self._crashes_path.read_text()) if self._crashes_path.exists() else {}
        )
        self._mark = _open_mark(base.with_suffix(".physics.mark"))
        crashed = _read_mark(self._mark)
        if crashed:
            self.crashes[crashed] = self.crashes.get(crashed, 0) + 1
            log.error("the FMU of %s crashed its host (%d times)", crashed, self.crashes[crashed])
            self._save_crashes()
        self._clear_mark()
        self._fmus: dict[Path, LoadedFmu] = {}
        self._assets: dict[str, AssetPhysics] = {}
        self._marks: dict[str, bytes] = {}
        self._interface_of: dict[str, str] = {}  # the twins bound so far
        self.off: dict[str, PhysicsOff] = {}
        self._unreported: list[PhysicsOff] = []  # switched off in a replay: no one heard
        self._plans: dict[str, PhysicsPlan] = {}
        self._unbound: set[str] = set()  # twins whose model has no plan: asked once
        self.set_plans(plans)

    # -- binding -------------------------------------------------------------------

    def set_plans(self, plans: tuple[PhysicsPlan, ...]) -> list[str]:
        """Bind ``plans``: twins whose plan changed restart their FMU on their next
        sample, and their crash count and off state are forgotten (a new FMU version
        gets a fresh chance). Returns the interfaces whose plan changed."""
        old = self._plans
        self._unbound.clear()
        self._plans = {plan.interface: plan for plan in plans}
        changed = [i for i in old.keys() | self._plans.keys() if old.get(i) != self._plans.get(i)]
        for twin_id, physics in list(self._assets.items()):
            if physics.plan.interface in changed:
                physics.close()
                del self._assets[twin_id]
        for twin_id, interface in list(self._interface_of.items()):
            if interface in changed:
                del self._interface_of[twin_id]
                self.off.pop(twin_id, None)
                self.crashes.pop(twin_id, None)
        if changed:
            self._save_crashes()
            for path in list(self._fmus):
                if all(p.fmu != path for p in self._plans.values()):
                    self._fmus.pop(path).close()
        return changed

    def plan_of(self, model_id: str) -> PhysicsPlan | None:
        for interface in self._lineage.get(model_id, (model_id,)):
            plan = self._plans.get(interface)
            if plan is not None:
                return plan
        return None

    # -- stepping ------------------------------------------------------------------

    def derive(
        self,
        twin_id: str,
        model_id: str,
        values: Mapping[str, Any],
        source_time: float,
        changes: list[PhysicsOff] | None,
    ) -> dict[str, float]:
        """The derived values of one sample of a twin (none without physics); a failing
        FMU switches the twin's physics off and appends why to ``changes``."""
        physics = self._assets.get(twin_id)
        if physics is None:
            if twin_id in self.off or twin_id in self._unbound:
                return {}
            physics = self._bind(twin_id, model_id, source_time, changes)
            if physics is None:
                return {}
        mark = self._marks[twin_id]
        self._mark[: len(mark)] = mark
        try:
            derived = physics.update(values, source_time)
        except PhysicsError as error:
            self._switch_off(twin_id, str(error), source_time, changes)
            return {}
        except Exception as error:  # a binding bug must not stop ingest either
            log.exception("physics of %s failed", twin_id)
            self._switch_off(twin_id, f"{type(error).__name__}: {error}", source_time, changes)
            return {}
        finally:
            self._mark[:2] = b"\0\0"
        return derived

    def take_unreported(self) -> list[PhysicsOff]:
        """The switch-offs of a replay (a quarantine, typically), for the next batch."""
        unreported, self._unreported = self._unreported, []
        return unreported

    def remove(self, twin_id: str) -> None:
        physics = self._assets.pop(twin_id, None)
        if physics is not None:
            physics.close()
        self.off.pop(twin_id, None)
        self._interface_of.pop(twin_id, None)
        self._unbound.discard(twin_id)

    # -- queries -------------------------------------------------------------------

    def status(self, twin_id: str, model_id: str) -> dict[str, Any] | None:
        """The twin's physics: its FMU, whether it runs, and why not (None: unbound)."""
        plan = self.plan_of(model_id)
        if plan is None:
            return None
        off = self.off.get(twin_id)
        physics = self._assets.get(twin_id)
        return {
            "interface": plan.interface,
            "fmu": plan.fmu.name,
            "running": physics is not None and physics.running,
            "steps": 0 if physics is None else physics.steps,
            "off": None if off is None else off.reason,
            "quarantined": off is not None and off.quarantined,
            "crashes": self.crashes.get(twin_id, 0),
            "expected": [e.telemetry for e in plan.expected],
        }

    def state(self, twin_id: str) -> PhysicsState | None:
        physics = self._assets.get(twin_id)
        return None if physics is None else physics.state()

    def close(self) -> None:
        for physics in self._assets.values():
            physics.close()
        self._assets.clear()
        for fmu in self._fmus.values():
            fmu.close()
        self._fmus.clear()
        self._mark.close()

    # -- helpers -------------------------------------------------------------------

    def _bind(
        self, twin_id: str, model_id: str, time: float, changes: list[PhysicsOff] | None
    ) -> AssetPhysics | None:
        plan = self.plan_of(model_id)
        if plan is None:
            self._unbound.add(twin_id)
            return None
        self._interface_of[twin_id] = plan.interface
        crashes = self.crashes.get(twin_id, 0)
        if crashes >= QUARANTINE_AFTER:
            reason = (
                f"quarantined: its FMU {plan.fmu.name} crashed the host {crashes} times; "
                "bind a new FMU version to try again"
            )
            self._switch_off(twin_id, reason, time, changes, quarantined=True)
            return None
        try:
            fmu = self._fmus.get(plan.fmu)
            if fmu is None:
                fmu = self._fmus[plan.fmu] = LoadedFmu(plan.fmu, work_dir=self._work_dir)
        except PhysicsError as error:
            self._switch_off(twin_id, str(error), time, changes)
            return None
        physics = self._assets[twin_id] = AssetPhysics(plan, fmu, twin_id)
        encoded = twin_id.encode()[: _MARK_SIZE - 2]
        self._marks[twin_id] = len(encoded).to_bytes(2, "little") + encoded
        return physics

    def _switch_off(
        self,
        twin_id: str,
        reason: str,
        time: float,
        changes: list[PhysicsOff] | None,
        *,
        quarantined: bool = False,
    ) -> None:
        physics = self._assets.pop(twin_id, None)
        if physics is not None:
            physics.close()
        off = self.off[twin_id] = PhysicsOff(twin_id, reason, time, quarantined)
        log.warning("physics of %s is off: %s", twin_id, reason)
        (self._unreported if changes is None else changes).append(off)

    def _save_crashes(self) -> None:
        self._crashes_path.parent.mkdir(parents=True, exist_ok=True)
        self._crashes_path.write_text(json.dumps(self.crashes))

    def _clear_mark(self) -> None:
        self._mark[:2] = b"\0\0"


def _open_mark(path: Path) -> mmap.mmap:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as file:
        if os.fstat(file.fileno()).st_size < _MARK_SIZE:
            file.truncate(_MARK_SIZE)
        return mmap.mmap(file.fileno(), _MARK_SIZE)


def _read_mark(mark: mmap.mmap) -> str | None:
    length = int.from_bytes(mark[:2], "little")
    return mark[2 : 2 + length].decode(errors="replace") if length else None
