"""Training the power forecasts (LightGBM and an LSTM, one global model across machines)
and their honest evaluation against seasonal-naive baselines. Training side: imports torch.

Hyperparameters are chosen on a validation split of the training period only (the last
fifth of each machine's days): LightGBM's rounds by early stopping, the LSTM's epoch by
its best validation loss, and the combination weight by validation MAPE on a grid.
Evaluation never feeds back into any of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

import lightgbm as lgb
import numpy as np
import torch
from torch import nn

from twinforge.ml.forecast import (
    HISTORY_SLOTS,
    HORIZON,
    MAPE_FLOOR_KW,
    SLOTS_PER_DAY,
    FeatureConfig,
    Features,
    PowerForecaster,
    features,
    lstm_inputs,
    mape,
    seasonal_naive,
)
from twinforge.ml.onnx_scoring import check_export
from twinforge.ml.torch_export import to_onnx

VALIDATION_FRACTION = 0.2
#: Forecasts are evaluated from every 6 h: midnight plans and re-plans through the day.
EVAL_STRIDE = SLOTS_PER_DAY // 4
_WEIGHTS = np.linspace(0.0, 1.0, 21)
_PER_STEP = 4  # slots per LSTM step: one hour


class PowerHistory(Protocol):
    """One machine's power per 15-minute slot (e.g. :class:`twinforge.sim.energy.PowerSeries`)."""

    machine_id: str
    start: datetime
    kw: np.ndarray
    holidays: tuple[date, ...]


class Scenario(Protocol):
    """Training and evaluation histories (e.g. :class:`twinforge.sim.energy.ForecastScenario`)."""

    train: Sequence[PowerHistory]
    evaluation: Sequence[PowerHistory]
    unseen: tuple[str, ...]


@dataclass(frozen=True)
class _Settings:
    origins_per_machine: int
    gbm_rows: int
    gbm_rounds: int
    gbm_leaves: int
    hidden: int
    epochs: int
    batch: int


_QUICK = _Settings(
    origins_per_machine=100,
    gbm_rows=40_000,
    gbm_rounds=120,
    gbm_leaves=31,
    hidden=16,
    epochs=4,
    batch=64,
)
_FULL = _Settings(
    origins_per_machine=320,
    gbm_rows=250_000,
    gbm_rounds=800,
    gbm_leaves=63,
    hidden=32,
    epochs=10,
    batch=128,
)


@dataclass(frozen=True)
class _Samples:
    """Forecast samples: features, normalized targets and actual kW, (origins, 96) each."""

    features: Features
    target: np.ndarray
    actual: np.ndarray

    @property
    def weight(self) -> np.ndarray:
        """Per slot 1 / actual (normalized): weighted absolute error is then MAPE."""
        floor = MAPE_FLOOR_KW / self.features.scale[:, None]
        return 1.0 / np.maximum(self.target, floor)


def _samples(series: Sequence[PowerHistory], origins: Sequence[np.ndarray]) -> _Samples:
    tables, scales, actuals = [], [], []
    k = np.arange(HORIZON)
    for one, at in zip(series, origins, strict=True):
        f = features(one.kw, one.start, at, holidays=one.holidays)
        tables.append(f.table)
        scales.append(f.scale)
        actuals.append(np.asarray(one.kw, dtype=np.float64)[at[:, None] + k[None, :]])
    table = Features(table=np.concatenate(tables), scale=np.concatenate(scales))
    actual = np.concatenate(actuals)
    return _Samples(features=table, target=actual / table.scale[:, None], actual=actual)


def _split_origins(n: int, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit origins (random, their 24 h before the split) and validation origins (every
    6 h after it) of a series of ``n`` slots."""
    last = n - HORIZON
    if last - HISTORY_SLOTS < 2 * SLOTS_PER_DAY:
        raise ValueError(
            f"series: each needs at least {HISTORY_SLOTS // SLOTS_PER_DAY + 3} days of history "
            f"to train on (a week of lags, fit and validation days), got {n / SLOTS_PER_DAY:.1f}"
        )
    split = HISTORY_SLOTS + int((last - HISTORY_SLOTS) * (1 - VALIDATION_FRACTION))
    fit = rng.choice(np.arange(HISTORY_SLOTS, split - HORIZON + 1), size=count, replace=True)
    return np.sort(fit), np.arange(split, last + 1, EVAL_STRIDE)


class PowerLstm(nn.Module):
    """A bidirectional LSTM over the 24 hours forecast, one step per hour (its four slots'
    inputs side by side, four outputs): every input is known in advance (lags, calendar),
    so both directions see the whole day, and 24 steps train four times faster than 96."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs * _PER_STEP, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, _PER_STEP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # -1, not x.shape[0]: the batch stays dynamic in the ONNX export.
        hours = x.reshape(-1, HORIZON // _PER_STEP, _PER_STEP * x.shape[-1])
        out, _ = self.lstm(torch.relu(self.embed(hours)))
        return self.head(out).reshape(-1, HORIZON)


def _train_gbm(fit: _Samples, val: _Samples, s: _Settings, seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = fit.features.table.reshape(-1, fit.features.table.shape[-1])
    rows = rng.choice(len(x), size=min(s.gbm_rows, len(x)), replace=False)
    train = lgb.Dataset(x[rows], fit.target.ravel()[rows], weight=fit.weight.ravel()[rows])
    valid = lgb.Dataset(
        val.features.table.reshape(-1, x.shape[1]),
        val.target.ravel(),
        weight=val.weight.ravel(),
        reference=train,
    )
    params = {
        "objective": "l1",  # with 1/actual weights: the MAPE the forecasts are judged by
        "learning_rate": 0.05,
        "num_leaves": s.gbm_leaves,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        # One thread: LightGBM's OpenMP spin-waits, and on a shared 2-core machine two
        # threads ran 30x slower than one (it is fast enough alone).
        "num_threads": 1,
        "seed": seed,
        "verbose": -1,
    }
    return lgb.train(
        params,
        train,
        num_boost_round=s.gbm_rounds,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(40, verbose=False)],
    )


def _train_lstm(fit: _Samples, val: _Samples, s: _Settings, seed: int) -> PowerLstm:
    torch.manual_seed(seed)
    x, y, w = (
        torch.from_numpy(lstm_inputs(fit.features.table)),
        torch.from_numpy(fit.target.astype(np.float32)),
        torch.from_numpy(fit.weight.astype(np.float32)),
    )
    vx = torch.from_numpy(lstm_inputs(val.features.table))
    vy = torch.from_numpy(val.target.astype(np.float32))
    vw = torch.from_numpy(val.weight.astype(np.float32))
    net = PowerLstm(x.shape[-1], s.hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    steps = s.epochs * -(-len(x) // s.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=steps)
    best, best_state = float("inf"), None
    generator = torch.Generator().manual_seed(seed)
    for _ in range(s.epochs):
        net.train()
        for batch in torch.randperm(len(x), generator=generator).split(s.batch):
            optimizer.zero_grad()
            err = (net(x[batch]) - y[batch]).abs() * w[batch]
            loss = err.sum() / w[batch].sum()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            score = float(((net(vx) - vy).abs() * vw).sum() / vw.sum())
        if score < best:  # the epoch is chosen on validation, not on evaluation
            best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    net.load_state_dict(best_state)
    return net.eval()


def _pooled_mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    return mape(actual.ravel(), forecast.ravel())


def train_forecaster(series: Sequence[PowerHistory], *, seed: int, quick: bool) -> PowerForecaster:
    """One forecaster for every machine of ``series``: LightGBM and the LSTM fit on the
    first four fifths of each history, combined with the weight best on the last fifth;
    the LSTM exported to ONNX and checked against torch at batch 1 and a large batch."""
    if not series:
        raise ValueError("series: need at least one machine's history to train on")
    s = _QUICK if quick else _FULL
    rng = np.random.default_rng(seed)
    splits = [_split_origins(len(one.kw), rng, s.origins_per_machine) for one in series]
    fit = _samples(series, [f for f, _ in splits])
    val = _samples(series, [v for _, v in splits])

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the 2-core machines this runs on; more threads only thrash
    try:
        booster = _train_gbm(fit, val, s, seed)
        net = _train_lstm(fit, val, s, seed)
        example = torch.from_numpy(lstm_inputs(val.features.table[:2]))
        onnx = to_onnx(net, example)

        def native(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.from_numpy(np.asarray(batch, dtype=np.float32))).numpy()

        check_export(onnx, native, lstm_inputs(val.features.table[:32]))
    finally:
        torch.set_num_threads(threads)

    forecaster = PowerForecaster(
        booster=booster.model_to_string(), lstm=onnx, weight=1.0, config=FeatureConfig()
    )
    gbm, lstm = forecaster.components(val.features)
    scores = [_pooled_mape(val.actual, w * gbm + (1 - w) * lstm) for w in _WEIGHTS]
    forecaster.weight = float(_WEIGHTS[int(np.argmin(scores))])
    return forecaster


def evaluate_forecast(*, quick: bool, scenario: Callable[[bool], Scenario]) -> dict:
    """Train on ``scenario(quick).train``, then forecast 24 h ahead from every 6 h of the
    evaluation histories (after their first week, which only serves as history).

    ``scenario`` is :func:`twinforge.sim.energy.forecast_scenario` in the benches and tests
    (twinforge.ml does not import the simulated plant). The baseline is the better, by
    MAPE, of the daily and the weekly seasonal naive; all figures MAPE in percent."""
    data = scenario(quick)
    began = time.perf_counter()
    forecaster = train_forecaster(data.train, seed=7, quick=quick)
    train_s = time.perf_counter() - began
    return {
        **score_forecaster(forecaster, data.evaluation),
        "train_s": round(train_s, 2),
        "unseen": list(data.unseen),
    }


def score_forecaster(forecaster: PowerForecaster, evaluation: Sequence[PowerHistory]) -> dict:
    """MAPE (percent) of 24-h forecasts from every 6 h of each history after its first
    week: the combination, each model alone, the daily and weekly seasonal naive, and the
    better naive as the baseline."""
    origins = [
        np.arange(HISTORY_SLOTS, len(one.kw) - HORIZON + 1, EVAL_STRIDE) for one in evaluation
    ]
    test = _samples(evaluation, origins)
    gbm, lstm = forecaster.components(test.features)
    combined = forecaster.combine(gbm, lstm)
    daily, weekly = [], []
    for one, at in zip(evaluation, origins, strict=True):
        for o in at:
            history = np.asarray(one.kw[:o], dtype=np.float64)
            daily.append(seasonal_naive(history, HORIZON, SLOTS_PER_DAY))
            weekly.append(seasonal_naive(history, HORIZON, 7 * SLOTS_PER_DAY))
    daily_mape = _pooled_mape(test.actual, np.array(daily))
    weekly_mape = _pooled_mape(test.actual, np.array(weekly))
    baseline = min(daily_mape, weekly_mape)
    combined_mape = _pooled_mape(test.actual, combined)
    return {
        "mape": round(combined_mape, 3),
        "baseline_mape": round(baseline, 3),
        "mape_ratio": round(combined_mape / baseline, 4),
        "baseline": "daily_naive" if daily_mape <= weekly_mape else "weekly_naive",
        "lgbm_mape": round(_pooled_mape(test.actual, gbm), 3),
        "lstm_mape": round(_pooled_mape(test.actual, lstm), 3),
        "daily_naive_mape": round(daily_mape, 3),
        "weekly_naive_mape": round(weekly_mape, 3),
        "weight_lgbm": forecaster.weight,
        "forecasts": len(test.actual),
    }
