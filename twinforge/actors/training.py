"""Training the twins' anomaly models from the history store, off the serving path, and
installing a promoted version where the asset hosts load it.

:func:`train_model` reads a window of the twins' history (telemetry and the residuals
physics derived), trains one model per setting cluster, and logs the model, its metrics
and the data window to the registry (MLflow) as a new version; :func:`install_version`
puts a version's files under the hosts' models directory (the fleet then reloads).
:data:`train_task` runs training as a Ray task, so the API process never imports torch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import ray

from twinforge.actors.models import interface_dir_name, models_dir
from twinforge.ml.anomaly.scoring import save_bundle
from twinforge.ml.anomaly.training import WHOLE, TrainingSet, train_anomaly
from twinforge.ml.config import ModelBinding
from twinforge.ml.registry import ModelRegistry, ModelVersion, model_name
from twinforge.runtime.history import HistoryStore, open_history_store
from twinforge.runtime.twin_service import TwinQuery, TwinService


@dataclass(frozen=True, slots=True)
class TrainingWindow:
    """Which twins' history, over which source times, trains a model."""

    twin_ids: tuple[str, ...]
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def last(cls, twin_ids: tuple[str, ...], hours: float) -> TrainingWindow:
        """The last ``hours`` of the twins' history. No end: samples stamped a little
        ahead of this machine's clock (a plant's own clock) count too."""
        return cls(twin_ids, datetime.now(UTC) - timedelta(hours=hours))


def twins_of(twins: TwinService, interface: str) -> list[str]:
    """Every twin of ``interface`` or a model extending it, a page at a time."""
    found: list[str] = []
    after = None
    while True:
        page = twins.query_twins(TwinQuery(model=interface, limit=1000, after=after))
        found.extend(t["$dtId"] for t in page.items)
        if page.next_after is None:
            return found
        after = page.next_after


def history_training_set(
    store: HistoryStore, binding: ModelBinding, window: TrainingWindow
) -> TrainingSet:
    """One row per twin and telemetry point of the first feature, each other feature at
    its newest point at most :data:`MAX_AGE_S` older: the residuals physics derives are
    kept every 10 s, the telemetry every second. No lot records come with history: every
    row trains, in one group per interface."""
    rows: list[np.ndarray] = []
    twins: list[str] = []
    for twin_id in window.twin_ids:
        columns = [_column(store, twin_id, f, window) for f in binding.features]
        times = columns[0][0]
        row = np.empty((len(times), len(columns)))
        keep = np.ones(len(times), dtype=bool)
        for k, (at, values) in enumerate(columns):
            index = np.searchsorted(at, times, side="right") - 1
            found = index >= 0
            index = np.maximum(index, 0)
            fresh = found & (times - at[index] <= MAX_AGE_S) if len(at) else found & False
            keep &= fresh
            row[:, k] = values[index] if len(at) else np.nan
        rows.append(row[keep])
        twins.extend([twin_id] * int(keep.sum()))
    features = np.vstack(rows) if rows else np.zeros((0, len(binding.features)))
    n = len(features)
    return TrainingSet(
        features,
        binding.features,
        binding.settings,
        np.full(n, WHOLE, dtype=object),
        np.asarray(twins, dtype=object),
        np.asarray(twins, dtype=object),
    )


#: The oldest a feature's point may be, against a row's time, to count for that row.
MAX_AGE_S = 15.0


def _column(
    store: HistoryStore, twin_id: str, feature: str, window: TrainingWindow
) -> tuple[np.ndarray, np.ndarray]:
    """A feature's numeric points: times and values, oldest first."""
    points = store.query(twin_id, feature, start=window.start, end=window.end, limit=None)
    numeric = [
        (p.ts.timestamp(), float(p.value))
        for p in points
        if isinstance(p.value, int | float) and not isinstance(p.value, bool)
    ]
    numeric = [(t, v) for t, v in numeric if np.isfinite(v)]
    at = np.array([t for t, _ in numeric])
    return at, np.array([v for _, v in numeric])


def train_model(
    binding: ModelBinding,
    window: TrainingWindow,
    *,
    history_url: str | None,
    data_dir: Path,
    mlflow_uri: str | None,
    quick: bool = False,
) -> ModelVersion:
    """Train ``binding``'s model on ``window`` and log it as a new registry version."""
    store = open_history_store(history_url, data_dir)
    try:
        data = history_training_set(store, binding, window)
    finally:
        store.close()
    if len(data.features) < binding.min_samples:
        raise ValueError(
            f"window: {len(data.features)} samples with every feature of {binding.name} "
            f"({', '.join(binding.features)}) in the history of {len(window.twin_ids)} twins; "
            f"at least {binding.min_samples} are needed"
        )
    report = train_anomaly(data, binding.interface, binding.training_config(quick=quick))
    registry = ModelRegistry(mlflow_uri, data_dir)
    with tempfile.TemporaryDirectory(prefix="twinforge-model-") as scratch:
        target = Path(scratch) / "bundle"
        save_bundle(report.card, report.models, target)
        metrics = {
            "train_samples": float(report.train_rows),
            "clusters": float(len(report.card.clusters)),
            "train_seconds": report.seconds,
            # Named by model file: cluster keys hold characters MLflow refuses.
            **{f"threshold.{c.model_file[:-5]}": c.threshold for c in report.card.clusters},
        }
        return registry.log(
            model_name(binding.name, binding.interface),
            target,
            params=_params(binding),
            metrics=metrics,
            data_window={
                "twins": list(window.twin_ids),
                "start": window.start,
                "end": window.end,
                "samples": report.train_rows,
            },
        )


def promote_version(
    registry: ModelRegistry, binding: ModelBinding, version: int | None, data_dir: Path
) -> ModelVersion:
    """Promote ``version`` (None: roll back to the one promoted before it) and install
    it where the hosts load it from."""
    full = model_name(binding.name, binding.interface)
    promoted = registry.rollback(full) if version is None else registry.promote(full, version)
    install_version(registry, binding, promoted.version, data_dir)
    return promoted


def install_version(
    registry: ModelRegistry, binding: ModelBinding, version: int, data_dir: Path
) -> Path:
    """Put ``version``'s files where the hosts load ``binding``'s model from."""
    name = model_name(binding.name, binding.interface)
    target = models_dir(data_dir) / binding.name / interface_dir_name(binding.interface)
    registry.download(name, version, target)
    (target / "VERSION").write_text(str(version))
    return target


def _params(binding: ModelBinding) -> dict[str, Any]:
    return {
        "detector": binding.detector,
        "features": ",".join(binding.features),
        "settings": ",".join(binding.settings),
        "quantile": binding.quantile,
        "cv_weight": binding.cv_weight,
        "persistence": binding.persistence,
    }


#: Training off the API process: torch and scikit-learn load in a Ray worker.
train_task = ray.remote(num_cpus=1, max_retries=0)(train_model)


class ModelService:
    """The API's model service: the twins' anomaly answers, training (a Ray task) and
    the registry's versions, promotion and rollback (the hosts reload at once)."""

    def __init__(
        self,
        fleet: Any,
        twins_of: Any,
        bindings: list[ModelBinding],
        *,
        data_dir: Path,
        history_url: str | None,
        mlflow_uri: str | None,
    ) -> None:
        self._fleet = fleet
        self._twins_of = twins_of  # interface -> the twin ids implementing it
        self.bindings = {(b.name, b.interface): b for b in bindings}
        self._data_dir = data_dir
        self._history_url = history_url
        self._mlflow_uri = mlflow_uri
        self._registry: ModelRegistry | None = None  # MLflow loads in seconds: on first use

    def anomaly_of(self, twin_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        return self._fleet.anomaly_of(twin_ids)

    def binding(self, name: str, interface: str) -> ModelBinding:
        binding = self.bindings.get((name, interface))
        if binding is None:
            known = ", ".join(f"{n} of {i}" for n, i in self.bindings) or "none"
            raise LookupError(
                f"name/interface: no model {name} of {interface} (configured: {known})"
            )
        return binding

    def train(
        self, name: str, interface: str, hours: float, *, quick: bool = False
    ) -> ModelVersion:
        binding = self.binding(name, interface)
        window = TrainingWindow.last(tuple(self._twins_of(interface)), hours)
        task = train_task.remote(
            binding,
            window,
            history_url=self._history_url,
            data_dir=self._data_dir,
            mlflow_uri=self._mlflow_uri,
            quick=quick,
        )
        try:
            return ray.get(task)
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, ValueError):  # too little history, a bad window
                raise error.cause from None
            raise

    def versions(self, name: str, interface: str) -> list[ModelVersion]:
        binding = self.binding(name, interface)
        return self.registry.versions(model_name(binding.name, binding.interface))

    def promote(self, name: str, interface: str, version: int | None) -> ModelVersion:
        """Promote ``version`` (None: roll back to the one promoted before) and have the
        running hosts load it."""
        binding = self.binding(name, interface)
        promoted = promote_version(self.registry, binding, version, self._data_dir)
        self._fleet.reload_models()
        return promoted

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(self._mlflow_uri, self._data_dir)
        return self._registry
