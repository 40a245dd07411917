"""Training the RUL model: an LSTM over sensor windows with one head per quantile
(pinball loss, ordered by construction), exported to ONNX and checked against itself
before it is returned; and :func:`evaluate_rul`, the honest figures of the pump model.

Imports torch: runs off the serving path (a Ray task, the CLI, the bench).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from twinforge.ml.onnx_scoring import check_export
from twinforge.ml.rul import (
    LinearDegradationBaseline,
    RulModel,
    SeriesLike,
    phm08_score,
    rmse,
    sliding_windows,
)
from twinforge.ml.torch_export import to_onnx

__all__ = ["TrajectorySource", "evaluate_rul", "train_rul", "train_rul_network"]

#: Makes run-to-failure series: ``(count, *, seed, wear_rate, valve, speed)``, as
#: :func:`twinforge.sim.run_to_failure.run_to_failure` does. Passed in: ml never imports
#: the simulated plant.
TrajectorySource = Callable[..., Sequence[SeriesLike]]


#: Scaled features change by about 1 over a life of hundreds of samples: slopes of 1e-3
#: to 1e-2 per row, which this brings into asinh's logarithmic part.
_SLOPE_GAIN = 1e4


class _QuantileLstm(nn.Module):
    """LSTM over the window, its last state to one output per quantile: the lowest
    quantile, then non-negative (softplus) steps up, so the quantiles never cross.

    The quantiles are of log(RUL + offset): RUL goes as one over the wear rate, so in
    logs a rate faster or slower than any trained on is a shift, which a network
    extrapolates, not a hyperbola, which it does not (quantiles survive the monotone
    transform). The output is turned back into the RUL unit inside, so the ONNX model
    speaks it too."""

    def __init__(
        self,
        features: int,
        window: int,
        hidden: int,
        quantiles: int,
        rul_scale: float,
        offset: float,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2 * features, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + features, hidden), nn.ReLU(), nn.Linear(hidden, quantiles)
        )
        # Least-squares slope weights over the window's rows, shaped [1, window, 1].
        t = torch.arange(window, dtype=torch.float32)
        t = t - t.mean()
        weights = t / max(float((t * t).sum()), 1.0)
        self.register_buffer("slope_weights", weights.reshape(1, window, 1))
        self.register_buffer("rul_scale", torch.tensor(float(rul_scale)))
        self.register_buffer("offset", torch.tensor(float(offset)))

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        # Each reading beside its change since the window began: the wear rate, which
        # sets the RUL as much as the wear does, is then in plain sight.
        change = x - x[:, :4].mean(dim=1, keepdim=True)
        out, _ = self.lstm(torch.cat([x, change], dim=2))
        # Each feature's trend over the window, in a log-like scale (asinh: odd, finite
        # at 0): log RUL falls with log rate, so a head linear in it extrapolates to
        # rates never trained on as a power law would.
        # A weighted sum, not a matmul by the weights: the TorchScript exporter
        # mis-exports that one (transpose, then 1-D matmul), check_export caught it.
        slope = (x * self.slope_weights).sum(dim=1) * _SLOPE_GAIN
        raw = self.head(torch.cat([out[:, -1], _asinh(slope)], dim=1))
        steps = nn.functional.softplus(raw[:, 1:])
        return torch.cat([raw[:, :1], raw[:, :1] + torch.cumsum(steps, dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.normalized(x)) * self.rul_scale - self.offset

    def target(self, rul: np.ndarray) -> torch.Tensor:
        """What :meth:`normalized` is trained to: log((RUL + offset) / scale)."""
        scale, offset = float(self.rul_scale), float(self.offset)
        return torch.from_numpy(np.log((rul + offset) / scale).astype(np.float32))


class _Ensemble(nn.Module):
    """Members' quantiles averaged (in RUL): ordered, since each member's are."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def _fit(
    net: _QuantileLstm,
    x: torch.Tensor,
    target: torch.Tensor,
    q: torch.Tensor,
    epochs: int,
    per_epoch: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
) -> None:
    """Adam on the pinball loss, one-cycle learning rate, ``per_epoch`` windows drawn
    afresh each epoch."""
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    steps = max(1, epochs * ((per_epoch + batch_size - 1) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps)
    net.train()
    done = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))[:per_epoch]
        for start in range(0, per_epoch, batch_size):
            if done >= steps:
                break
            idx = torch.from_numpy(order[start : start + batch_size])
            loss = _pinball(net.normalized(x[idx]), target[idx], q)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            done += 1


def _asinh(x: torch.Tensor) -> torch.Tensor:
    """asinh in operators ONNX has (the exporter lacks aten::asinh); odd, so exact for
    negative x too."""
    a = torch.abs(x)
    return torch.sign(x) * torch.log(a + torch.sqrt(a * a + 1.0))


def _pinball(predicted: torch.Tensor, target: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    d = target[:, None] - predicted
    return torch.mean(torch.maximum(q * d, (q - 1.0) * d))


def _warped(
    sensors: np.ndarray, rul: np.ndarray, factor: float, noise: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The run as it would read at the same sample interval had it lived ``factor`` times
    as long: resampled at every 1/factor-th sample (linear interpolation), RUL stretched
    alike, and the white noise that interpolation averages away (``noise``: per feature)
    put back."""
    positions = np.arange(0.0, len(sensors) - 1 + 1e-9, 1.0 / factor)
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, len(sensors) - 1)
    f = (positions - lower)[:, None]
    out = sensors[lower] * (1 - f) + sensors[upper] * f
    out += rng.normal(size=out.shape) * noise * np.sqrt(2 * f * (1 - f))
    stretched = (rul[lower] * (1 - f[:, 0]) + rul[upper] * f[:, 0]) * factor
    return out, stretched


def train_rul(series: Sequence[SeriesLike], **options: Any) -> RulModel:
    """The model card of :func:`train_rul_network` (the same options)."""
    return train_rul_network(series, **options)[1]


def train_rul_network(
    series: Sequence[SeriesLike],
    *,
    window: int = 32,
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
    hidden: int = 32,
    epochs: int = 30,
    batch_size: int = 256,
    samples_per_epoch: int | None = 8192,
    learning_rate: float = 1e-2,
    rul_cap: float | None = None,
    rul_unit: str = "h",
    time_warp: tuple[float, float] | None = (0.6, 1.7),
    warped_copies: int = 2,
    ensemble: int = 1,
    seed: int = 0,
    threads: int = 1,
) -> tuple[nn.Module, RulModel]:
    """An LSTM trained on every window of ``series`` (runs to failure; their true RUL
    the target, capped at ``rul_cap`` if given, the usual piecewise-linear target for
    C-MAPSS), exported to ONNX and checked at batch 1 and a large batch; the network
    (taking scaled windows, :meth:`RulModel.scale`) and its card. ``samples_per_epoch``: windows drawn per epoch (None: all).

    ``time_warp``: each run is also trained on as ``warped_copies`` runs that wore
    faster or slower, by factors drawn log-uniformly from this range (None: off). A
    fleet's wear rates never cover the next pump's; this teaches the model how RUL
    scales with the rate it sees beyond the rates it was given. ``ensemble``: members
    trained from seeds ``seed``, ``seed + 1``, ..., their quantiles averaged (one ONNX
    model): steadier than any one member."""
    if not series:
        raise ValueError("series: need at least one training series")
    if ensemble < 1:
        raise ValueError(f"ensemble: must be at least 1, got {ensemble}")
    fields = tuple(series[0].fields)
    if any(tuple(s.fields) != fields for s in series):
        raise ValueError("series: every series must have the same fields, in the same order")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()

    # Per-feature white-noise level, from first differences (robust: median absolute).
    diffs = np.concatenate(
        [np.diff(s.sensors, axis=0) for s in series] + [np.zeros((1, len(fields)))]
    )
    noise = np.median(np.abs(diffs - np.median(diffs, axis=0)), axis=0) * 1.4826 / np.sqrt(2)
    runs = [
        (np.asarray(s.sensors, dtype=np.float64), np.asarray(s.rul, dtype=np.float64))
        for s in series
    ]
    if time_warp is not None:
        lo, hi = np.log(time_warp[0]), np.log(time_warp[1])
        runs += [
            _warped(sensors, rul, float(np.exp(rng.uniform(lo, hi))), noise, rng)
            for sensors, rul in list(runs)
            for _ in range(warped_copies)
        ]
    xs, ys = [], []
    for sensors, rul in runs:
        w, ends = sliding_windows(sensors, window)
        xs.append(w.astype(np.float32))
        ys.append(rul[ends])
    x_raw, y = np.concatenate(xs), np.concatenate(ys).astype(np.float64)
    if rul_cap is not None:
        y = np.minimum(y, rul_cap)
    all_rows = np.concatenate([s.sensors for s in series])
    low, high = all_rows.min(axis=0), all_rows.max(axis=0)
    interval = float(
        np.median(np.concatenate([np.diff(s.times) for s in series if len(s.times) > 1]))
    )
    # The offset (one sample interval) keeps log finite at failure.
    offset = max(interval, 1e-9)
    rul_scale = float(y.max()) + offset
    model = RulModel(
        onnx=b"",
        feature_names=fields,
        window=window,
        feature_min=tuple(float(v) for v in low),
        feature_max=tuple(float(v) for v in high),
        quantiles=tuple(float(q) for q in quantiles),
        rul_unit=rul_unit,
        sample_interval=interval,
    )
    x = torch.from_numpy(model.scale(x_raw))
    q = torch.tensor(quantiles, dtype=torch.float32)
    members: list[nn.Module] = []
    for member in range(ensemble):
        torch.manual_seed(seed + member)
        net = _QuantileLstm(len(fields), window, hidden, len(quantiles), rul_scale, offset)
        target = net.target(y)
        per_epoch = len(x) if samples_per_epoch is None else min(samples_per_epoch, len(x))
        _fit(net, x, target, q, epochs, per_epoch, batch_size, learning_rate, rng)
        members.append(net)
    network = members[0] if ensemble == 1 else _Ensemble(members)
    network.eval()
    train_s = time.perf_counter() - started

    onnx = to_onnx(network, x[:1])
    check = x[rng.choice(len(x), size=min(64, len(x)), replace=False)].numpy()

    def native(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(batch)).numpy()

    # Absolute tolerance in the RUL unit: the output is scaled up by the longest RUL.
    worst = check_export(onnx, native, check, atol=1e-4 * rul_scale)
    model.onnx = onnx
    model.info = {
        "seed": seed,
        "series": len(series),
        "windows": len(x),
        "epochs": epochs,
        "hidden": hidden,
        "ensemble": ensemble,
        "rul_cap": rul_cap,
        "train_s": round(train_s, 2),
        "export_max_abs_diff": worst,
    }
    return network, model


# -- the honest evaluation -----------------------------------------------------------------

#: Training conditions, and evaluation conditions reaching beyond them on both sides.
TRAIN_CONDITIONS: dict[str, tuple[float, float]] = {
    "wear_rate": (1 / 400, 1 / 150),
    "valve": (0.65, 0.9),
    "speed": (0.88, 1.0),
}
EVAL_CONDITIONS: dict[str, tuple[float, float]] = {
    "wear_rate": (1 / 550, 1 / 110),
    "valve": (0.55, 1.0),
    "speed": (0.82, 1.05),
}
TRAIN_SEED, EVAL_SEED = 1_017, 2_017


def _outside_training(s: SeriesLike) -> bool:
    """Whether a pump's wear rate or mean load lies outside the training ranges (pumps
    that do not say count as inside)."""
    for name, (lo, hi) in TRAIN_CONDITIONS.items():
        value = getattr(s, name, None)
        if value is not None and not lo <= value <= hi:
            return True
    return False


def evaluate_rul(*, quick: bool, source: TrajectorySource) -> dict[str, Any]:
    """Train on pumps of one seed and condition ranges, evaluate on pumps of another seed
    whose wear rates and loads reach outside them; the LSTM's median against the linear
    degradation baseline fitted on the same training pumps. ``source`` makes the pumps
    (pass :func:`twinforge.sim.run_to_failure.run_to_failure`; ml does not import sim).
    Model settings (learning rate, epochs, time warp, ensemble) were chosen on pumps of
    a third seed, never on these.

    Figures: ``rmse`` and ``baseline_rmse`` (hours, every 4th sample of every pump),
    ``rmse_ratio`` (goal <= 0.7), ``phm08`` and ``baseline_phm08`` (PHM08 score per
    prediction, hours as its time unit), ``band_coverage`` (share of true RULs inside
    the low..high band, nominally 0.8), ``train_s``; and the RMSEs over the pumps
    outside the training conditions alone."""
    n_train, n_eval = (24, 12) if quick else (120, 40)
    train = source(n_train, seed=TRAIN_SEED, **TRAIN_CONDITIONS)
    held_out = source(n_eval, seed=EVAL_SEED, **EVAL_CONDITIONS)
    settings: dict[str, Any] = (
        {"epochs": 30, "samples_per_epoch": 1024, "batch_size": 64, "hidden": 16}
        if quick
        else {"epochs": 80, "samples_per_epoch": 8192, "hidden": 32, "ensemble": 3}
    )
    started = time.perf_counter()
    model = train_rul(train, seed=TRAIN_SEED, **settings)
    train_s = time.perf_counter() - started
    baseline = LinearDegradationBaseline.fit(train)

    rows: list[tuple[np.ndarray, ...]] = []
    longest = max(model.window, baseline.window)
    for s in held_out:
        windows, ends = sliding_windows(s.sensors, longest, stride=4)
        p = model.predict(windows[:, -model.window :])
        outside = np.full(len(ends), _outside_training(s))
        rows.append((s.rul[ends], p.median, p.low, p.high, baseline.predict(windows), outside))
    y, med, lo, hi, b, out = (np.concatenate(v) for v in zip(*rows, strict=True))
    ours, theirs = rmse(med, y), rmse(b, y)
    return {
        "rmse": round(ours, 3),
        "baseline_rmse": round(theirs, 3),
        "rmse_ratio": round(ours / theirs, 3) if theirs > 0 else None,
        "phm08": round(phm08_score(med, y) / len(y), 3),
        "baseline_phm08": round(phm08_score(b, y) / len(y), 3),
        "band_coverage": round(float(np.mean((y >= lo) & (y <= hi))), 3),
        "train_s": round(train_s, 2),
        "rmse_outside_training": round(rmse(med[out], y[out]), 3) if out.any() else None,
        "baseline_rmse_outside_training": round(rmse(b[out], y[out]), 3) if out.any() else None,
        "eval_pumps_outside_training": int(sum(_outside_training(s) for s in held_out)),
        "eval_pumps": n_eval,
        "train_pumps": n_train,
        "predictions": len(y),
        "baseline_window": baseline.window,
    }
