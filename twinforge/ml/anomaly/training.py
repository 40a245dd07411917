"""Training anomaly models the way molding plants do where only lot quality is known.

- Training data is chosen by lot: lots under the clean defect rate (1%) train, the others
  are held for validation; facility/item/setting groups with fewer than ``min_samples``
  clean samples get no model (their samples fall back to the nearest trained cluster).
- Machine settings are clustered with K-Means on their unique combinations, per
  facility/item, so each facility/item/setting cluster gets its own model.
- Each model's features are MinMax-scaled on its training data, clipped when scored.
- Each threshold comes from the training score distribution (:class:`ThresholdRule`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from twinforge.ml.anomaly.detectors import AUTOENCODER, DETECTORS, fit_detector
from twinforge.ml.anomaly.scoring import DEFAULT_LEVELS, BundleCard, ClusterModel, span
from twinforge.ml.anomaly.threshold import ThresholdRule

#: Scaled setting distance beyond a cluster's trained spread still counted as trained.
RADIUS_MARGIN = 0.02
#: Rows of the one group of an interface trained without facility/item grouping.
WHOLE = "*"


@dataclass(slots=True)
class TrainingSet:
    """Samples of one interface with where they came from. ``groups`` is each row's
    ``facility/item`` (or :data:`WHOLE`), ``lots`` its lot id, ``machines`` its twin."""

    features: np.ndarray
    names: tuple[str, ...]
    settings: tuple[str, ...]
    groups: np.ndarray
    lots: np.ndarray
    machines: np.ndarray
    lot_defect_rate: dict[str, float] = field(default_factory=dict)
    """Lot id -> defect rate from the quality records; lots without a record train."""

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features.ndim != 2 or self.features.shape[1] != len(self.names):
            raise ValueError(
                f"features: expected {len(self.names)} columns ({', '.join(self.names)}), "
                f"got shape {self.features.shape}"
            )
        for name in ("groups", "lots", "machines"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name}: expected one per sample ({n}), got {len(getattr(self, name))}"
                )
        missing = [s for s in self.settings if s not in self.names]
        if missing:
            raise ValueError(f"settings: {', '.join(missing)} are not features")
        if not np.isfinite(self.features).all():
            raise ValueError("features: NaN or infinite values; drop or fill them first")


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    detector: str = AUTOENCODER
    clean_defect_rate: float = 0.01
    min_samples: int = 500
    max_clusters: int = 6
    rule: ThresholdRule = field(default_factory=ThresholdRule)
    distance_weight: float = 1.0
    persistence: int = 3
    interval_s: float = 10.0
    levels: tuple[tuple[float, str, int], ...] = DEFAULT_LEVELS
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector: {self.detector!r} is not one of {', '.join(DETECTORS)}")
        if not 0 < self.clean_defect_rate <= 1:
            raise ValueError(f"clean_defect_rate: must be in (0, 1], got {self.clean_defect_rate}")
        if self.min_samples < 10:
            raise ValueError(f"min_samples: must be >= 10, got {self.min_samples}")


@dataclass(frozen=True, slots=True)
class RecipeAdvice:
    """A setting cluster a machine ran an item with: its production, its defect rate
    from the lot records, and the process values it produced (min, mean, max)."""

    machine: str
    group: str
    cluster: str
    centroid: dict[str, float]
    parts: int
    defect_rate: float
    process: dict[str, tuple[float, float, float]]


@dataclass(slots=True)
class TrainingReport:
    card: BundleCard
    models: dict[str, bytes]
    left_out: dict[str, int]
    """Clusters with too few clean samples: key -> clean samples."""
    train_rows: int
    validation_rows: int
    advice: list[RecipeAdvice]
    seconds: float


def train_anomaly(data: TrainingSet, interface: str, config: TrainingConfig) -> TrainingReport:
    """One model per facility/item/setting cluster with enough clean samples."""
    started = time.perf_counter()
    clean_lots = {
        lot for lot, rate in data.lot_defect_rate.items() if rate < config.clean_defect_rate
    }
    known = set(data.lot_defect_rate)
    clean = np.array([lot in clean_lots or lot not in known for lot in data.lots])
    index = [data.names.index(s) for s in data.settings]
    settings = data.features[:, index]
    lo = settings.min(axis=0) if len(index) else np.zeros(0)
    hi = settings.max(axis=0) if len(index) else np.zeros(0)
    scaled = (settings - lo) / span(lo, hi)
    clusters: list[ClusterModel] = []
    models: dict[str, bytes] = {}
    left_out: dict[str, int] = {}
    labels = np.empty(len(data.features), dtype=object)
    for group in sorted(set(data.groups)):
        in_group = data.groups == group
        centroids, assigned = _cluster(scaled[in_group], config.max_clusters, config.seed)
        labels[in_group] = [f"{group}/{c}" for c in assigned]
        for c, centroid in enumerate(centroids):
            key = f"{group}/{c}"
            rows = in_group & (labels == key) & clean
            if rows.sum() < config.min_samples:
                left_out[key] = int(rows.sum())
                continue
            x = data.features[rows]
            f_lo, f_hi = x.min(axis=0), x.max(axis=0)
            x_scaled = (x - f_lo) / span(f_lo, f_hi)
            fitted = fit_detector(config.detector, x_scaled, seed=config.seed, quick=config.quick)
            # A setting within the cluster's spread (and a little more: engineers adjust
            # each lot by a degree or two) counts as trained; beyond it, a fallback.
            spread = np.linalg.norm(scaled[rows] - centroid, axis=1) if index else np.zeros(1)
            radius = float(spread.max()) * 1.2 + RADIUS_MARGIN
            name = f"cluster-{len(clusters):03d}.onnx"
            models[name] = fitted.onnx
            clusters.append(
                ClusterModel(
                    key=key,
                    group=group,
                    detector=config.detector,
                    centroid=tuple(float(v) for v in centroid),
                    radius=radius,
                    feature_min=tuple(map(float, f_lo)),
                    feature_max=tuple(map(float, f_hi)),
                    feature_mean=tuple(map(float, x.mean(axis=0))),
                    feature_std=tuple(map(float, x.std(axis=0))),
                    threshold=config.rule.threshold(fitted.train_scores),
                    sign=fitted.sign,
                    shift=fitted.shift,
                    samples=int(rows.sum()),
                    model_file=name,
                    output=fitted.output,
                )
            )
    if not clusters:
        raise ValueError(
            f"samples: no facility/item/setting cluster has {config.min_samples} clean "
            f"samples (the most has {max(left_out.values(), default=0)})"
        )
    card = BundleCard(
        interface=interface,
        detector=config.detector,
        features=data.names,
        settings=data.settings,
        setting_min=tuple(map(float, lo)),
        setting_max=tuple(map(float, hi)),
        clusters=tuple(clusters),
        levels=config.levels,
        persistence=config.persistence,
        interval_s=config.interval_s,
        distance_weight=config.distance_weight,
    )
    advice = recipe_advice(data, labels, clusters, lo, hi)
    seconds = time.perf_counter() - started
    return TrainingReport(
        card, models, left_out, int(clean.sum()), int((~clean).sum()), advice, seconds
    )


def _cluster(settings: np.ndarray, max_clusters: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """K-Means on the unique setting combinations (each combination counts once, as a
    recipe does, however long it ran); k by the silhouette score."""
    if settings.shape[1] == 0:
        return np.zeros((1, 0)), [0] * len(settings)
    unique, inverse = np.unique(np.round(settings, 6), axis=0, return_inverse=True)
    if len(unique) < 3:
        return unique.mean(axis=0, keepdims=True), [0] * len(settings)
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best: tuple[float, KMeans] | None = None
    for k in range(2, min(max_clusters, len(unique) - 1) + 1):
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(unique)
        quality = silhouette_score(unique, km.labels_)
        if best is None or quality > best[0]:
            best = (quality, km)
    assert best is not None
    model = best[1]
    return model.cluster_centers_, [int(v) for v in model.labels_[inverse.ravel()]]


def recipe_advice(
    data: TrainingSet,
    labels: np.ndarray,
    clusters: list[ClusterModel],
    lo: np.ndarray,
    hi: np.ndarray,
) -> list[RecipeAdvice]:
    """Per machine and item, its setting clusters: most production and lowest defect
    rate first (defect rates are the lot records', weighted by each lot's parts)."""
    centroids = {c.key: c.centroid for c in clusters}
    process = [i for i, n in enumerate(data.names) if n not in data.settings and "." not in n]
    out = []
    for machine in sorted(set(data.machines)):
        mine = data.machines == machine
        for key in sorted(set(labels[mine])):
            rows = mine & (labels == key)
            lots, counts = np.unique(data.lots[rows], return_counts=True)
            rates = [data.lot_defect_rate.get(lot, 0.0) for lot in lots]
            parts = int(counts.sum())
            centroid = centroids.get(key)
            if centroid is None:  # an untrained cluster: its settings' mean
                index = [data.names.index(s) for s in data.settings]
                centre = data.features[rows][:, index].mean(axis=0)
            else:
                centre = lo + np.asarray(centroid) * span(lo, hi)
            x = data.features[rows]
            out.append(
                RecipeAdvice(
                    machine=str(machine),
                    group=key.rsplit("/", 1)[0],
                    cluster=key,
                    centroid={
                        s: round(float(v), 3) for s, v in zip(data.settings, centre, strict=True)
                    },
                    parts=parts,
                    defect_rate=float(np.average(rates, weights=counts)),
                    process={
                        data.names[i]: (
                            float(x[:, i].min()),
                            float(x[:, i].mean()),
                            float(x[:, i].max()),
                        )
                        for i in process
                    },
                )
            )
    out.sort(key=lambda a: (a.machine, a.group, a.defect_rate, -a.parts))
    return out
