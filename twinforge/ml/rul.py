"""Remaining useful life: the model card a host scores with onnxruntime, sliding windows,
the NASA C-MAPSS reader, a linear degradation baseline and the metrics (RMSE, PHM08).

No torch here: the asset hosts import this module; training is
:mod:`twinforge.ml.rul_training`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twinforge.ml.onnx_scoring import OnnxExportError, OnnxScorer

__all__ = [
    "CMAPSS_FIELDS",
    "CmapssFormatError",
    "LinearDegradationBaseline",
    "RulModel",
    "RulPrediction",
    "RulSeries",
    "SeriesLike",
    "phm08_score",
    "read_cmapss",
    "read_cmapss_test",
    "rmse",
    "sliding_windows",
]

CMAPSS_FIELDS = (
    *(f"setting{i}" for i in range(1, 4)),
    *(f"sensor{i}" for i in range(1, 22)),
)
CARD_VERSION = 1


class SeriesLike(Protocol):
    """One unit run: ``sensors[i]`` (columns ``fields``) at ``times[i]``, true ``rul[i]``
    (the pump trajectories of :mod:`twinforge.sim.run_to_failure` are such series)."""

    @property
    def times(self) -> np.ndarray: ...
    @property
    def sensors(self) -> np.ndarray: ...
    @property
    def rul(self) -> np.ndarray: ...
    @property
    def fields(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class RulSeries:
    """One unit's run as read from a file: times are cycles for C-MAPSS."""

    unit: int
    times: np.ndarray
    sensors: np.ndarray
    rul: np.ndarray
    fields: tuple[str, ...] = CMAPSS_FIELDS


# -- windows and metrics ---------------------------------------------------------------


def sliding_windows(
    sensors: np.ndarray, window: int, *, stride: int = 1, pad: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[n, window, features]`` of ``sensors`` ending at every ``stride``-th
    sample (counted back from the last, so the last sample always ends one) and the
    indices they end at. ``pad``: a window reaching before the first sample repeats the
    first row (a unit seen for less than a window still gets a prediction); otherwise
    windows start at the first full one."""
    sensors = np.asarray(sensors, dtype=np.float64)
    if sensors.ndim != 2 or len(sensors) == 0:
        raise ValueError(f"sensors: must be a non-empty 2-D array, got shape {sensors.shape}")
    if window < 1 or stride < 1:
        raise ValueError(f"window, stride: must be at least 1, got {window}, {stride}")
    first = 0 if pad else window - 1
    ends = np.arange(len(sensors) - 1, first - 1, -stride)[::-1]
    if len(ends) == 0:
        return np.empty((0, window, sensors.shape[1])), ends
    rows = np.clip(ends[:, None] - np.arange(window - 1, -1, -1)[None, :], 0, None)
    return sensors[rows], ends


def rmse(predicted: np.ndarray, true: np.ndarray) -> float:
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def phm08_score(predicted: np.ndarray, true: np.ndarray) -> float:
    """The PHM08 challenge score, summed: late predictions (d = predicted - true > 0)
    cost exp(d/10) - 1, early ones exp(-d/13) - 1 (a late warning is the worse)."""
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    d = np.clip(d, -5000.0, 5000.0)  # exp overflows past ~7000; such a score is absurd anyway
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


# -- predictions and the model card ----------------------------------------------------


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(z / math.sqrt(2.0)))


def _normal_ppf(p: float) -> float:
    """Inverse standard normal CDF by bisection (a few calls per model, no scipy)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class RulPrediction:
    """Per window: the predicted RUL quantiles ``values[:, k]`` at levels ``quantiles[k]``
    (ascending); ``median``, ``low`` and ``high`` (the outermost: the band) in ``unit``."""

    quantiles: tuple[float, ...]
    values: np.ndarray
    unit: str
    horizon: float | None = None
    failure_probability: np.ndarray | None = None
    """P(RUL <= horizon) per window, when predicted with a horizon."""

    @property
    def median(self) -> np.ndarray:
        return self.values[:, self.quantiles.index(0.5)]

    @property
    def low(self) -> np.ndarray:
        return self.values[:, 0]

    @property
    def high(self) -> np.ndarray:
        return self.values[:, -1]

    def probability_within(self, horizon: float) -> np.ndarray:
        """P(RUL <= ``horizon``) per window from the quantiles: the CDF linear between
        them, normal tails beyond matched to the outermost quantile on each side."""
        if not math.isfinite(horizon) or horizon < 0:
            raise ValueError(f"horizon: must be a finite number >= 0, got {horizon!r}")
        q = np.asarray(self.quantiles)
        out = np.empty(len(self.values))
        median = self.median
        z_low, z_high = _normal_ppf(q[0]), _normal_ppf(q[-1])
        for i, row in enumerate(self.values):
            if horizon < row[0]:
                sigma = max((median[i] - row[0]) / -z_low, 1e-9) if z_low < 0 else 1e-9
                out[i] = _normal_cdf(np.asarray((horizon - median[i]) / sigma))
                out[i] = min(out[i], q[0])
            elif horizon > row[-1]:
                sigma = max((row[-1] - median[i]) / z_high, 1e-9) if z_high > 0 else 1e-9
                out[i] = max(float(_normal_cdf(np.asarray((horizon - median[i]) / sigma))), q[-1])
            else:
                # np.interp needs increasing x: equal quantile values make a step.
                out[i] = np.interp(horizon, row, q)
        return out


@dataclass(slots=True)
class RulModel:
    """A trained RUL model as the hosts score it: the ONNX model maps scaled windows
    ``[n, window, len(feature_names)]`` (float32, input ``x``) to RUL quantiles
    ``[n, len(quantiles)]`` in ``rul_unit`` (output ``y``). Features are scaled to
    [0, 1] by the training minimum and maximum, then clipped to ``clip`` (a little room
    beyond the training range: conditions never trained on still get scored, a broken
    sensor cannot send the model anywhere)."""

    onnx: bytes
    feature_names: tuple[str, ...]
    window: int
    feature_min: tuple[float, ...]
    feature_max: tuple[float, ...]
    quantiles: tuple[float, ...]
    rul_unit: str = "h"
    sample_interval: float = 1.0
    """Time between window rows, in ``rul_unit``."""
    clip: tuple[float, float] = (-0.5, 1.5)
    info: dict[str, Any] = field(default_factory=dict)
    """How it was trained (seed, series, epochs, export check): for the registry."""
    _scorer: OnnxScorer | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        f = len(self.feature_names)
        if len(self.feature_min) != f or len(self.feature_max) != f:
            raise ValueError(
                f"feature_min, feature_max: need one value per feature ({f}), got "
                f"{len(self.feature_min)} and {len(self.feature_max)}"
            )
        if self.window < 1:
            raise ValueError(f"window: must be at least 1, got {self.window}")
        q = self.quantiles
        if 0.5 not in q or list(q) != sorted(set(q)) or not all(0 < x < 1 for x in q):
            raise ValueError(f"quantiles: must ascend within (0, 1) and hold 0.5, got {q}")

    def scale(self, windows: np.ndarray) -> np.ndarray:
        """``windows`` scaled and clipped as the ONNX model takes them (float32)."""
        w = np.asarray(windows, dtype=np.float64)
        shape = (self.window, len(self.feature_names))
        if w.ndim != 3 or w.shape[1:] != shape:
            raise ValueError(f"windows: must have shape [n, {shape[0]}, {shape[1]}], got {w.shape}")
        if not np.all(np.isfinite(w)):
            bad = np.unique(np.nonzero(~np.isfinite(w))[0])[:5].tolist()
            raise ValueError(f"windows: must be finite; windows {bad} hold NaN or infinity")
        low = np.asarray(self.feature_min)
        span = np.asarray(self.feature_max) - low
        span = np.where(span > 0, span, 1.0)  # a constant feature (C-MAPSS has some): 0
        return np.clip((w - low) / span, *self.clip).astype(np.float32)

    def predict(self, windows: np.ndarray, *, horizon: float | None = None) -> RulPrediction:
        """RUL quantiles of each window (rows oldest first, columns ``feature_names``),
        and with ``horizon`` the probability of failure within it."""
        if self._scorer is None:
            self._scorer = OnnxScorer(self.onnx)
        x = self.scale(windows)
        values = np.empty((0, len(self.quantiles)))
        if len(x):
            values = self._scorer.run(x)
        # RUL is never negative; clipping keeps the quantiles' order.
        values = np.maximum(values, 0.0)
        prediction = RulPrediction(self.quantiles, values, self.rul_unit)
        if horizon is None:
            return prediction
        return RulPrediction(
            self.quantiles, values, self.rul_unit, horizon, prediction.probability_within(horizon)
        )

    # -- persistence -----------------------------------------------------------------

    def card(self) -> dict[str, Any]:
        return {
            "version": CARD_VERSION,
            "kind": "rul",
            "feature_names": list(self.feature_names),
            "window": self.window,
            "feature_min": list(self.feature_min),
            "feature_max": list(self.feature_max),
            "quantiles": list(self.quantiles),
            "rul_unit": self.rul_unit,
            "sample_interval": self.sample_interval,
            "clip": list(self.clip),
            "info": self.info,
        }

    def save(self, directory: Path | str) -> Path:
        """Write ``model.onnx`` and ``card.json`` into ``directory`` (made if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.onnx").write_bytes(self.onnx)
        (d / "card.json").write_text(json.dumps(self.card(), indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: Path | str) -> RulModel:
        """The model saved in ``directory``; its ONNX model is loaded at once, so that a
        corrupt file fails here, naming it, not at the first prediction."""
        d = Path(directory)
        card_path, model_path = d / "card.json", d / "model.onnx"
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{card_path}: cannot read the model card: {error}") from error
        if card.get("version") != CARD_VERSION or card.get("kind") != "rul":
            raise ValueError(
                f"{card_path}: version, kind: must be {CARD_VERSION}, 'rul'; got "
                f"{card.get('version')!r}, {card.get('kind')!r}"
            )
        try:
            model = cls(
                onnx=model_path.read_bytes(),
                feature_names=tuple(card["feature_names"]),
                window=int(card["window"]),
                feature_min=tuple(float(x) for x in card["feature_min"]),
                feature_max=tuple(float(x) for x in card["feature_max"]),
                quantiles=tuple(float(x) for x in card["quantiles"]),
                rul_unit=str(card["rul_unit"]),
                sample_interval=float(card["sample_interval"]),
                clip=(float(card["clip"][0]), float(card["clip"][1])),
                info=dict(card.get("info", {})),
            )
        except KeyError as error:
            raise ValueError(f"{card_path}: {error.args[0]}: missing from the card") from None
        except OSError as error:
            raise ValueError(f"{model_path}: cannot read the model: {error}") from error
        try:
            model._scorer = OnnxScorer(model.onnx)
        except OnnxExportError as error:
            raise ValueError(f"{model_path}: not a loadable ONNX model: {error}") from error
        return model


# -- NASA C-MAPSS ------------------------------------------------------------------------


class CmapssFormatError(ValueError):
    """A line of a C-MAPSS file that breaks the format: names the file, line and rule."""


def _parse_cmapss(path: Path) -> dict[int, list[tuple[int, list[float]]]]:
    units: dict[int, list[tuple[int, list[float]]]] = {}
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue  # blank lines (a trailing newline pair) carry nothing
            where = f"{path}:{number}"
            if len(parts) != 2 + len(CMAPSS_FIELDS):
                raise CmapssFormatError(
                    f"{where}: line: must hold {2 + len(CMAPSS_FIELDS)} whitespace-separated "
                    f"numbers (unit, cycle, 3 settings, 21 sensors), got {len(parts)}"
                )
            try:
                unit, cycle = int(parts[0]), int(parts[1])
            except ValueError:
                raise CmapssFormatError(
                    f"{where}: unit, cycle: must be integers, got {parts[0]!r}, {parts[1]!r}"
                ) from None
            if unit < 1 or cycle < 1:
                raise CmapssFormatError(
                    f"{where}: unit, cycle: must be at least 1, got {unit}, {cycle}"
                )
            try:
                values = [float(p) for p in parts[2:]]
            except ValueError as error:
                raise CmapssFormatError(f"{where}: settings, sensors: {error}") from None
            if not all(math.isfinite(v) for v in values):
                raise CmapssFormatError(f"{where}: settings, sensors: must be finite numbers")
            rows = units.setdefault(unit, [])
            if rows and cycle != rows[-1][0] + 1:
                raise CmapssFormatError(
                    f"{where}: cycle: must follow cycle {rows[-1][0]} of unit {unit} as "
                    f"{rows[-1][0] + 1}, got {cycle}"
                )
            if not rows and cycle != 1:
                raise CmapssFormatError(
                    f"{where}: cycle: a unit's first line must be cycle 1, got {cycle}"
                )
            rows.append((cycle, values))
    if not units:
        raise CmapssFormatError(f"{path}: file: holds no data lines")
    return units


def _series(unit: int, rows: list[tuple[int, list[float]]], rul_after: float) -> RulSeries:
    cycles = np.asarray([c for c, _ in rows], dtype=np.float64)
    return RulSeries(
        unit=unit,
        times=cycles,
        sensors=np.asarray([v for _, v in rows], dtype=np.float64),
        rul=cycles[-1] - cycles + rul_after,
    )


def read_cmapss(train_path: Path | str) -> list[RulSeries]:
    """The units of a C-MAPSS training file (``train_FD00x.txt``): each runs to failure,
    so RUL = its last cycle - cycle. Times and RUL in cycles."""
    units = _parse_cmapss(Path(train_path))
    return [_series(unit, rows, 0.0) for unit, rows in sorted(units.items())]


def read_cmapss_test(test_path: Path | str, rul_path: Path | str) -> list[RulSeries]:
    """The units of a C-MAPSS test file, cut off before failure, with their true RUL at
    the last cycle from ``RUL_FD00x.txt`` (one integer per unit, in unit order)."""
    units = _parse_cmapss(Path(test_path))
    ruls: list[float] = []
    with open(rul_path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = float(line.split()[0])
            except ValueError:
                raise CmapssFormatError(
                    f"{rul_path}:{number}: RUL: must be a number, got {line.strip()!r}"
                ) from None
            if not (math.isfinite(value) and value >= 0) or len(line.split()) != 1:
                raise CmapssFormatError(
                    f"{rul_path}:{number}: RUL: must be one number >= 0, got {line.strip()!r}"
                )
            ruls.append(value)
    ordered = sorted(units.items())
    if len(ruls) != len(ordered):
        raise CmapssFormatError(
            f"{rul_path}: RUL: must give one value per unit of {test_path} ({len(ordered)}), "
            f"got {len(ruls)}"
        )
    return [_series(u, rows, r) for (u, rows), r in zip(ordered, ruls, strict=True)]


# -- the linear degradation baseline ------------------------------------------------------


@dataclass(slots=True)
class LinearDegradationBaseline:
    """The classic health-indicator extrapolation: a health indicator linear in the
    standardized sensors, fitted on training runs to the life fraction used (0 new,
    1 failed); over a window, a straight line through it, extrapolated to the level it
    reaches at failure on the training runs. The fit window is chosen among
    ``candidates`` by RMSE on the training runs (never on evaluation data)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    failure_level: float
    window: int
    sample_interval: float
    max_rul: float

    @classmethod
    def fit(
        cls, series: Sequence[SeriesLike], candidates: Sequence[int] = (8, 16, 32, 64, 128)
    ) -> LinearDegradationBaseline:
        if not series:
            raise ValueError("series: need at least one training series")
        x = np.concatenate([s.sensors for s in series])
        life = np.concatenate([1.0 - s.rul / max(s.rul[0], 1e-9) for s in series])
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        z = np.column_stack([(x - mean) / std, np.ones(len(x))])
        weights, *_ = np.linalg.lstsq(z, life, rcond=None)
        # The level at failure: the fitted indicator over each run's last few samples.
        ends = [cls._hi(mean, std, weights, s.sensors[-3:]).mean() for s in series]
        interval = float(np.median(np.concatenate([np.diff(s.times) for s in series])))
        max_rul = float(max(s.rul.max() for s in series))
        best: LinearDegradationBaseline | None = None
        best_rmse = math.inf
        for window in candidates:
            model = cls(mean, std, weights, float(np.mean(ends)), window, interval, max_rul)
            errors = []
            for s in series:
                w, idx = sliding_windows(s.sensors, window, stride=max(1, window // 4))
                errors.append(model.predict(w) - s.rul[idx])
            score = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
            if score < best_rmse:
                best, best_rmse = model, score
        assert best is not None
        return best

    @staticmethod
    def _hi(mean: np.ndarray, std: np.ndarray, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std) @ weights[:-1] + weights[-1]

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """RUL per window (``[n, window, features]``; only the last :attr:`window` rows
        are used), in the training series' time unit."""
        w = np.asarray(windows, dtype=np.float64)[:, -self.window :]
        hi = self._hi(self.mean, self.std, self.weights, w)
        t = np.arange(hi.shape[1], dtype=np.float64)
        t -= t.mean()
        denom = float(np.sum(t * t))
        slope = (hi - hi.mean(axis=1, keepdims=True)) @ t / denom if denom > 0 else 0 * hi[:, 0]
        now = hi.mean(axis=1) + slope * t[-1]  # the fitted line's end: less noisy than a sample
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = (self.failure_level - now) / slope
        # No degradation visible (flat or improving): as healthy as training ever was.
        rul = np.where(slope > 1e-12, steps * self.sample_interval, self.max_rul)
        rul = np.where(now >= self.failure_level, 0.0, rul)
        return np.clip(rul, 0.0, self.max_rul)
