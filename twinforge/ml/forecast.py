"""Per-machine power forecasts: 15-minute power for the next 24 h, a LightGBM model and an
LSTM combined, for the scheduler's energy planning.

Scoring side only: numpy, LightGBM (its booster text) and onnxruntime (the LSTM exported
to ONNX); never torch. Training is :mod:`twinforge.ml.forecast_training`.

One global model serves every machine: each forecast divides the machine's history by its
own scale (a high quantile of the last week), so a 2 kW conveyor and a 40 kW molding
machine share the shapes of shifts, breaks and weekends, and a machine never seen in
training is forecast from its own week alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np

from twinforge.ml.onnx_scoring import OnnxScorer

SLOT_MINUTES = 15
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
#: Slots of history a forecast needs: its features look one week back.
HISTORY_SLOTS = 7 * SLOTS_PER_DAY
#: Slots forecast: the next 24 h.
HORIZON = SLOTS_PER_DAY

#: Slots whose actual power is below this (kW) are left out of :func:`mape`: a machine
#: switched off reads 0, and a percentage error of a zero is undefined.
MAPE_FLOOR_KW = 0.1

#: Columns of :attr:`Features.table`, in order. Power columns are divided by the scale.
FEATURE_NAMES = (
    "lag_day",  # same slot yesterday
    "lag_2day",
    "lag_week",  # same slot last week
    "slot_mean_7d",  # same slot over the last 7 days
    "slot_min_7d",
    "slot_max_7d",
    "last_slot",  # recent level
    "last_hour",
    "last_day",
    "last_week",
    "day_vs_week",  # the last day's level against the week's
    "horizon",  # slots ahead of the forecast's start
    "slot_of_day",
    "day_of_week",  # Monday 0
    "holiday",
    "holiday_yesterday",  # the day lag_day reads
    "holiday_last_week",  # the day lag_week reads
)
_POWER_COLUMNS = 11  # the first 11 columns are power levels, the rest calendar


class ForecastInputError(ValueError):
    """Input a forecast cannot be made from; the message names the field and the rule."""


@dataclass(frozen=True)
class Features:
    """Features of forecasts from ``len(scale)`` origins: ``table`` is (origins, 96,
    len(FEATURE_NAMES)); ``scale`` the kW each origin's power columns were divided by."""

    table: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True)
class FeatureConfig:
    """What a forecaster's models were trained on; checked on load."""

    feature_names: tuple[str, ...] = FEATURE_NAMES
    scale_quantile: float = 0.95
    history_slots: int = HISTORY_SLOTS
    horizon: int = HORIZON


def slot_number(moment: datetime) -> int:
    """The 15-minute slot ``moment`` starts, counted from 0001-01-01 (plant local time)."""
    return (
        moment.date().toordinal() * SLOTS_PER_DAY
        + (moment.hour * 60 + moment.minute) // SLOT_MINUTES
    )


def features(
    kw: np.ndarray,
    start: datetime,
    origins: np.ndarray,
    *,
    holidays: Iterable[date] = (),
    scale_quantile: float = 0.95,
) -> Features:
    """Features of the 24-h forecasts from each index of ``origins`` into ``kw`` (power
    per slot from ``start``): each forecast sees ``kw[:origin]`` only. Origins must leave
    one week of history before them."""
    kw = np.asarray(kw, dtype=np.float64)
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size and int(origins.min()) < HISTORY_SLOTS:
        raise ForecastInputError(
            f"origins: each needs {HISTORY_SLOTS} slots of history before it, got {int(origins.min())}"
        )
    if origins.size and int(origins.max()) > len(kw):
        raise ForecastInputError(
            f"origins: must lie within the {len(kw)} slots given, got {int(origins.max())}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(kw, HISTORY_SLOTS)
    week = windows[origins - HISTORY_SLOTS]  # (m, 672): the week before each origin
    scale = np.maximum(np.quantile(week, scale_quantile, axis=1), 1e-3)
    norm = week / scale[:, None]

    k = np.arange(HORIZON)
    # Index into `norm` of the same slot j days back: 672 + k - 96 j, always < 672.
    same_slot = np.stack([norm[:, HISTORY_SLOTS + k - SLOTS_PER_DAY * j] for j in range(1, 8)])
    m = len(origins)
    table = np.empty((m, HORIZON, len(FEATURE_NAMES)))
    table[..., 0] = same_slot[0]
    table[..., 1] = same_slot[1]
    table[..., 2] = same_slot[6]
    table[..., 3] = same_slot.mean(axis=0)
    table[..., 4] = same_slot.min(axis=0)
    table[..., 5] = same_slot.max(axis=0)
    last_day = norm[:, -SLOTS_PER_DAY:].mean(axis=1)
    last_week = norm.mean(axis=1)
    recent = (
        norm[:, -1],
        norm[:, -4:].mean(axis=1),
        last_day,
        last_week,
        last_day / np.maximum(last_week, 1e-3),
    )
    for column, value in enumerate(recent, start=6):
        table[..., column] = value[:, None]

    absolute = slot_number(start) + origins[:, None] + k[None, :]
    day = absolute // SLOTS_PER_DAY
    off_days = np.array(sorted({h.toordinal() for h in holidays}), dtype=np.int64)
    table[..., 11] = k[None, :]
    table[..., 12] = absolute % SLOTS_PER_DAY
    table[..., 13] = (day + 6) % 7  # ordinal 1 (0001-01-01) is a Monday
    table[..., 14] = np.isin(day, off_days)
    table[..., 15] = np.isin(day - 1, off_days)
    table[..., 16] = np.isin(day - 7, off_days)
    return Features(table=table, scale=scale)


def lstm_inputs(table: np.ndarray) -> np.ndarray:
    """The LSTM's input from a feature table: (origins, 96, 27) float32, the calendar
    encoded as a network needs it (slot of day on a circle, the weekday one-hot)."""
    power = table[..., :_POWER_COLUMNS]
    slot = table[..., 12] * (2 * np.pi / SLOTS_PER_DAY)
    weekday = np.eye(7)[table[..., 13].astype(np.int64)]
    parts = [
        power,
        (table[..., 11] / HORIZON)[..., None],
        np.sin(slot)[..., None],
        np.cos(slot)[..., None],
        weekday,
        table[..., 14:17],
    ]
    return np.concatenate(parts, axis=-1).astype(np.float32)


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The last ``season`` slots of ``history`` repeated over ``horizon`` slots: the value
    of the same slot one season earlier (a day: 96, a week: 672)."""
    history = np.asarray(history, dtype=np.float64)
    if history.ndim != 1:
        raise ForecastInputError(f"history: must be one-dimensional, got shape {history.shape}")
    if not isinstance(horizon, int | np.integer) or horizon < 0:
        raise ForecastInputError(f"horizon: must be an integer of at least 0, got {horizon!r}")
    if not isinstance(season, int | np.integer) or season < 1:
        raise ForecastInputError(f"season: must be an integer of at least 1, got {season!r}")
    if len(history) < season:
        raise ForecastInputError(
            f"history: needs at least one season ({season} slots), got {len(history)}"
        )
    _check_finite("history", history)
    return history[len(history) - season + np.arange(horizon) % season].copy()


def mape(actual: np.ndarray, forecast: np.ndarray, *, floor_kw: float = MAPE_FLOOR_KW) -> float:
    """Mean absolute percentage error in percent, over the slots whose actual power is at
    least ``floor_kw`` (the others, a machine switched off, have no percentage error)."""
    actual = np.asarray(actual, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    if actual.shape != forecast.shape:
        raise ForecastInputError(
            f"forecast: must have the shape of actual {actual.shape}, got {forecast.shape}"
        )
    counted = actual >= floor_kw
    if not counted.any():
        raise ForecastInputError(f"actual: no slot is at least floor_kw={floor_kw}")
    return float(np.mean(np.abs(forecast[counted] - actual[counted]) / actual[counted]) * 100)


@dataclass
class PowerForecaster:
    """A trained forecaster: LightGBM booster text, the LSTM as ONNX bytes, and the weight
    of LightGBM in their combination (the LSTM gets ``1 - weight``)."""

    booster: str
    lstm: bytes
    weight: float
    config: FeatureConfig = field(default_factory=FeatureConfig)
    _lgbm: lgb.Booster | None = field(default=None, init=False, repr=False, compare=False)
    _onnx: OnnxScorer | None = field(default=None, init=False, repr=False, compare=False)

    def predict(
        self,
        history_kw: np.ndarray,
        start_slot_time: datetime,
        *,
        holidays: Iterable[date] = (),
    ) -> np.ndarray:
        """kW for the 96 slots from ``start_slot_time`` on; ``history_kw`` is the machine's
        power up to that slot (its last value the slot just before), at least one week."""
        history = np.asarray(history_kw, dtype=np.float64)
        if history.ndim != 1:
            raise ForecastInputError(
                f"history_kw: must be one-dimensional, got shape {history.shape}"
            )
        if len(history) < self.config.history_slots:
            raise ForecastInputError(
                f"history_kw: needs at least one week ({self.config.history_slots} slots of "
                f"{SLOT_MINUTES} minutes), got {len(history)}"
            )
        _check_finite("history_kw", history)
        if (history < 0).any():
            slot = int(np.argmax(history < 0))
            raise ForecastInputError(
                f"history_kw: power must be at least 0, slot {slot} is {history[slot]}"
            )
        if not isinstance(start_slot_time, datetime):
            raise ForecastInputError(
                f"start_slot_time: must be a datetime, got {type(start_slot_time).__name__}"
            )
        if (
            start_slot_time.minute % SLOT_MINUTES
            or start_slot_time.second
            or start_slot_time.microsecond
        ):
            raise ForecastInputError(
                f"start_slot_time: must start a {SLOT_MINUTES}-minute slot, got {start_slot_time}"
            )
        history = history[-self.config.history_slots :]
        start = start_slot_time - timedelta(minutes=SLOT_MINUTES * len(history))
        table = features(
            history,
            start,
            np.array([len(history)]),
            holidays=holidays,
            scale_quantile=self.config.scale_quantile,
        )
        return self.combine(*self.components(table))[0]

    def components(self, table: Features) -> tuple[np.ndarray, np.ndarray]:
        """LightGBM's and the LSTM's forecasts in kW, (origins, 96) each."""
        m = len(table.scale)
        flat = table.table.reshape(m * HORIZON, -1)
        gbm = self._booster().predict(flat, num_threads=1).reshape(m, HORIZON)
        net = self._scorer().run(lstm_inputs(table.table)).reshape(m, HORIZON)
        return gbm * table.scale[:, None], net * table.scale[:, None]

    def combine(self, gbm: np.ndarray, net: np.ndarray) -> np.ndarray:
        return np.maximum(self.weight * gbm + (1.0 - self.weight) * net, 0.0)

    def save(self, directory: str | Path) -> Path:
        """Write ``forecaster.json``, ``lgbm.txt`` and ``lstm.onnx`` into ``directory``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "lgbm.txt").write_text(self.booster)
        (path / "lstm.onnx").write_bytes(self.lstm)
        meta = {"format": 1, "weight": self.weight, "config": asdict(self.config)}
        (path / "forecaster.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PowerForecaster:
        path = Path(directory)
        for name in ("forecaster.json", "lgbm.txt", "lstm.onnx"):
            if not (path / name).is_file():
                raise ForecastInputError(f"directory: {path} has no {name}")
        meta = json.loads((path / "forecaster.json").read_text())
        config = meta["config"]
        config["feature_names"] = tuple(config["feature_names"])
        if config["feature_names"] != FEATURE_NAMES:
            raise ForecastInputError(
                f"feature_names: the saved forecaster's features {config['feature_names']} "
                f"are not this version's {FEATURE_NAMES}"
            )
        return cls(
            booster=(path / "lgbm.txt").read_text(),
            lstm=(path / "lstm.onnx").read_bytes(),
            weight=float(meta["weight"]),
            config=FeatureConfig(**config),
        )

    def _booster(self) -> lgb.Booster:
        if self._lgbm is None:
            self._lgbm = lgb.Booster(model_str=self.booster)
        return self._lgbm

    def _scorer(self) -> OnnxScorer:
        if self._onnx is None:
            self._onnx = OnnxScorer(self.lstm, "y")
        return self._onnx


def _check_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        slot = int(np.argmax(~np.isfinite(values)))
        raise ForecastInputError(f"{name}: values must be finite, slot {slot} is {values[slot]}")
