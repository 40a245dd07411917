"""Fitting one detector on scaled training samples, exported to ONNX and checked against
the native model (training side: imports scikit-learn, and torch for autoencoders)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinforge.ml.onnx_scoring import check_export

ISOLATION_FOREST = "isolation_forest"
LOF = "lof"
AUTOENCODER = "autoencoder"
MEMAE = "memae"
DETECTORS = (ISOLATION_FOREST, LOF, AUTOENCODER, MEMAE)


@dataclass(frozen=True, slots=True)
class FittedDetector:
    """An ONNX model whose output, times ``sign`` plus ``shift``, is an anomaly score
    (higher: more anomalous); ``train_scores`` are those of its training samples."""

    onnx: bytes
    sign: float
    shift: float
    train_scores: np.ndarray
    output: str | None = None


def fit_detector(kind: str, x: np.ndarray, *, seed: int, quick: bool = False) -> FittedDetector:
    """Fit ``kind`` (one of :data:`DETECTORS`) on ``x``, scaled to [0, 1]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if kind in (ISOLATION_FOREST, LOF):
        return _fit_sklearn(kind, x, seed)
    if kind in (AUTOENCODER, MEMAE):
        from twinforge.ml.anomaly.autoencoders import fit_autoencoder

        model, native = fit_autoencoder(x, memory=kind == MEMAE, seed=seed, quick=quick)
        check_export(model, native, x[:300])
        scores = native(x)[:, 0]
        return FittedDetector(model, 1.0, 0.0, scores)
    raise ValueError(f"detector: {kind!r} is not one of {', '.join(DETECTORS)}")


def _fit_sklearn(kind: str, x: np.ndarray, seed: int) -> FittedDetector:
    from skl2onnx import to_onnx
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    if kind == ISOLATION_FOREST:
        model = IsolationForest(n_estimators=100, random_state=seed).fit(x)
    else:
        # novelty=True: scores new samples (the default scores only its training set).
        n = min(20, max(2, len(x) - 1))
        model = LocalOutlierFactor(n_neighbors=n, novelty=True).fit(_subsample(x, 5000, seed))
    onnx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    # The ONNX "scores" output is the decision function (high: normal); the anomaly
    # score is its negation less the model's offset: -score_samples, as sklearn has it.
    check_export(onnx, model.decision_function, x[:300], output="scores")
    scores = -model.score_samples(x)
    return FittedDetector(onnx, -1.0, -float(model.offset_), scores, output="scores")


def _subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """LOF keeps its training set and compares each sample with it: a few thousand
    samples bound its memory and scoring cost."""
    if len(x) <= n:
        return x
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]
