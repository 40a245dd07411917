"""Power forecasts: the simulated power they learn from, the seasonal-naive baselines, a
real (tiny) training judged on a later period of another seed, the ONNX LSTM, saving,
and refused input."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from twinforge.ml.forecast import (
    HISTORY_SLOTS,
    HORIZON,
    ForecastInputError,
    PowerForecaster,
    features,
    lstm_inputs,
    mape,
    seasonal_naive,
)
from twinforge.ml.forecast_training import PowerLstm, score_forecaster, train_forecaster
from twinforge.ml.onnx_scoring import CHECK_BATCH, OnnxScorer, check_export
from twinforge.ml.torch_export import to_onnx
from twinforge.sim.energy import (
    SLOTS_PER_DAY,
    ForecastScenario,
    forecast_scenario,
    simulate_power,
)
from twinforge.sim.layout import CNC


@pytest.fixture(scope="module")
def scenario() -> ForecastScenario:
    return forecast_scenario(quick=True)


@pytest.fixture(scope="module")
def forecaster(scenario: ForecastScenario) -> PowerForecaster:
    return train_forecaster(scenario.train, seed=3, quick=True)


def test_simulated_power_has_shifts_weekends_and_holidays() -> None:
    holiday = date(2024, 1, 10)  # a Wednesday
    series = simulate_power(12, 28, start=date(2024, 1, 1), seed=5, holidays=[holiday])
    for one in series:
        days = one.kw.reshape(-1, SLOTS_PER_DAY).mean(axis=1)
        weekday = np.array([(one.start + timedelta(days=d)).weekday() for d in range(len(days))])
        working = (weekday < 5) & (np.arange(len(days)) != 9)
        assert days[working].mean() > 1.2 * days[weekday == 6].mean(), one.machine_id
        # A holiday stops the shifts: it draws what a Sunday draws, not what a Wednesday does.
        assert days[9] < 0.5 * (days[working].mean() + days[weekday == 6].mean()), one.machine_id
    cnc = [one for one in series if one.kind == CNC]
    assert cnc and all(one.kw.min() >= 0.5 and one.kw.max() <= 26.0 for one in cnc)


def test_simulation_is_seeded_and_fast() -> None:
    again = simulate_power(3, 14, start=date(2024, 3, 4), seed=9)
    assert all(
        np.array_equal(a.kw, b.kw)
        for a, b in zip(again, simulate_power(3, 14, start=date(2024, 3, 4), seed=9), strict=True)
    )
    began = time.perf_counter()
    year = simulate_power(20, 365, start=date(2024, 1, 1), seed=1)
    assert time.perf_counter() - began < 1.0
    assert all(len(one.kw) == 365 * SLOTS_PER_DAY for one in year)


@pytest.mark.parametrize("season", [SLOTS_PER_DAY, 7 * SLOTS_PER_DAY])
def test_seasonal_naive_is_exact_on_a_periodic_series(season: int) -> None:
    pattern = np.random.default_rng(0).uniform(1.0, 20.0, season)
    series = np.tile(pattern, 4)
    history, future = series[: 3 * season - 5], series[3 * season - 5 : 3 * season - 5 + HORIZON]
    np.testing.assert_array_equal(seasonal_naive(history, HORIZON, season), future)


def test_combined_forecast_beats_the_better_seasonal_naive_on_another_seed(
    forecaster: PowerForecaster, scenario: ForecastScenario
) -> None:
    figures = score_forecaster(forecaster, scenario.evaluation)
    baseline = min(figures["daily_naive_mape"], figures["weekly_naive_mape"])
    assert figures["baseline_mape"] == baseline
    assert figures["mape_ratio"] <= 0.75, figures
    assert 0.0 <= forecaster.weight <= 1.0


def test_onnx_lstm_agrees_with_torch_at_batch_1_and_a_large_batch(
    scenario: ForecastScenario,
) -> None:
    one = scenario.train[0]
    origins = np.arange(HISTORY_SLOTS, HISTORY_SLOTS + 40 * 4, 4)
    x = lstm_inputs(features(one.kw, one.start, origins, holidays=one.holidays).table)
    torch.manual_seed(0)
    net = PowerLstm(x.shape[-1], 8).eval()
    model = to_onnx(net, torch.from_numpy(x[:2]))
    scorer = OnnxScorer(model, "y")
    large = x[np.arange(CHECK_BATCH) % len(x)]
    for batch in (x[:1], large):
        with torch.no_grad():
            theirs = net(torch.from_numpy(batch)).numpy()
        ours = scorer.run(batch)
        assert ours.shape == (len(batch), HORIZON)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert check_export(model, lambda b: net(torch.from_numpy(b)).detach().numpy(), x) < 1e-4


def test_predict_returns_96_non_negative_kw(
    forecaster: PowerForecaster, scenario: ForecastScenario
) -> None:
    one = scenario.evaluation[-1]  # a machine not in training
    at = 10 * SLOTS_PER_DAY + 24
    out = forecaster.predict(one.kw[:at], one.start + timedelta(minutes=15 * at))
    assert out.shape == (HORIZON,) and np.isfinite(out).all() and (out >= 0).all()
    assert mape(one.kw[at : at + HORIZON], out) < 100.0


def test_save_and_load_give_identical_forecasts(
    forecaster: PowerForecaster, scenario: ForecastScenario, tmp_path: Path
) -> None:
    one = scenario.evaluation[0]
    start = one.start + timedelta(days=8)
    history = one.kw[: 8 * SLOTS_PER_DAY]
    loaded = PowerForecaster.load(forecaster.save(tmp_path / "forecaster"))
    assert loaded.weight == forecaster.weight and loaded.config == forecaster.config
    np.testing.assert_array_equal(
        loaded.predict(history, start, holidays=one.holidays),
        forecaster.predict(history, start, holidays=one.holidays),
    )


def test_bad_input_is_refused_naming_the_field_and_the_rule(
    forecaster: PowerForecaster,
) -> None:
    week = np.full(HISTORY_SLOTS, 5.0)
    start = datetime(2024, 10, 7)
    with pytest.raises(ForecastInputError, match=r"history_kw: needs at least one week"):
        forecaster.predict(week[:-1], start)
    with pytest.raises(ForecastInputError, match=r"history_kw: values must be finite, slot 3"):
        forecaster.predict(np.where(np.arange(HISTORY_SLOTS) == 3, np.nan, week), start)
    with pytest.raises(ForecastInputError, match=r"history_kw: power must be at least 0"):
        forecaster.predict(-week, start)
    with pytest.raises(ForecastInputError, match=r"start_slot_time: must start a 15-minute"):
        forecaster.predict(week, start + timedelta(minutes=7))
    with pytest.raises(ForecastInputError, match=r"horizon: must be an integer of at least 0"):
        seasonal_naive(week, -1, SLOTS_PER_DAY)
    with pytest.raises(ForecastInputError, match=r"history: needs at least one season"):
        seasonal_naive(week[:10], HORIZON, SLOTS_PER_DAY)
    with pytest.raises(ValueError, match=r"days: must be at least 0"):
        simulate_power(2, -1, start=date(2024, 1, 1), seed=0)
    with pytest.raises(ForecastInputError, match=r"actual: no slot is at least floor_kw"):
        mape(np.zeros(4), np.ones(4))


def test_scoring_side_imports_neither_torch_nor_the_simulated_plant() -> None:
    code = (
        "import sys, twinforge.ml.forecast; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('twinforge.sim')]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
