"""Scoring anomaly models: what an asset host loads (numpy and onnxruntime only).

An :class:`AnomalyBundle` holds the trained models of one interface, one per setting
cluster (or a single one where an interface has no settings). A sample is scaled with its
cluster's MinMax scaler, clipped to the training range so that an unseen value cannot
blow up the score, and scored by the cluster's ONNX model; the score is comparable to the
cluster's threshold. A setting combination no model was trained on goes to the nearest
trained cluster (Euclidean, in scaled setting space), of the same group first, with its
threshold raised by that distance, and the answer names the fallback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinforge.ml.onnx_scoring import OnnxExportError, OnnxScorer

CARD = "card.json"
#: Alert levels: score / threshold at or above which each is raised, and its severity.
DEFAULT_LEVELS = ((1.0, "warning", 2), (2.0, "critical", 4))


class ModelFileError(ValueError):
    """A model directory that is missing, incomplete or corrupt."""


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """One detector trained on one group's (facility, item) setting cluster."""

    key: str
    """``facility/item/cluster`` (``*`` where the interface has no such grouping)."""
    group: str
    """``facility/item``: where a fallback looks first."""
    detector: str
    centroid: tuple[float, ...]
    """The cluster's centre in scaled setting space."""
    radius: float
    """The largest distance of a trained setting combination from the centre."""
    feature_min: tuple[float, ...]
    feature_max: tuple[float, ...]
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    threshold: float
    sign: float
    """anomaly score = sign * model output + shift (IsolationForest and LOF answer a
    decision function that is high for normal samples; autoencoders an error)."""
    shift: float
    samples: int
    model_file: str
    output: str | None = None
    """The ONNX output holding the score (None: the first)."""


@dataclass(frozen=True, slots=True)
class BundleCard:
    """What a bundle's files mean; ``card.json`` beside the ONNX files."""

    interface: str
    detector: str
    features: tuple[str, ...]
    settings: tuple[str, ...]
    """Features that are machine settings (clustered), by name; empty: one cluster."""
    setting_min: tuple[float, ...]
    setting_max: tuple[float, ...]
    clusters: tuple[ClusterModel, ...]
    levels: tuple[tuple[float, str, int], ...] = DEFAULT_LEVELS
    interval_s: float = 10.0
    """A twin's samples are scored once per window of this many seconds (its latest
    values then): every sample cost the hosts more CPU than all the rest of ingest
    (bench/ml_eval.py), and a machine's condition changes over seconds, not samples."""
    persistence: int = 3
    """Scores in a row above (below) the threshold that raise (clear) the alarm: one
    noisy sample alone raised 10-20 false alarms per machine-day (bench/ml_eval.py)."""
    distance_weight: float = 1.0
    """A fallback's threshold is multiplied by ``1 + distance_weight * distance``."""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AnomalyScores:
    """Scores of a batch, one entry per sample."""

    score: np.ndarray
    threshold: np.ndarray
    cluster: list[str]
    fallback: list[bool]
    """True where the sample's setting had no trained cluster of its own."""
    top_fields: list[tuple[str, ...]]
    """The features furthest from their training mean, most first (anomalous only)."""

    def level(self, index: int, levels: tuple[tuple[float, str, int], ...]) -> tuple[str, int]:
        """The alert level and severity of one sample (``("normal", 0)`` below them)."""
        ratio = self.score[index] / self.threshold[index] if self.threshold[index] > 0 else 0.0
        found = ("normal", 0)
        for at, name, severity in levels:
            if ratio >= at:
                found = (name, severity)
        return found


class AnomalyBundle:
    """The loaded models of one interface."""

    def __init__(self, card: BundleCard, models: dict[str, bytes]) -> None:
        self.card = card
        self._scorers: dict[str, OnnxScorer] = {}
        for cluster in card.clusters:
            model = models.get(cluster.model_file)
            if model is None:
                raise ModelFileError(f"{cluster.model_file}: missing for cluster {cluster.key}")
            try:
                self._scorers[cluster.key] = OnnxScorer(model, cluster.output)
            except OnnxExportError as error:
                raise ModelFileError(f"{cluster.model_file}: {error}") from error
        self._clusters = list(card.clusters)
        self._centroids = np.array([c.centroid for c in card.clusters], dtype=float)
        self._radius = np.array([c.radius for c in card.clusters])
        self._groups = np.array([c.group for c in card.clusters], dtype=object)
        self._setting_index = [card.features.index(s) for s in card.settings]
        self._set_lo = np.asarray(card.setting_min, dtype=float)
        self._set_span = span(self._set_lo, np.asarray(card.setting_max, dtype=float))
        self._scaling = {
            c.key: (
                np.asarray(c.feature_min),
                span(np.asarray(c.feature_min), np.asarray(c.feature_max)),
                np.asarray(c.feature_mean),
                np.where(np.asarray(c.feature_std) > 0, np.asarray(c.feature_std), 1.0),
            )
            for c in card.clusters
        }

    @property
    def features(self) -> tuple[str, ...]:
        return self.card.features

    def assign(
        self, features: np.ndarray, groups: list[str] | None = None
    ) -> list[tuple[int, float]]:
        """Each sample's cluster (index into the card's clusters) and the distance beyond
        that cluster's own trained settings (0: a trained setting)."""
        n = len(features)
        if not self.card.settings or len(self._clusters) == 1:
            return [(0, 0.0)] * n
        settings = (features[:, self._setting_index] - self._set_lo) / self._set_span
        distance = np.linalg.norm(settings[:, None, :] - self._centroids[None, :, :], axis=2)
        beyond = np.maximum(0.0, distance - self._radius[None, :])
        # Among clusters whose trained settings cover a sample, the nearest centre wins.
        rank = beyond + 1e-6 * distance
        out = []
        for i in range(n):
            row = rank[i]
            if groups is not None and groups[i] is not None:
                same = self._groups == groups[i]
                if same.any():
                    # The same facility/item first; the whole maker only if it has none.
                    row = np.where(same, row, np.inf)
            best = int(np.argmin(row))
            out.append((best, float(beyond[i, best])))
        return out

    def score(self, features: np.ndarray, groups: list[str] | None = None) -> AnomalyScores:
        """Score a batch (rows in :attr:`features` order): one ONNX run per cluster."""
        features = np.asarray(features, dtype=float)
        if features.ndim != 2 or features.shape[1] != len(self.card.features):
            raise ValueError(
                f"features: expected a batch of {len(self.card.features)} columns "
                f"({', '.join(self.card.features)}), got shape {features.shape}"
            )
        n = len(features)
        assigned = self.assign(features, groups)
        score = np.zeros(n)
        threshold = np.zeros(n)
        top: list[tuple[str, ...]] = [()] * n
        by_cluster: dict[int, list[int]] = {}
        for i, (c, _) in enumerate(assigned):
            by_cluster.setdefault(c, []).append(i)
        names = self.card.features
        for c, rows in by_cluster.items():
            cluster = self._clusters[c]
            lo, span, mean, std = self._scaling[cluster.key]
            batch = features[rows]
            scaled = np.clip((batch - lo) / span, 0.0, 1.0)  # unseen values can't blow up
            raw = self._scorers[cluster.key].run(scaled)[:, 0]
            score[rows] = cluster.sign * raw + cluster.shift
            weights = 1.0 + self.card.distance_weight * np.array([assigned[i][1] for i in rows])
            threshold[rows] = cluster.threshold * weights
            deviation = np.abs((batch - mean) / std)
            for j, i in enumerate(rows):
                if score[i] >= threshold[i]:
                    order = np.argsort(-deviation[j])[:3]
                    top[i] = tuple(names[k] for k in order)
        return AnomalyScores(
            score,
            threshold,
            [self._clusters[c].key for c, _ in assigned],
            [d > 0 for _, d in assigned],
            top,
        )

    # -- files ---------------------------------------------------------------------

    def save(self, directory: Path, models: dict[str, bytes]) -> None:
        """Write the card and ``models`` (file name -> ONNX bytes) atomically: a host
        that reads ``directory`` meanwhile sees the old bundle or the new, never half."""
        save_bundle(self.card, models, directory)

    @classmethod
    def load(cls, directory: Path) -> AnomalyBundle:
        card, models = read_bundle(directory)
        return cls(card, models)


def debounced(over: np.ndarray, persistence: int) -> np.ndarray:
    """The alarm state over a sequence of samples of one twin: raised after
    ``persistence`` samples in a row over the threshold, cleared after as many under
    (what the hosts do, sample by sample, for evaluation over a recorded sequence)."""
    state = np.zeros(len(over), dtype=bool)
    active, run = False, 0
    for i, o in enumerate(over):
        run = run + 1 if bool(o) != active else 0
        if run >= persistence:
            active, run = bool(o), 0
        state[i] = active
    return state


def save_bundle(card: BundleCard, models: dict[str, bytes], directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    (partial / CARD).write_text(json.dumps(asdict(card), indent=1))
    for name, model in models.items():
        (partial / name).write_bytes(model)
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(partial, directory)
    shutil.rmtree(old, ignore_errors=True)


def read_bundle(directory: Path) -> tuple[BundleCard, dict[str, bytes]]:
    path = directory / CARD
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        clusters = tuple(
            ClusterModel(**{**c, "centroid": tuple(c["centroid"])}) for c in data.pop("clusters")
        )
        levels = tuple((float(a), str(n), int(s)) for a, n, s in data.pop("levels"))
        card = BundleCard(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()},
            clusters=clusters,
            levels=levels,
        )
    except FileNotFoundError as error:
        raise ModelFileError(f"{path}: no model card") from error
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFileError(f"{path}: not a model card: {error}") from error
    models = {}
    for cluster in card.clusters:
        file = directory / cluster.model_file
        if not file.is_file():
            raise ModelFileError(f"{file}: missing for cluster {cluster.key}")
        models[cluster.model_file] = file.read_bytes()
    return card, models


def span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``hi - lo``, with 1 where it is not positive: a constant feature scales to 0."""
    span = hi - lo
    return np.where(span > 0, span, 1.0)
