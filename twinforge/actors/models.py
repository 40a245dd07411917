"""Anomaly models bound to the assets of one host, scored on every telemetry sample.

The promoted version of each model (``<name>`` per interface) lies under
``<data dir>/ml/current/<name>/<interface>/``, written by the server; a host loads them
at start and again when told (:meth:`HostModels.reload`). Scoring is batched: the samples
of one ingest call go to each model in one onnxruntime run per setting cluster (one
sample alone costs 1.5-4 ms of per-call overhead, a batch of 1,000 about 20-40 us a
sample). A twin whose interface expects a model that is missing, corrupt or failing is
left to the threshold alarm rules, and says so: an ``<name>.fallback`` alarm names why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinforge.actors.alarms import Alarm, AlarmChange
from twinforge.actors.asset import Asset
from twinforge.ml.anomaly.scoring import AnomalyBundle, ModelFileError

log = logging.getLogger(__name__)

#: Severity of the alarm that announces a twin left to its threshold rules.
FALLBACK_SEVERITY = 1
#: Seconds between looks at the models directory for versions promoted by another
#: process (``twinforge ml promote``): a few stat calls each time.
WATCH_INTERVAL_S = 5.0


def models_dir(data_dir: Path) -> Path:
    """Where the server puts the promoted model versions for the hosts."""
    return data_dir / "ml" / "current"


def interface_dir_name(interface: str) -> str:
    """A DTMI as a directory name (``:`` and ``;`` are not portable in paths)."""
    return interface.replace(":", "-").replace(";", "-")


@dataclass(slots=True)
class _Watch:
    """One twin's state under one model: the last answer and the alarm's persistence."""

    score: float = 0.0
    threshold: float = 0.0
    level: str = "normal"
    cluster: str = ""
    fallback: bool = False
    top_fields: tuple[str, ...] = ()
    time: float | None = None
    """Source time of the last score (None: never scored)."""
    run: int = 0
    """Scores in a row on the other side of the threshold from the alarm's state."""
    due: float = 0.0
    """Source time from which the next sample is scored."""


@dataclass(slots=True)
class _Loaded:
    name: str
    interface: str
    bundle: AnomalyBundle | None
    version: str
    reason: str = ""
    """Why there is no bundle (missing, corrupt or failing), for the fallback alarm."""
    watches: dict[str, _Watch] = field(default_factory=dict)


class HostModels:
    """The anomaly models of one host's assets."""

    def __init__(
        self,
        data_dir: Path,
        expected: tuple[tuple[str, str], ...],
        lineage: Mapping[str, tuple[str, ...]],
    ) -> None:
        self._dir = models_dir(data_dir)
        self._expected = expected
        self._lineage = lineage
        self._models: dict[tuple[str, str], _Loaded] = {}
        self._of_model: dict[str, list[_Loaded]] = {}  # model id -> what applies to it
        self._seen: tuple[tuple[str, int], ...] = ()
        self._next_look = 0.0
        self.reload()

    def reload_if_changed(self) -> list[str]:
        """Reload if a version was installed since the last look (at most every
        :data:`WATCH_INTERVAL_S`)."""
        now = time.monotonic()
        if now < self._next_look:
            return []
        self._next_look = now + WATCH_INTERVAL_S
        return self.reload() if self._stamp() != self._seen else []

    def _stamp(self) -> tuple[tuple[str, int], ...]:
        if not self._dir.is_dir():
            return ()
        found = []
        for name_dir in self._dir.iterdir():
            if name_dir.is_dir():
                for path in name_dir.iterdir():
                    version = path / "VERSION"
                    mark = version if version.exists() else path
                    found.append((str(path), mark.stat().st_mtime_ns))
        return tuple(sorted(found))

    def reload(self) -> list[str]:
        """Load what lies in the models directory now; the ``name/interface`` of each
        model whose version changed. Twins keep their alarm state across a reload."""
        self._seen = self._stamp()
        found: dict[tuple[str, str], _Loaded] = {}
        for name, interface in self._expected:
            found[(name, interface)] = self._load(name, interface)
        if self._dir.is_dir():
            for name_dir in sorted(p for p in self._dir.iterdir() if p.is_dir()):
                for bundle_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
                    if bundle_dir.name.startswith("."):
                        continue  # a version being written
                    loaded = self._load_dir(name_dir.name, bundle_dir)
                    found[(loaded.name, loaded.interface)] = loaded
        changed = []
        for key, loaded in found.items():
            old = self._models.get(key)
            if old is not None:
                loaded.watches = old.watches
            if old is None or old.version != loaded.version:
                changed.append("/".join(key))
        self._models = found
        self._of_model.clear()
        return changed

    def _load(self, name: str, interface: str) -> _Loaded:
        path = self._dir / name / interface_dir_name(interface)
        if not path.is_dir():
            return _Loaded(name, interface, None, "", f"no promoted {name} model for {interface}")
        return self._load_dir(name, path)

    def _load_dir(self, name: str, path: Path) -> _Loaded:
        version = (path / "VERSION").read_text().strip() if (path / "VERSION").exists() else ""
        try:
            bundle = AnomalyBundle.load(path)
        except ModelFileError as error:
            log.warning("%s model in %s not loaded: %s", name, path, error)
            return _Loaded(name, path.name, None, version, f"model not loaded: {error}")
        return _Loaded(name, bundle.card.interface, bundle, version)

    def _applying(self, model_id: str) -> list[_Loaded]:
        """Per model name, the entry of the most specific interface in the lineage."""
        found = self._of_model.get(model_id)
        if found is None:
            found = []
            names: set[str] = set()
            for interface in self._lineage.get(model_id, (model_id,)):
                for (name, bound), loaded in self._models.items():
                    if bound == interface and name not in names:
                        names.add(name)
                        found.append(loaded)
            self._of_model[model_id] = found
        return found

    # -- scoring -------------------------------------------------------------------

    def score(
        self,
        samples: list[tuple[Asset, dict[str, Any], float, float]],
        changes: list[AlarmChange] | None,
    ) -> list[tuple[Asset, dict[str, float], float, float]]:
        """Score each sample (an asset, its values with what physics derived, source and
        received time); the values to record per sample (``<name>.score``). Alarms raised or cleared go to ``changes``."""
        batches: dict[int, tuple[_Loaded, list[int], list[list[float]]]] = {}
        for position, (asset, values, source_time, _) in enumerate(samples):
            for loaded in self._applying(asset.model_id):
                if loaded.bundle is None:
                    self._announce(loaded, asset, source_time, changes)
                    continue
                watch = loaded.watches.get(asset.twin_id)
                if watch is None:
                    watch = loaded.watches[asset.twin_id] = _Watch()
                elif source_time < watch.due:
                    continue  # scored once per window, not every sample
                row = _features(loaded.bundle.features, values, asset)
                if row is not None:
                    watch.due = source_time + loaded.bundle.card.interval_s
                    entry = batches.setdefault(id(loaded), (loaded, [], []))
                    entry[1].append(position)
                    entry[2].append(row)
        out: dict[int, dict[str, float]] = {}
        for loaded, positions, rows in batches.values():
            bundle = loaded.bundle
            assert bundle is not None
            try:
                scores = bundle.score(np.asarray(rows, dtype=float))
            except Exception as error:  # onnxruntime's own errors: the model goes, not the host
                log.exception("%s model of %s failed", loaded.name, loaded.interface)
                loaded.bundle, loaded.reason = (
                    None,
                    f"model failed: {type(error).__name__}: {error}",
                )
                for position in positions:
                    asset, _, source_time, _ = samples[position]
                    self._announce(loaded, asset, source_time, changes)
                continue
            levels, persistence = bundle.card.levels, bundle.card.persistence
            for i, position in enumerate(positions):
                asset, _, source_time, _ = samples[position]
                self._settle(loaded.name, asset, changes)
                watch = loaded.watches[asset.twin_id]
                level, severity = scores.level(i, levels)
                watch.score, watch.threshold = float(scores.score[i]), float(scores.threshold[i])
                watch.level, watch.cluster = level, scores.cluster[i]
                watch.fallback, watch.top_fields = scores.fallback[i], scores.top_fields[i]
                watch.time = source_time
                self._alarm(loaded.name, asset, watch, severity, persistence, changes)
                # The threshold is the cluster's, the same for every score: kept with the
                # answer (status), not as a series of its own (16 KB per twin and model).
                out.setdefault(position, {})[f"{loaded.name}.score"] = watch.score
        return [
            (samples[p][0], values, samples[p][2], samples[p][3])
            for p, values in sorted(out.items())
        ]

    def _alarm(
        self,
        name: str,
        asset: Asset,
        watch: _Watch,
        severity: int,
        persistence: int,
        changes: list[AlarmChange] | None,
    ) -> None:
        active = asset.alarms.get(name)
        over = severity > 0
        if over == (active is not None):
            watch.run = 0
            if active is not None and severity > active.severity:  # worse: a higher level
                self._raise(name, asset, watch, severity, changes)
            return
        watch.run += 1
        if watch.run < persistence:
            return
        watch.run = 0
        if over:
            self._raise(name, asset, watch, severity, changes)
        else:
            cleared = asset.alarms.pop(name)
            if changes is not None:
                changes.append(
                    AlarmChange.cleared_by(asset.twin_id, cleared, watch.score, watch.time)
                )

    def _raise(
        self,
        name: str,
        asset: Asset,
        watch: _Watch,
        severity: int,
        changes: list[AlarmChange] | None,
    ) -> None:
        alarm = Alarm(name, severity, watch.time, f"{name}.score", watch.score)
        asset.alarms[name] = alarm
        if changes is not None:
            changes.append(AlarmChange.raised_now(asset.twin_id, alarm))

    def _announce(
        self, loaded: _Loaded, asset: Asset, time: float, changes: list[AlarmChange] | None
    ) -> None:
        """Raise ``<name>.fallback`` once: the twin is on its threshold rules, and why."""
        name = f"{loaded.name}.fallback"
        if name in asset.alarms:
            return
        alarm = Alarm(name, FALLBACK_SEVERITY, time, f"{loaded.name}.score", loaded.reason)
        asset.alarms[name] = alarm
        if changes is not None:
            changes.append(AlarmChange.raised_now(asset.twin_id, alarm))

    def _settle(self, name: str, asset: Asset, changes: list[AlarmChange] | None) -> None:
        """Clear a fallback alarm once a model scores the twin again."""
        cleared = asset.alarms.pop(f"{name}.fallback", None)
        if cleared is not None and changes is not None:
            changes.append(
                AlarmChange.cleared_by(asset.twin_id, cleared, "model loaded", cleared.since)
            )

    # -- queries -------------------------------------------------------------------

    def status(self, twin_id: str, model_id: str) -> list[dict[str, Any]]:
        """Per model name applying to the twin: whether a model scores it or rules do."""
        out = []
        for loaded in self._applying(model_id):
            watch = loaded.watches.get(twin_id)
            if watch is not None and watch.time is None:
                watch = None  # seen, never scored (its features incomplete or not numbers)
            out.append(
                {
                    "name": loaded.name,
                    "interface": loaded.interface,
                    "version": loaded.version,
                    "mode": "model" if loaded.bundle is not None else "rules",
                    "reason": loaded.reason or None,
                    "detector": None if loaded.bundle is None else loaded.bundle.card.detector,
                    "score": None if watch is None else watch.score,
                    "threshold": None if watch is None else watch.threshold,
                    "level": None if watch is None else watch.level,
                    "cluster": None if watch is None else watch.cluster,
                    "fallbackCluster": None if watch is None else watch.fallback,
                    "topFields": [] if watch is None else list(watch.top_fields),
                    "time": None if watch is None else watch.time,
                }
            )
        return out

    def remove(self, twin_id: str) -> None:
        for loaded in self._models.values():
            loaded.watches.pop(twin_id, None)


def _features(names: tuple[str, ...], values: dict[str, Any], asset: Asset) -> list[float] | None:
    """The model's features of one sample; a field missing from the message takes the
    asset's last value, and a field never seen means no score."""
    row = []
    last = asset.last
    for name in names:
        value = values.get(name)
        if value is None:
            known = last.get(name)
            if known is None:
                return None
            value = known.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        row.append(float(value))
    return row
