"""Benchmark: the models inside the twins, judged on data they were not trained on.

* Anomaly detection (the molding practice): trained on one simulated period (seed 1:
  heater failures and overheating), each detector's threshold rule and alarm persistence
  chosen on a validation period of its own (seed 3, same faults), evaluated on a third
  (seed 2) that adds a fault absent from training (check-ring wear) and recipes no lot
  of training ran. Per detector: precision, recall, F1, AUROC, median detection delay and
  false alarms per asset-day of the debounced alarm, against IsolationForest (the
  baseline, trained the same way) and an IsolationForest without setting clusters.
* Remaining useful life (pump FMU run-to-failure, wear rates and loads outside the
  training range): RMSE and PHM08 score against a linear degradation baseline.
* Power forecasts (15 min, 24 h ahead): MAPE against the better seasonal naive.
* Scoring in the hosts: CPU the asset hosts on Ray spend with every model on every asset
  of the ingest bench's plant (the sample factory's model configuration, trained from
  the hosts' own history of a warm-up) against the same hosts without models (both at
  once, physics on in both), messages lost, and the RSS the hosts gain per asset.
* ``train_s``: training every model the demo plant uses.

    uv run python bench/ml_eval.py [--quick]

The last line is JSON: best_f1_gain_vs_if, false_alarms_per_asset_day, rul_rmse_ratio,
mape_ratio, scoring_cpu_overhead, mb_per_asset, train_s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import numpy as np
from physics import host_cpu_s, plans, send
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from twinforge.actors.asset_host import HostConfig
from twinforge.actors.training import TrainingWindow, promote_version, train_model
from twinforge.ml.anomaly.detectors import DETECTORS, ISOLATION_FOREST
from twinforge.ml.anomaly.scoring import AnomalyBundle, AnomalyScores, debounced
from twinforge.ml.anomaly.threshold import ThresholdRule
from twinforge.ml.anomaly.training import WHOLE, TrainingConfig, TrainingSet, train_anomaly
from twinforge.ml.config import load_model_config
from twinforge.ml.registry import ModelRegistry
from twinforge.sim.factory import ML
from twinforge.sim.layout import load_factory_models, sample_plant
from twinforge.sim.machines import HEATER_FAILURE, OVERHEATING, PlantPhysics
from twinforge.sim.molding_lots import MOLDING_FAULTS, MoldingRecords, simulate_lots
from twinforge.twin_models import parse_models

RULES = [
    ThresholdRule(quantile=q, cv_weight=w) for q, w in itertools.product((0.999, 1.0), (0, 0.25, 1))
]
PERSISTENCE = (1, 3, 5)


# -- anomaly detection ----------------------------------------------------------------


def alarms(records: MoldingRecords, over: np.ndarray, persistence: int) -> np.ndarray:
    """The debounced alarm state per shot, machine by machine (shots are in order)."""
    machines = records.column("machine")
    state = np.zeros(len(over), dtype=bool)
    for machine in set(machines):
        rows = np.flatnonzero(machines == machine)
        state[rows] = debounced(over[rows], persistence)
    return state


def judge(records: MoldingRecords, state: np.ndarray, ratio: np.ndarray) -> dict[str, float]:
    truth = records.fault != ""
    machines = records.column("machine")
    raised = state & ~np.roll(state, 1)
    raised[0] = state[0]
    days = (records.times.max() - records.times.min()) / 86_400 * len(set(machines))
    false_alarms = int(np.sum(raised & ~truth))
    delays, missed = [], 0
    for lot in set(records.lot[truth]):
        rows = np.flatnonzero((records.lot == lot) & truth)
        hit = rows[state[rows]]
        if hit.size:
            delays.append((records.times[hit[0]] - records.times[rows[0]]) / 60)
        else:
            missed += 1
    return {
        "precision": precision_score(truth, state, zero_division=0),
        "recall": recall_score(truth, state),
        "f1": f1_score(truth, state),
        "auroc": roc_auc_score(truth, ratio),
        "delay_min": float(np.median(delays)) if delays else float("nan"),
        "missed_episodes": missed,
        "false_alarms_per_asset_day": false_alarms / days,
    }


def calibrate(
    bundle: AnomalyBundle, train: TrainingSet, clean: np.ndarray, validation: MoldingRecords
) -> tuple[dict[str, float], int, str, float]:
    """The rule and persistence with the best validation F1 among those with at most
    0.1 false alarms per asset-day (the fewest false alarms if none has): chosen on
    the validation period, never on the evaluation one."""
    data = TrainingSet(**validation.training_columns())
    val = bundle.score(data.features, list(data.groups))
    trained = bundle.score(train.features[clean], list(train.groups[clean]))
    best = None
    for rule, persistence in itertools.product(RULES, PERSISTENCE):
        thresholds = {}
        for cluster in bundle.card.clusters:
            rows = np.array([c == cluster.key for c in trained.cluster])
            thresholds[cluster.key] = rule.threshold(trained.score[rows])
        figures = judge_rule(validation, bundle, val, thresholds, persistence)
        key = (
            figures["false_alarms_per_asset_day"] <= 0.1,
            figures["f1"],
            -figures["false_alarms_per_asset_day"],
        )
        if best is None or key > best[0]:
            best = (
                key,
                thresholds,
                persistence,
                f"q={rule.quantile} cv_weight={rule.cv_weight} k={persistence}",
                figures["f1"],
            )
    assert best is not None
    return best[1:]


def judge_rule(
    records: MoldingRecords,
    bundle: AnomalyBundle,
    scores: AnomalyScores,
    thresholds: dict[str, float],
    persistence: int,
) -> dict[str, float]:
    """:func:`judge` with each cluster's threshold replaced by ``thresholds`` (a
    fallback's raised by the same factor as the bundle's own)."""
    plain = {c.key: c.threshold for c in bundle.card.clusters}
    limit = np.array([thresholds[c] / plain[c] for c in scores.cluster]) * scores.threshold
    over = alarms(records, scores.score >= limit, persistence)
    return judge(records, over, scores.score / limit)


def anomaly(quick: bool) -> dict[str, float]:
    days = 5 if quick else 14
    train = simulate_lots(seed=1, days=days, faults=(HEATER_FAILURE, OVERHEATING))
    validation = simulate_lots(seed=3, days=3 if quick else 7, faults=(HEATER_FAILURE, OVERHEATING))
    evaluation = simulate_lots(
        seed=2, days=3 if quick else 7, faults=MOLDING_FAULTS, new_recipes=True
    )
    data = TrainingSet(**train.training_columns())
    clean = np.array([data.lot_defect_rate[lot] < 0.01 for lot in data.lots])
    test = TrainingSet(**evaluation.training_columns())
    print(
        f"molding: training {len(data.features)} shots ({clean.sum()} of clean lots), validation "
        f"{len(validation.times)}, evaluation {len(test.features)} shots "
        f"({np.mean(evaluation.fault != ''):.1%} faulty; faults {', '.join(MOLDING_FAULTS)}; "
        f"check ring wear and new recipes absent from training)"
    )
    results: dict[str, dict[str, float]] = {}
    seconds = 0.0
    variants = [(d, d, data) for d in DETECTORS]
    unclustered = TrainingSet(
        **{**train.training_columns(), "settings": (), "groups": np.full(len(data.features), WHOLE)}
    )
    variants.append(("isolation_forest (no clusters)", ISOLATION_FOREST, unclustered))
    for label, detector, training in variants:
        report = train_anomaly(training, "molding", TrainingConfig(detector=detector, quick=quick))
        seconds += report.seconds if label == "memae" else 0.0
        bundle = AnomalyBundle(report.card, report.models)
        groups = list(test.groups) if training.settings else None
        thresholds, persistence, chosen, validation_f1 = calibrate(
            bundle, training, clean, validation
        )
        scores = bundle.score(test.features, groups)
        figures = judge_rule(evaluation, bundle, scores, thresholds, persistence)
        figures["train_s"] = report.seconds
        figures["validation_f1"] = validation_f1
        figures["fallback_share"] = float(np.mean(scores.fallback))
        results[label] = figures
        print(
            f"  {label:32s} P {figures['precision']:.3f} R {figures['recall']:.3f} "
            f"F1 {figures['f1']:.3f} AUROC {figures['auroc']:.3f} delay {figures['delay_min']:.1f} min "
            f"(missed {figures['missed_episodes']}) false alarms/asset-day "
            f"{figures['false_alarms_per_asset_day']:.2f}; {len(report.card.clusters)} clusters, "
            f"{figures['fallback_share']:.0%} of shots on a fallback cluster; rule {chosen}; "
            f"trained in {report.seconds:.1f} s"
        )
    baseline = results[ISOLATION_FOREST]
    best = max(DETECTORS, key=lambda d: results[d]["f1"])
    gain = results[best]["f1"] - baseline["f1"]
    print(
        f"  best detector {best}: F1 {results[best]['f1']:.3f}, {gain:+.3f} against IsolationForest"
    )
    return {
        "best_f1_gain_vs_if": round(gain, 3),
        "false_alarms_per_asset_day": round(results[best]["false_alarms_per_asset_day"], 3),
        "anomaly_train_s": seconds,
    }


# -- scoring in the hosts -------------------------------------------------------------


def train_plant_models(fleet, twins: dict[str, str], lineage, data_dir: Path, quick: bool) -> float:
    """The sample factory's models (its model configuration), trained from the history
    the fleet's hosts wrote during the warm-up, promoted and loaded by the hosts: the
    server's own path. Returns the training seconds."""
    registry = ModelRegistry(None, data_dir)
    started = time.perf_counter()
    for binding in load_model_config(ML):
        chosen = tuple(t for t, m in twins.items() if binding.interface in lineage[m])
        version = train_model(
            binding,
            TrainingWindow(chosen),
            history_url=None,
            data_dir=data_dir,
            mlflow_uri=None,
            quick=quick,
        )
        promote_version(registry, binding, version.version, data_dir)
        print(
            f"  trained {binding.name} of {binding.interface.split(':')[-1]} ({binding.detector}) "
            f"on {int(version.metrics['train_samples'])} samples of {len(chosen)} twins"
        )
    seconds = time.perf_counter() - started
    fleet.reload_models()
    return seconds


def lineage_of(layout) -> dict[str, tuple[str, ...]]:
    models = parse_models(load_factory_models())

    def chain(interface):
        yield interface.id
        for parent in interface.extends:
            yield from chain(parent)

    return {m: tuple(chain(models.interface(m))) for m in {t.model for t in layout.equipment()}}


def scoring_on_ray(root: Path, quick: bool) -> dict[str, float]:
    import ray

    from twinforge.actors.fleet import AssetFleet

    layout = sample_plant(1000, seed=5)
    twins = {t.id: t.model for t in layout.equipment()}
    lineage = lineage_of(layout)
    expected = tuple((b.name, b.interface) for b in load_model_config(ML))
    warm_up, seconds = (120, 20) if quick else (300, 60)
    physics = PlantPhysics(layout, seed=9)
    ticks = [physics.step(1.0) for _ in range(warm_up + seconds + 1)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fleets = {}
        for label in ("without", "with"):
            ml = expected if label == "with" else ()
            fleets[label] = AssetFleet(HostConfig(root / f"ray-{label}", lineage=lineage, ml=ml))
            fleets[label].add(twins)
            fleets[label].set_physics(tuple(plans().values()))  # residuals are features
        for k in range(warm_up + 1):  # history to train on, as fast as the hosts take it
            for fleet in fleets.values():
                send(fleet, ticks[k], k)
        for fleet in fleets.values():
            fleet.checkpoint()
        train_s = train_plant_models(fleets["with"], twins, lineage, root / "ray-with", quick)
        before = {label: host_cpu_s(fleet) for label, fleet in fleets.items()}
        start = time.monotonic()
        for k in range(warm_up + 1, warm_up + seconds + 1):  # 1 Hz per asset, real time
            for label in ("without", "with") if k % 2 else ("with", "without"):
                send(fleets[label], ticks[k], k)
            time.sleep(max(0.0, start + (k - warm_up) - time.monotonic()))
        cpu = {label: host_cpu_s(fleet) - before[label] for label, fleet in fleets.items()}
        stats = {label: fleet.stats() for label, fleet in fleets.items()}
        sample = fleets["with"].anomaly_of(list(twins)[:200])
        for fleet in fleets.values():
            fleet.close()
    finally:
        ray.shutdown()
    sent = len(twins) * (warm_up + seconds + 1)
    lost = {label: sent - sum(s["messages"] for s in st) for label, st in stats.items()}
    scored = sum(1 for answers in sample.values() for a in answers if a["score"] is not None)
    overhead = cpu["with"] / cpu["without"] - 1
    rss = {label: sum(s["rss_mb"] for s in st) for label, st in stats.items()}
    mb_per_asset = (rss["with"] - rss["without"]) / len(twins)
    print(
        f"hosts on Ray, {len(twins)} assets at 1 Hz for {seconds} s, physics on in both, "
        f"{len(expected)} models ({scored} scored models among the first 200 twins'): "
        f"{cpu['without']:.1f} CPU s without models, {cpu['with']:.1f} with (+{overhead:.1%}); "
        f"lost {lost}; RSS {rss['without']:.0f} MB without, {rss['with']:.0f} MB with "
        f"({mb_per_asset:.3f} MB per asset)"
    )
    return {
        "scoring_cpu_overhead": round(overhead, 3),
        "mb_per_asset": round(mb_per_asset, 4),
        "lost": lost["with"],
        "plant_train_s": train_s,
    }


# -- main -----------------------------------------------------------------------------


def helper_figures(module: str, function: str, quick: bool, data: tuple[str, str]) -> dict:
    """RUL and forecasts in a process of their own: torch's threads and memory stay out
    of the host measurements. ``data`` is the argument that makes their simulated data
    and the ``module:function`` it names (twinforge.ml does not import the plant)."""
    argument, source = data
    where, maker = source.split(":")
    code = (
        f"import json; from {module} import {function}; from {where} import {maker}; "
        f"print(json.dumps({function}(quick={quick}, {argument}={maker})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twinforge-bench-ml-"))
    figures: dict[str, float] = {}
    figures |= anomaly(args.quick)
    rul = helper_figures(
        "twinforge.ml.rul_training",
        "evaluate_rul",
        args.quick,
        ("source", "twinforge.sim.run_to_failure:run_to_failure"),
    )
    print(f"RUL: {rul}")
    forecast = helper_figures(
        "twinforge.ml.forecast_training",
        "evaluate_forecast",
        args.quick,
        ("scenario", "twinforge.sim.energy:forecast_scenario"),
    )
    print(f"power forecast: {forecast}")
    figures |= scoring_on_ray(root, args.quick)
    train_s = (
        figures["anomaly_train_s"] + figures["plant_train_s"] + rul["train_s"] + forecast["train_s"]
    )
    print(
        f"training for the demo plant: {train_s:.0f} s (molding MemAE {figures['anomaly_train_s']:.0f} s, "
        f"plant models {figures['plant_train_s']:.0f} s, RUL {rul['train_s']:.0f} s, forecast "
        f"{forecast['train_s']:.0f} s)"
    )
    print(
        json.dumps(
            {
                "best_f1_gain_vs_if": figures["best_f1_gain_vs_if"],
                "false_alarms_per_asset_day": figures["false_alarms_per_asset_day"],
                "rul_rmse_ratio": round(rul["rmse_ratio"], 3),
                "mape_ratio": round(forecast["mape_ratio"], 3),
                "scoring_cpu_overhead": figures["scoring_cpu_overhead"],
                "mb_per_asset": figures["mb_per_asset"],
                "train_s": round(train_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
