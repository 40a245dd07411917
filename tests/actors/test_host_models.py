"""Anomaly models in asset hosts (without Ray): every telemetry sample scored through
onnxruntime, alarms raised and cleared after their persistence, and a missing, corrupt
or failing model announced as a fallback to the threshold rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twinforge.actors.asset_host import AssetHost, HostConfig
from twinforge.actors.models import interface_dir_name, models_dir
from twinforge.ml.anomaly.scoring import save_bundle
from twinforge.ml.anomaly.training import WHOLE, TrainingConfig, TrainingSet, train_anomaly

PUMP = "dtmi:com:example:ml:Pump;1"
EXPECTED = (("anomaly", PUMP),)


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(5)
    n = 1500
    a = rng.normal(10.0, 0.5, n)
    features = np.column_stack([a, 2 * a + rng.normal(0, 0.2, n)])
    data = TrainingSet(features, ("flow", "power"), (), np.full(n, WHOLE), np.zeros(n), np.zeros(n))
    # Every sample scored (interval 0): the tests count samples to the alarm.
    config = TrainingConfig(detector="autoencoder", min_samples=100, interval_s=0.0)
    return train_anomaly(data, PUMP, config)


def promote(tmp_path: Path, report, version: str = "1") -> Path:
    target = models_dir(tmp_path) / "anomaly" / interface_dir_name(PUMP)
    save_bundle(report.card, report.models, target)
    (target / "VERSION").write_text(version)
    return target


def sample(ts: float, flow: float, power: float) -> tuple:
    return ("p1", "telemetry", {"flow": flow, "power": power}, ts, ts + 0.01)


def names(changes) -> list[tuple[str, bool]]:
    return [(c.name, c.raised) for c in changes]


def test_a_twin_without_its_model_says_it_is_on_rules_until_one_is_promoted(tmp_path, report):
    host = AssetHost(0, HostConfig(tmp_path, ml=EXPECTED), {"p1": PUMP})
    first = host.ingest([sample(1.0, 10.0, 20.0)])
    assert names(first.alarms) == [("anomaly.fallback", True)]
    assert "no promoted anomaly model" in first.alarms[0].value
    [status] = host.anomaly_of(["p1"])["p1"]
    assert status["mode"] == "rules" and status["score"] is None
    assert host.ingest([sample(2.0, 10.0, 20.0)]).alarms == ()  # announced once

    promote(tmp_path, report)
    assert host.reload_models() == [f"anomaly/{PUMP}"]
    scored = host.ingest([sample(3.0, 10.0, 20.0)])
    assert names(scored.alarms) == [("anomaly.fallback", False)]
    [status] = host.anomaly_of(["p1"])["p1"]
    assert status["mode"] == "model" and status["version"] == "1"
    assert status["score"] < status["threshold"]
    last = host.snapshot("p1")["last"]
    assert last["anomaly.score"]["value"] == pytest.approx(status["score"])
    assert "anomaly.threshold" not in last  # the cluster's, in the status
    host.close()


def test_an_anomaly_alarm_needs_its_persistence_to_raise_and_to_clear(tmp_path, report):
    promote(tmp_path, report)
    host = AssetHost(0, HostConfig(tmp_path, ml=EXPECTED), {"p1": PUMP})
    persistence = report.card.persistence
    # Power far from what the flow explains: the relation the model learnt is broken.
    broken = [sample(10.0 + i, 11.5, 5.0) for i in range(persistence - 1)]
    assert host.ingest(broken).alarms == ()
    raised = host.ingest([sample(20.0, 11.5, 5.0)])
    assert names(raised.alarms) == [("anomaly", True)]
    alarm = raised.alarms[0]
    assert alarm.field == "anomaly.score" and alarm.severity >= 2
    [status] = host.anomaly_of(["p1"])["p1"]
    assert status["level"] in ("warning", "critical") and status["topFields"]
    assert [a.name for a in host.active_alarms("p1")] == ["anomaly"]
    healthy = [sample(30.0 + i, 10.0, 20.0) for i in range(persistence)]
    assert names(host.ingest(healthy).alarms) == [("anomaly", False)]
    host.close()


def test_samples_of_one_call_are_scored_in_one_batch_per_model(tmp_path, report):
    promote(tmp_path, report)
    assets = {f"p{i}": PUMP for i in range(50)}
    host = AssetHost(0, HostConfig(tmp_path, ml=EXPECTED), assets)
    entries = [(t, "telemetry", {"flow": 10.0, "power": 20.0}, 5.0, 5.01) for t in assets]
    scorer = next(iter(host.models._models.values())).bundle._scorers  # one cluster
    [cluster] = scorer.values()
    runs = []
    original = cluster.run
    cluster.run = lambda batch: runs.append(len(batch)) or original(batch)
    host.ingest(entries)
    assert runs == [50]
    host.close()


def test_a_corrupt_promoted_model_falls_back_to_rules_and_names_why(tmp_path, report):
    target = promote(tmp_path, report)
    (target / report.card.clusters[0].model_file).write_bytes(b"\x00garbage")
    host = AssetHost(0, HostConfig(tmp_path, ml=EXPECTED), {"p1": PUMP})
    result = host.ingest([sample(1.0, 10.0, 20.0)])
    assert names(result.alarms) == [("anomaly.fallback", True)]
    assert "model not loaded" in result.alarms[0].value
    host.close()


def test_hostile_values_are_not_scored_and_do_not_stop_ingest(tmp_path, report):
    promote(tmp_path, report)
    host = AssetHost(0, HostConfig(tmp_path, ml=EXPECTED), {"p1": PUMP})
    odd = ("p1", "telemetry", {"flow": "high", "power": True}, 1.0, 1.01)
    assert host.ingest([odd]).applied == 1
    assert host.anomaly_of(["p1"])["p1"][0]["score"] is None
    assert host.ingest([sample(2.0, 10.0, 20.0)]).applied == 1
    assert host.anomaly_of(["p1"])["p1"][0]["score"] is not None
    host.close()


def test_scores_survive_a_restart_through_the_log(tmp_path, report):
    promote(tmp_path, report)
    config = HostConfig(tmp_path, ml=EXPECTED)
    host = AssetHost(0, config, {"p1": PUMP})
    host.ingest([sample(1.0 + i, 11.5, 5.0) for i in range(report.card.persistence)])
    host._wal.close()  # a crash: no checkpoint
    again = AssetHost(0, config)
    assert [a.name for a in again.active_alarms("p1")] == ["anomaly"]
    again.close()


def test_a_twin_is_scored_once_per_window(tmp_path, report):
    from dataclasses import replace

    card = replace(report.card, interval_s=10.0)
    target = models_dir(tmp_path) / "anomaly" / interface_dir_name(PUMP)
    save_bundle(card, report.models, target)
    host = AssetHost(0, HostConfig(tmp_path, ml=EXPECTED), {"p1": PUMP})
    times = []
    for ts in range(30):
        host.ingest([sample(float(ts), 10.0, 20.0)])
        times.append(host.anomaly_of(["p1"])["p1"][0]["time"])
    assert sorted(set(times)) == [0.0, 10.0, 20.0]
    host.close()
