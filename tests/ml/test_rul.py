"""RUL for pumps: run-to-failure trajectories from the real pump FMU, a small LSTM really
trained on them and scored through ONNX, the linear baseline it must beat on pumps of
another seed, the C-MAPSS reader, and the model card on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from twinforge.ml.rul import (
    CmapssFormatError,
    LinearDegradationBaseline,
    RulModel,
    phm08_score,
    read_cmapss,
    read_cmapss_test,
    rmse,
    sliding_windows,
)
from twinforge.ml.rul_training import train_rul, train_rul_network
from twinforge.sim.layout import PUMP
from twinforge.sim.machines import NORMAL_BANDS
from twinforge.sim.run_to_failure import PUMP_FIELDS, Trajectory, run_to_failure

TRAIN = {"wear_rate": (1 / 300, 1 / 150), "valve": (0.65, 0.9), "speed": (0.9, 1.0)}


@pytest.fixture(scope="module")
def train_pumps() -> list[Trajectory]:
    return run_to_failure(16, seed=11, **TRAIN)


@pytest.fixture(scope="module")
def held_out() -> list[Trajectory]:
    return run_to_failure(8, seed=12, **TRAIN)


@pytest.fixture(scope="module")
def trained(train_pumps: list[Trajectory]) -> tuple[torch.nn.Module, RulModel]:
    return train_rul_network(
        train_pumps,
        window=24,
        hidden=16,
        epochs=30,
        samples_per_epoch=1024,
        batch_size=64,
        learning_rate=1e-2,
        seed=3,
    )


# -- trajectories ---------------------------------------------------------------------


def test_trajectories_run_to_failure_with_rul_falling_to_zero(
    train_pumps: list[Trajectory],
) -> None:
    assert set(PUMP_FIELDS) - {"flowRate", "pressure"} <= set(NORMAL_BANDS[PUMP])
    for pump in train_pumps:
        assert pump.sensors.shape == (len(pump.times), len(PUMP_FIELDS))
        assert np.all(np.isfinite(pump.sensors))
        assert pump.wear[0] == 0.0 and pump.wear[-1] == 1.0, pump.index
        assert pump.rul[-1] == 0.0 and pump.rul[0] == pytest.approx(pump.life)
        assert np.all(np.diff(pump.rul) < 0) and np.all(np.diff(pump.wear) >= 0)
        vibration = pump.sensors[:, PUMP_FIELDS.index("bearingVibration")]
        temperature = pump.sensors[:, PUMP_FIELDS.index("bearingTemperature")]
        # Worn bearings shake and run hot: the FMU carries the wear into the readings.
        assert vibration[-5:].mean() > vibration[:5].mean() + 15.0, pump.index
        assert temperature[-5:].mean() > temperature[:5].mean() + 30.0, pump.index
    lives = [p.life for p in train_pumps]
    assert 40.0 < min(lives) < max(lives) < 1000.0, lives


def test_trajectories_follow_their_seed_and_ranges() -> None:
    a, b = run_to_failure(2, seed=5), run_to_failure(2, seed=5)
    assert np.array_equal(a[1].sensors, b[1].sensors)
    assert not np.array_equal(a[0].sensors[:50], run_to_failure(1, seed=6)[0].sensors[:50])
    slow = run_to_failure(3, seed=5, wear_rate=(1 / 900, 1 / 800), valve=(0.5, 0.55))
    assert all(p.life > 400.0 and 0.5 <= p.valve <= 0.55 for p in slow)
    with pytest.raises(ValueError, match="wear_rate: must be \\(low, high\\) with low <= high"):
        run_to_failure(1, seed=1, wear_rate=(0.01, 0.001))
    with pytest.raises(ValueError, match="valve: must lie within"):
        run_to_failure(1, seed=1, valve=(0.5, 1.2))


# -- the model ------------------------------------------------------------------------


def test_onnx_model_agrees_with_torch_at_batch_1_and_a_large_batch(
    trained: tuple[torch.nn.Module, RulModel], held_out: list[Trajectory]
) -> None:
    net, model = trained
    windows = np.concatenate([sliding_windows(p.sensors, model.window)[0] for p in held_out])
    assert len(windows) > 300
    for batch in (windows[-1:], windows[:300]):
        with torch.no_grad():
            native = net(torch.from_numpy(model.scale(batch))).numpy()
        ours = model.predict(batch).values
        assert ours.shape == (len(batch), 3)
        np.testing.assert_allclose(ours, np.maximum(native, 0.0), rtol=1e-3, atol=1e-2)


def test_lstm_beats_the_linear_baseline_on_pumps_of_another_seed(
    trained: tuple[torch.nn.Module, RulModel],
    train_pumps: list[Trajectory],
    held_out: list[Trajectory],
) -> None:
    _, model = trained
    baseline = LinearDegradationBaseline.fit(train_pumps)
    ours, theirs, true = [], [], []
    for pump in held_out:
        windows, ends = sliding_windows(pump.sensors, 64, stride=4)
        ours.append(model.predict(windows[:, -model.window :]).median)
        theirs.append(baseline.predict(windows))
        true.append(pump.rul[ends])
    y, a, b = np.concatenate(true), np.concatenate(ours), np.concatenate(theirs)
    lstm, linear = rmse(a, y), rmse(b, y)
    figures = f"LSTM RMSE {lstm:.1f} h, linear baseline {linear:.1f} h, ratio {lstm / linear:.2f}"
    assert lstm < 0.9 * linear, figures


def test_metrics_penalize_late_predictions_more() -> None:
    true = np.array([50.0, 50.0])
    assert rmse(np.array([40.0, 60.0]), true) == pytest.approx(10.0)
    late, early = phm08_score(np.array([60.0]), true[:1]), phm08_score(np.array([40.0]), true[:1])
    assert late == pytest.approx(np.e - 1) and early == pytest.approx(np.exp(10 / 13) - 1)
    assert phm08_score(np.array([60.0, 40.0]), true) == pytest.approx(late + early)


def test_band_is_ordered_and_failure_probability_rises_as_rul_falls(
    trained: tuple[torch.nn.Module, RulModel], held_out: list[Trajectory]
) -> None:
    _, model = trained
    pump = held_out[1]
    windows, ends = sliding_windows(pump.sensors, model.window, stride=2)
    p = model.predict(windows, horizon=24.0)
    assert np.all(p.low >= 0.0)
    assert np.all(p.low <= p.median) and np.all(p.median <= p.high)
    assert np.all(p.high - p.low > 0.0)
    risk = p.failure_probability
    assert risk is not None and np.all((risk >= 0.0) & (risk <= 1.0))
    rul = pump.rul[ends]
    early, late = risk[rul > 0.5 * pump.life].mean(), risk[rul < 12.0].mean()
    assert late > 0.8 > 0.1 > early, (early, late)
    # Within a longer horizon failure is never less likely.
    assert np.all(p.probability_within(72.0) >= risk - 1e-12)


def test_predict_rejects_windows_of_the_wrong_shape_or_not_finite(
    trained: tuple[torch.nn.Module, RulModel],
) -> None:
    _, model = trained
    with pytest.raises(ValueError, match=r"windows: must have shape \[n, 24, 8\]"):
        model.predict(np.zeros((2, 10, 8)))
    bad = np.zeros((3, 24, 8))
    bad[1, 5, 2] = np.nan
    with pytest.raises(ValueError, match=r"windows: must be finite; windows \[1\]"):
        model.predict(bad)


def test_model_card_round_trips_and_a_corrupt_onnx_fails_on_load(
    trained: tuple[torch.nn.Module, RulModel], held_out: list[Trajectory], tmp_path: Path
) -> None:
    _, model = trained
    windows, _ = sliding_windows(held_out[2].sensors, model.window, stride=10)
    loaded = RulModel.load(model.save(tmp_path / "rul"))
    assert loaded.feature_names == PUMP_FIELDS and loaded.window == model.window
    np.testing.assert_array_equal(loaded.predict(windows).values, model.predict(windows).values)
    (tmp_path / "rul" / "model.onnx").write_bytes(model.onnx[: len(model.onnx) // 2])
    with pytest.raises(ValueError, match=r"model\.onnx: not a loadable ONNX model"):
        RulModel.load(tmp_path / "rul")


def test_scoring_side_imports_no_torch() -> None:
    code = "import sys, twinforge.ml.rul; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- NASA C-MAPSS -----------------------------------------------------------------------


def _cmapss_line(unit: int, cycle: int, drift: float) -> str:
    """A line as the C-MAPSS files have it: 26 space-separated numbers, trailing blanks."""
    settings = [-0.0007, -0.0004, 100.0]
    sensors = [518.67, 641.82 + drift, 1589.7 + 5 * drift, 1400.6 + 8 * drift, 14.62, 21.61]
    sensors += [554.36 - drift, 2388.06, 9046.19, 1.3, 47.47 + drift, 521.66, 2388.02]
    sensors += [8138.62, 8.4195, 0.03, 392, 2388, 100.0, 39.06, 23.419]
    return " ".join(f"{v:g}" for v in [unit, cycle, *settings, *sensors]) + "  \n"


def _write_units(path: Path, lengths: list[int]) -> Path:
    lines = [
        _cmapss_line(unit, cycle, cycle / length)
        for unit, length in enumerate(lengths, start=1)
        for cycle in range(1, length + 1)
    ]
    path.write_text("".join(lines))
    return path


def test_cmapss_reader_parses_the_real_format(tmp_path: Path) -> None:
    units = read_cmapss(_write_units(tmp_path / "train_FD001.txt", [5, 8]))
    assert [u.unit for u in units] == [1, 2]
    assert units[0].sensors.shape == (5, 24) and len(units[0].fields) == 24
    assert units[1].rul.tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    assert units[0].sensors[2, 3] == 518.67  # sensor1, after the three settings

    (tmp_path / "RUL_FD001.txt").write_text("31\n112\n")
    test = read_cmapss_test(
        _write_units(tmp_path / "test_FD001.txt", [3, 4]), tmp_path / "RUL_FD001.txt"
    )
    assert test[0].rul.tolist() == [33, 32, 31] and test[1].rul[-1] == 112

    # The same training path as the pumps: cycles as the unit, the usual cap.
    model = train_rul(
        units, window=3, hidden=4, epochs=1, rul_cap=125, rul_unit="cycles", time_warp=None
    )
    assert model.rul_unit == "cycles"
    assert model.predict(sliding_windows(units[1].sensors, 3)[0]).values.shape == (8, 3)


def test_cmapss_reader_rejects_malformed_lines_naming_line_and_rule(tmp_path: Path) -> None:
    path = _write_units(tmp_path / "train_FD002.txt", [4])
    lines = path.read_text().splitlines(keepends=True)
    short = tmp_path / "short.txt"
    short.write_text("".join([*lines[:2], " ".join(lines[2].split()[:-1]) + "\n", *lines[3:]]))
    with pytest.raises(CmapssFormatError, match=r"short\.txt:3: line: must hold 26 whitespace"):
        read_cmapss(short)
    gap = tmp_path / "gap.txt"
    gap.write_text("".join([*lines[:2], *lines[3:]]))
    with pytest.raises(CmapssFormatError, match=r"gap\.txt:3: cycle: must follow cycle 2"):
        read_cmapss(gap)
    word = tmp_path / "word.txt"
    word.write_text(lines[0].replace("518.67", "n/a"))
    with pytest.raises(CmapssFormatError, match=r"word\.txt:1: settings, sensors"):
        read_cmapss(word)
    (tmp_path / "RUL.txt").write_text("31\n")
    with pytest.raises(CmapssFormatError, match=r"RUL: must give one value per unit .* \(2\)"):
        read_cmapss_test(_write_units(tmp_path / "t.txt", [2, 2]), tmp_path / "RUL.txt")
