"""An asset host: the live state of a group of assets, in one process.

One Ray actor process costs about 110 MB, so a process hosts many assets (each an
:class:`Asset` with its own state, order and rules) rather than one. The host is a plain
class, so it can be tested without Ray; :mod:`twinforge.actors.fleet` runs it as a Ray
actor that Ray restarts after a crash, and the restarted host rebuilds its state from its
write-ahead log.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinforge.actors.alarms import Alarm, AlarmChange, AlarmRule
from twinforge.actors.asset import Asset
from twinforge.actors.write_ahead_log import WriteAheadLog
from twinforge.ingest.messages import Entry
from twinforge.runtime.history import BatchingWriter, HistoryPoint, open_history_store
from twinforge.twin_models import PROPERTY, TELEMETRY, ValueKind

if TYPE_CHECKING:
    from twinforge.actors.models import HostModels
    from twinforge.actors.physics import HostPhysics, PhysicsOff
    from twinforge.physics.asset_physics import PhysicsState
    from twinforge.physics.checks import PhysicsPlan
    from twinforge.runtime.twin_service import TwinService

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """How a host keeps its assets; the same for every host of a fleet."""

    data_dir: Path
    capacity: int = 512
    """Samples kept per field in memory."""
    checkpoint_every_s: float = 30.0
    """At most this long between checkpoints, so a restart replays little."""
    checkpoint_after_batches: int = 20_000
    history_url: str | None = None
    """Where telemetry and property history goes (None: SQLite under data_dir)."""
    history_interval_s: float = 1.0
    """Keep at most one history point per field per interval (0: every value)."""
    graph_url: str | None = field(default=None, repr=False)  # may hold a password
    """Where reported property changes are written back (None: not written back)."""
    alarm_rules: tuple[AlarmRule, ...] = ()
    lineage: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Model id -> the model and every model it extends, for matching alarm rules and
    physics plans."""
    physics: tuple[PhysicsPlan, ...] = ()
    """The FMUs bound to interfaces (the server's plans file, once written, wins: it
    holds the FMU versions swapped in since)."""
    physics_history_interval_s: float = 10.0
    """At most one history point per expected value and residual per interval (never
    more often than ``history_interval_s``); live values, ring buffers and alarms get
    every sample. They are the FMU's output, which a what-if run recomputes from the
    recorded inputs; at every second they doubled the history the host writes and cost
    most of physics' CPU (bench/physics.py)."""
    ml: tuple[tuple[str, str], ...] = ()
    """The models (name, interface) twins of these interfaces expect: where one is
    missing or fails, the twins say they are on their threshold rules."""
    synchronous: str = "FULL"


#: Assets whose state one ingest call copies while a checkpoint is taken (about 2 ms of
#: copying): copying a 700-asset host's all at once stopped its ingest for 0.1-0.25 s.
CAPTURE_PER_BATCH = 64


#: Logged batches one ingest call deletes once a checkpoint is saved (about 4 ms):
#: deleting a 700-asset host's 30 s of batches at once took 80-130 ms.
TRIM_PER_BATCH = 100


@dataclass(slots=True)
class _Capture:
    """A checkpoint being taken: asset states copied a few per ingest call, each with
    the last batch it holds (replay skips that asset's entries up to there)."""

    upto: int
    """The last batch every copied state holds: the log keeps the batches after it."""
    todo: list[str]
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def copy(self, twin_id: str, assets: dict[str, Asset], seq: int) -> None:
        asset = assets.get(twin_id)
        if asset is not None:  # else removed meanwhile
            self.states[twin_id] = asset.state() | {"seq": seq}


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What :meth:`AssetHost.ingest` did with a batch: how many entries it applied, the
    alarms their messages raised or cleared, in order, and the positions of the entries
    it skipped (a redelivered message, a twin not hosted here): the live event feed
    publishes the others only."""

    applied: int
    alarms: tuple[AlarmChange, ...] = ()
    skipped: tuple[int, ...] = ()
    derived: tuple[Entry, ...] = ()
    """Entries of the values physics derived (``<field>.expected``, ``.residual``)."""
    physics_off: tuple[PhysicsOff, ...] = ()
    """Twins whose physics this batch switched off, and why."""


@dataclass(slots=True)
class _Outcome:
    """What applying a batch produced, for those who hear of it (not a replay)."""

    alarms: list[AlarmChange] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    derived: list[Entry] = field(default_factory=list)
    physics_off: list[PhysicsOff] = field(default_factory=list)
    #: Whether ``derived`` is wanted: returning them when no one publishes them cost the
    #: hosts on Ray a few percent of their CPU (bench/physics.py).
    with_derived: bool = True


class AssetHost:
    """Hosts assets: ingests telemetry batches durably and answers state queries."""

    def __init__(self, host_id: int, config: HostConfig, assets: dict[str, str] | None = None):
        self.host_id = host_id
        self.config = config
        wal_path = config.data_dir / "actors" / f"host-{host_id:04d}.sqlite3"
        first_start = not wal_path.exists()
        self._wal = WriteAheadLog(wal_path, synchronous=config.synchronous)
        self.assets: dict[str, Asset] = {}
        self._pending_properties: dict[str, dict[str, Any]] = {}
        self._history: BatchingWriter | None = None  # opened on first use
        self._graph: TwinService | None = None  # opened on first write-back
        # Hosts started together would checkpoint together, every time: a random first
        # interval (half to all of it) spreads them.
        first = random.uniform(0, config.checkpoint_every_s / 2)
        self._last_checkpoint = time.monotonic() - first
        self._batches_since_checkpoint = 0
        self._capture: _Capture | None = None  # a checkpoint whose states are being copied
        self._checkpoint_thread: ThreadPoolExecutor | None = None  # started on first use
        self._saving: tuple[int, Future[None]] | None = None  # (upto seq, its save)
        self._trim_upto = 0  # the log's batches up to here are in the saved state
        self.restored = 0  # assets whose state came back from a checkpoint at start
        self.physics = self._start_physics()  # before the replay, which steps it
        self.models = self._start_models()  # so is this: the replay rebuilds alarm state
        self.replayed = self._recover()
        if assets and first_start:
            # Only on a first start: Ray re-runs __init__ with the same arguments after a
            # crash, and the log (not these) says what the host owns by then.
            self.add_assets(assets)

    def __repr__(self) -> str:
        # The Ray dashboard shows this as the actor's name: which assets live here.
        names = sorted(self.assets)
        shown = ", ".join(names[:4]) + (f", +{len(names) - 4} more" if len(names) > 4 else "")
        return f"AssetHost-{self.host_id}[{shown}]"

    # -- membership ----------------------------------------------------------------

    def add_assets(self, assets: dict[str, str]) -> int:
        """Host ``assets`` (twin id -> model id); durable on return."""
        self._wal.add_assets(assets)
        for twin_id, model_id in assets.items():
            current = self.assets.get(twin_id)
            if current is None or current.model_id != model_id:
                self.assets[twin_id] = self._new_asset(twin_id, model_id)
        return len(self.assets)

    def remove_assets(self, twin_ids: Sequence[str]) -> int:
        self._wal.remove_assets(list(twin_ids))
        for twin_id in twin_ids:
            self.assets.pop(twin_id, None)
            if self.physics is not None:
                self.physics.remove(twin_id)
            if self.models is not None:
                self.models.remove(twin_id)
        return len(self.assets)

    # -- ingest --------------------------------------------------------------------

    def ingest(self, entries: list[Entry], derived: bool = True) -> IngestResult:
        """Log ``entries`` durably, then apply them; returns how many were applied and the
        alarm changes they caused, and (if ``derived``) the values physics derived.

        Entries for twins this host does not own (deleted meanwhile) are logged and
        skipped. A caller may acknowledge the messages once this returns.
        """
        self._wal.append(entries)
        outcome = _Outcome(with_derived=derived)
        if self.physics is not None:
            outcome.physics_off.extend(self.physics.take_unreported())
        applied = self._apply(entries, outcome)
        self._batches_since_checkpoint += 1
        self._trim(TRIM_PER_BATCH)
        self._finish_checkpoint(wait=False)
        if (
            self._capture is None
            and self._saving is None
            and (
                self._batches_since_checkpoint >= self.config.checkpoint_after_batches
                or time.monotonic() - self._last_checkpoint >= self.config.checkpoint_every_s
            )
        ):
            self._begin_checkpoint()
        if self._capture is not None:
            self._capture_states(CAPTURE_PER_BATCH)
        return IngestResult(
            applied,
            tuple(outcome.alarms),
            tuple(outcome.skipped),
            tuple(outcome.derived),
            tuple(outcome.physics_off),
        )

    def _apply(self, entries: list[Entry], outcome: _Outcome | None = None) -> int:
        """Apply logged entries; what they caused goes to ``outcome``, if given (a replay
        passes None: whoever heard of it did so when the batch was first ingested)."""
        applied = 0
        history: list[HistoryPoint] = []
        changes = None if outcome is None else outcome.alarms
        physics = self.physics
        stepping: list[tuple[Asset, dict[str, Any], float, float]] = []
        scoring: list[tuple[Asset, dict[str, Any], float, float]] = []
        for position, (twin_id, kind, values, source_time, received_time) in enumerate(entries):
            asset = self.assets.get(twin_id)
            if asset is None:
                if outcome is not None:
                    outcome.skipped.append(position)
                continue
            applied += 1
            if kind == TELEMETRY:
                if not asset.apply(values, source_time, received_time, changes):
                    if outcome is not None:  # a redelivered message: applied, in history
                        outcome.skipped.append(position)
                    continue
                if self.models is not None:
                    scoring.append((asset, values, source_time, received_time))
            elif kind == PROPERTY:
                self._pending_properties.setdefault(twin_id, {}).update(values)
            self._due_history(asset, kind, values, source_time, history)
            if physics is not None:
                stepping.append((asset, values, source_time, received_time))
        if stepping:
            self._derive(stepping, history, outcome)
        if scoring:  # after physics: the residuals it derived are features
            self._score(scoring, history, outcome)
        if history:
            self._history_writer().put_many(history)
        return applied

    def _derive(
        self,
        stepping: list[tuple[Asset, dict[str, Any], float, float]],
        history: list[HistoryPoint],
        outcome: _Outcome | None,
    ) -> None:
        """Step the FMUs of a batch's samples, then record what they derived: all the
        steps first, one after another, cost about half as much as steps interleaved
        with the rest of ingest (measured in bench/physics.py)."""
        assert self.physics is not None
        derive, off = self.physics.derive, None if outcome is None else outcome.physics_off
        derived = [derive(a.twin_id, a.model_id, v, t, off) for a, v, t, _ in stepping]
        samples = [(a, d, t, r) for (a, _, t, r), d in zip(stepping, derived, strict=True) if d]
        self._record_derived(samples, "derived_history_next", history, outcome)

    def _score(
        self,
        scoring: list[tuple[Asset, dict[str, Any], float, float]],
        history: list[HistoryPoint],
        outcome: _Outcome | None,
    ) -> None:
        """Score a batch's telemetry with the twins' anomaly models, all at once."""
        assert self.models is not None
        changes = None if outcome is None else outcome.alarms
        if outcome is not None:  # not in a replay: that scores with what was loaded
            self.models.reload_if_changed()
        scored = self.models.score(scoring, changes)
        self._record_derived(scored, "scored_history_next", history, outcome)

    def _record_derived(
        self,
        samples: list[tuple[Asset, dict[str, Any], float, float]],
        due: str,
        history: list[HistoryPoint],
        outcome: _Outcome | None,
    ) -> None:
        """Record values derived from telemetry (by physics or models): live, alarms,
        history at most once per physics history interval (``due`` names the asset's
        due time), and returned to the live feed if it wants them."""
        changes = None if outcome is None else outcome.alarms
        returned = None if outcome is None or not outcome.with_derived else outcome.derived
        config = self.config
        interval = max(config.history_interval_s, config.physics_history_interval_s)
        for asset, values, source_time, received_time in samples:
            asset.record(values, source_time, received_time, changes)
            if source_time >= getattr(asset, due):
                # One due time for all of a twin's derived values: a look at each field
                # per sample cost more than the points it saved.
                setattr(asset, due, source_time + interval)
                _points(asset.twin_id, values, source_time, TELEMETRY, history)
            if returned is not None:
                returned.append((asset.twin_id, TELEMETRY, values, source_time, received_time))

    def _due_history(
        self,
        asset: Asset,
        kind: ValueKind,
        values: dict[str, Any],
        ts: float,
        out: list[HistoryPoint],
    ) -> None:
        due = asset.history_due
        if kind == TELEMETRY and ts < asset.history_next and due.keys() >= values.keys():
            return  # nothing due: most messages, decided without a look at each field
        interval = self.config.history_interval_s
        if kind == TELEMETRY:
            values = {n: v for n, v in values.items() if ts >= due.get(n, 0.0)}
        for name in values:
            due[name] = ts + interval
        _points(asset.twin_id, values, ts, kind, out)
        asset.history_next = min(due.values(), default=0.0)

    # -- durability ----------------------------------------------------------------

    def checkpoint(self) -> None:
        """Make history and write-backs durable, store every asset's state and trim the
        log; returns once all that is done."""
        self.wait_for_checkpoint()
        self._begin_checkpoint()
        self.wait_for_checkpoint()

    def wait_for_checkpoint(self) -> None:
        """Return once the checkpoint being taken, if any, is durable and the log
        trimmed; raises what failed it."""
        if self._capture is not None:
            self._capture_states(len(self._capture.todo))
        self._finish_checkpoint(wait=True)
        self._trim(None)

    def _begin_checkpoint(self) -> None:
        self._capture = _Capture(self._wal.last_seq, list(self.assets))
        self._last_checkpoint = time.monotonic()
        self._batches_since_checkpoint = 0

    def _capture_states(self, count: int) -> None:
        """Copy the state of ``count`` more assets for the checkpoint being taken; once
        all are copied, write back reported properties and have the checkpoint thread
        save the states (the history flush, pickling and writing took 0.5-1 s for a
        700-asset host under load, measured, while ingest goes on)."""
        assert self._capture is not None
        capture, seq = self._capture, self._wal.last_seq
        for _ in range(min(count, len(capture.todo))):
            capture.copy(capture.todo.pop(), self.assets, seq)
        if capture.todo:
            return
        for twin_id in self.assets.keys() - capture.states.keys():  # added meanwhile
            capture.copy(twin_id, self.assets, seq)
        self._capture = None
        self._write_back_properties()  # after the last copy: replay skips what they hold
        if self._checkpoint_thread is None:
            self._checkpoint_thread = ThreadPoolExecutor(1, f"checkpoint-{self.host_id}")
        saving = self._checkpoint_thread.submit(self._save_state, capture.states, capture.upto)
        self._saving = (capture.upto, saving)

    def _save_state(self, states: dict[str, Any], upto: int) -> None:
        """On the checkpoint thread: the states may include history points the writer
        still buffers, so those are made durable first."""
        if self._history is not None:
            self._history.flush(timeout=60)
        self._wal.save_state(states, upto)

    def _finish_checkpoint(self, *, wait: bool) -> None:
        """Trim the log once the checkpoint being saved is durable; with ``wait``, wait
        for it and raise its error, else log the error (the log keeps everything, and
        the next checkpoint tries again)."""
        if self._saving is None or not (wait or self._saving[1].done()):
            return
        (upto, saving), self._saving = self._saving, None
        try:
            saving.result()
        except Exception:
            if wait:
                raise
            log.exception("asset host %d: checkpoint failed, the log keeps it all", self.host_id)
            return
        self._trim_upto = upto

    def _trim(self, limit: int | None) -> None:
        if self._trim_upto and self._wal.trim(self._trim_upto, limit):
            self._trim_upto = 0

    def _recover(self) -> int:
        states, batches = self._wal.recover()
        restored_at: dict[str, int] = {}  # twin id -> the last batch its saved state holds
        for twin_id, model_id in self._wal.assets().items():
            asset = self.assets[twin_id] = self._new_asset(twin_id, model_id)
            saved = (states or {}).get(twin_id)
            if saved is not None and saved["model_id"] == model_id:
                asset.restore(saved)
                restored_at[twin_id] = saved.get("seq", 0)  # none in older checkpoints
                self.restored += 1
        replayed = 0
        for seq, entries in batches:
            # Replayed entries go to history again: what the crashed process had buffered
            # for it was lost with it, and the store keeps one point per (twin, field, ts).
            replayed += self._apply([e for e in entries if restored_at.get(e[0], 0) < seq])
        if replayed:
            log.info("asset host %d replayed %d logged messages", self.host_id, replayed)
        return replayed

    def _write_back_properties(self) -> None:
        if not self._pending_properties or self.config.graph_url is None:
            self._pending_properties.clear()
            return
        from twinforge.runtime.twin_service import TwinServiceError

        service = self._twin_service()
        for twin_id, values in list(self._pending_properties.items()):
            patch = [{"op": "add", "path": f"/{name}", "value": v} for name, v in values.items()]
            try:
                service.patch_twin(twin_id, patch)
            except TwinServiceError as error:  # twin deleted meanwhile: nothing to write to
                log.warning("write-back of %s properties refused: %s", twin_id, error)
            # Any other error (graph unreachable) propagates: the checkpoint is skipped, so
            # the log keeps these changes and the next checkpoint retries them.
            del self._pending_properties[twin_id]

    # -- queries -------------------------------------------------------------------

    def snapshot(self, twin_id: str) -> dict[str, Any] | None:
        asset = self.assets.get(twin_id)
        return None if asset is None else asset.snapshot()

    def series(self, twin_id: str, field_path: str, n: int | None = None) -> dict[str, list]:
        """The newest ``n`` samples of a field: ``{"times": [...], "values": [...]}``."""
        asset = self.assets.get(twin_id)
        buffer = None if asset is None else asset.series.get(field_path)
        if buffer is None:
            return {"times": [], "values": []}
        times, values = buffer.last(n)
        return {"times": times.tolist(), "values": values.tolist()}

    def physics_status(self, twin_id: str) -> dict[str, Any] | None:
        """The twin's physics (None: no FMU bound to its interface)."""
        asset = self.assets.get(twin_id)
        if asset is None or self.physics is None:
            return None
        return self.physics.status(twin_id, asset.model_id)

    def physics_of(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """:meth:`physics_status` of each twin hosted here; the others are left out."""
        return {t: self.physics_status(t) for t in twin_ids if t in self.assets}

    def physics_state(self, twin_id: str) -> tuple[PhysicsPlan, PhysicsState] | None:
        """The twin's plan and where its FMU stands (None: no physics running)."""
        asset = self.assets.get(twin_id)
        if asset is None or self.physics is None:
            return None
        plan, state = self.physics.plan_of(asset.model_id), self.physics.state(twin_id)
        return None if plan is None or state is None else (plan, state)

    def set_physics(self, plans: tuple[PhysicsPlan, ...]) -> list[str]:
        """Bind new plans (an FMU version swapped in); the interfaces that changed."""
        if self.physics is None:
            self.physics = self._start_physics(plans)
            return sorted({plan.interface for plan in plans})
        return self.physics.set_plans(plans)

    def anomaly_of(self, twin_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Per twin hosted here, its anomaly models' last answers (or that rules
        stand in for a missing model); the others are left out."""
        models, assets = self.models, self.assets
        if models is None:
            return {t: [] for t in twin_ids if t in assets}
        return {t: models.status(t, assets[t].model_id) for t in twin_ids if t in assets}

    def reload_models(self) -> list[str]:
        """Load the promoted model versions the server wrote (no restart)."""
        if self.models is None:
            self.models = self._start_models(force=True)
            return [] if self.models is None else self.models.reload()
        return self.models.reload()

    def active_alarms(self, twin_id: str) -> list[Alarm]:
        asset = self.assets.get(twin_id)
        return [] if asset is None else list(asset.alarms.values())

    def snapshots(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """:meth:`snapshot` of each twin hosted here; the others are left out."""
        assets = self.assets
        return {t: assets[t].snapshot() for t in twin_ids if t in assets}

    def alarms_of(self, twin_ids: Sequence[str]) -> dict[str, list[Alarm]]:
        """:meth:`active_alarms` of each twin hosted here; the others are left out."""
        assets = self.assets
        return {t: list(assets[t].alarms.values()) for t in twin_ids if t in assets}

    def series_many(self, requests: Sequence[tuple[str, str, int | None]]) -> list[dict[str, list]]:
        """:meth:`series` for each ``(twin id, field, n)``, in order."""
        return [self.series(twin_id, field_path, n) for twin_id, field_path, n in requests]

    def stats(self) -> dict[str, Any]:
        """Who and where this host is, and what it holds (for placement and benchmarks)."""
        return {
            "host": self.host_id,
            "pid": os.getpid(),
            "node": _ray_node_id(),
            "assets": len(self.assets),
            "messages": sum(asset.messages for asset in self.assets.values()),
            "restored": self.restored,
            "replayed": self.replayed,
            "wal_pending": self._wal.pending(),
            "rss_mb": _rss_mb(),
        }

    def close(self) -> None:
        self.checkpoint()
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.shutdown()
        if self._history is not None:
            self._history.close()
        if self.physics is not None:
            self.physics.close()
        self._wal.close()

    # -- helpers -------------------------------------------------------------------

    def _new_asset(self, twin_id: str, model_id: str) -> Asset:
        lineage = self.config.lineage.get(model_id, (model_id,))
        rules = tuple(rule for rule in self.config.alarm_rules if rule.model in lineage)
        return Asset(twin_id, model_id, self.config.capacity, rules)

    def _start_physics(self, plans: tuple[PhysicsPlan, ...] | None = None) -> HostPhysics | None:
        # Imported only where physics is bound: fmpy and the FMUs cost host memory.
        from twinforge.actors.physics import HostPhysics, load_plans, plans_file

        config = self.config
        if plans is None:
            if not config.physics and not plans_file(config.data_dir).exists():
                return None
            plans = load_plans(config.data_dir, config.physics)
        return HostPhysics(plans, config.lineage, config.data_dir, self.host_id)

    def _start_models(self, force: bool = False) -> HostModels | None:
        # Imported only where models are bound: onnxruntime costs a host about 40 MB.
        from twinforge.actors.models import HostModels, models_dir

        config = self.config
        if not (force or config.ml or models_dir(config.data_dir).is_dir()):
            return None
        return HostModels(config.data_dir, config.ml, config.lineage)

    def _history_writer(self) -> BatchingWriter:
        if self._history is None:
            store = open_history_store(self.config.history_url, self.config.data_dir)
            self._history = BatchingWriter(store, max_delay_s=0.5)
        return self._history

    def _twin_service(self) -> TwinService:
        if self._graph is None:
            # Imported here: the graph clients cost about 70 MB per host process, and only
            # hosts that write reported properties back need them.
            from twinforge.runtime.stores import open_graph_store
            from twinforge.runtime.twin_service import TwinService

            self._graph = TwinService(open_graph_store(self.config.graph_url, self.config.data_dir))
        return self._graph


def _points(
    twin_id: str, values: dict[str, Any], ts: float, kind: ValueKind, out: list[HistoryPoint]
) -> None:
    at = datetime.fromtimestamp(ts, UTC)
    out.extend(HistoryPoint(twin_id, name, at, value, kind) for name, value in values.items())


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _ray_node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # outside Ray
        return None
