"""Anomaly detection per setting cluster, trained on simulated molding lots: real FMUs,
real training (small), scored through onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from twinforge.ml.anomaly.scoring import AnomalyBundle, ModelFileError
from twinforge.ml.anomaly.threshold import ThresholdRule
from twinforge.ml.anomaly.training import TrainingConfig, TrainingSet, train_anomaly
from twinforge.sim.molding_lots import MOLDING_FAULTS, simulate_lots


@pytest.fixture(scope="module")
def trained():
    train = simulate_lots(seed=11, days=4, facilities=("F1",))
    data = TrainingSet(**train.training_columns())
    config = TrainingConfig(detector="memae", quick=True, min_samples=400)
    report = train_anomaly(data, "dtmi:test:Molding;1", config)
    return train, data, report, AnomalyBundle(report.card, report.models)


def test_training_takes_only_clean_lots_and_leaves_out_small_clusters(trained):
    train, data, report, _ = trained
    clean_rows = sum(lot.good + lot.bad for lot in train.lots if lot.defect_rate < 0.01)
    assert report.train_rows == clean_rows
    assert report.validation_rows == len(data.features) - clean_rows
    assert all(c.samples >= 400 for c in report.card.clusters)
    assert all(n < 400 for n in report.left_out.values())
    # Each cluster belongs to one facility/item group.
    assert {c.group for c in report.card.clusters} <= set(data.groups)


def test_faults_of_another_seed_score_above_healthy_shots(trained):
    *_, bundle = trained
    evaluation = simulate_lots(seed=12, days=2, facilities=("F1",), faults=MOLDING_FAULTS)
    data = TrainingSet(**evaluation.training_columns())
    scores = bundle.score(data.features, list(data.groups))
    faulty = evaluation.fault != ""
    assert faulty.any() and (~faulty).any()
    ratio = scores.score / scores.threshold
    auroc = roc_auc_score(faulty, ratio)
    assert auroc > 0.75, f"AUROC {auroc:.3f}"
    assert np.median(ratio[faulty]) > np.median(ratio[~faulty])
    # What pushed an alarmed shot over names features, most deviant first.
    alarmed = np.flatnonzero(ratio >= 1)
    assert alarmed.size and all(len(scores.top_fields[i]) == 3 for i in alarmed)


def test_an_untrained_setting_falls_back_to_the_nearest_trained_cluster(trained):
    _, data, report, bundle = trained
    card = report.card
    target = card.clusters[0]
    lo, hi = np.asarray(card.setting_min), np.asarray(card.setting_max)
    sample = data.features[data.groups == target.group][0].copy()
    index = [card.features.index(s) for s in card.settings]
    # A setting just beyond the target cluster's trained ones, nowhere near the others.
    scaled = np.asarray(target.centroid) + (target.radius + 0.05) / np.sqrt(len(index))
    sample[index] = lo + scaled * (hi - lo)
    distances = {
        c.key: np.linalg.norm(np.asarray(c.centroid) - scaled) - c.radius
        for c in card.clusters
        if c.group == target.group
    }
    nearest = min(distances, key=distances.get)
    scores = bundle.score(sample[None, :], [target.group])
    assert scores.cluster == [nearest]
    assert scores.fallback == [True]
    cluster = next(c for c in card.clusters if c.key == nearest)
    assert scores.threshold[0] > cluster.threshold  # raised by the distance
    # A trained setting is its own cluster's, no fallback, its plain threshold.
    own = data.features[data.groups == target.group]
    result = bundle.score(own[:50], [target.group] * 50)
    assert not any(result.fallback)


def test_a_sample_prefers_clusters_of_its_own_facility_and_item(trained):
    _, data, report, bundle = trained
    groups = sorted({c.group for c in report.card.clusters})
    assert len(groups) >= 2
    row = data.features[data.groups == groups[0]][:1]
    assert bundle.score(row, [groups[1]]).cluster[0].startswith(groups[1])
    assert bundle.score(row, [groups[0]]).cluster[0].startswith(groups[0])


def test_clipping_bounds_the_score_of_unseen_values(trained):
    _, data, report, bundle = trained
    cluster = report.card.clusters[0]
    row = data.features[data.groups == cluster.group][:1].copy()
    at_max, beyond = row.copy(), row.copy()
    process = report.card.features.index("meltTemperature")
    at_max[0, process] = cluster.feature_max[process]
    beyond[0, process] = 1e9
    groups = [cluster.group]
    a, b = bundle.score(at_max, groups), bundle.score(beyond, groups)
    assert np.isfinite(b.score[0])
    assert b.score[0] == pytest.approx(a.score[0], rel=1e-6)


def test_isolation_forest_onnx_scores_agree_with_scikit_learn():
    from sklearn.ensemble import IsolationForest

    from twinforge.ml.anomaly.detectors import fit_detector

    x = np.random.default_rng(3).random((600, 4)).astype(np.float32)
    fitted = fit_detector("isolation_forest", x, seed=3)
    native = -IsolationForest(n_estimators=100, random_state=3).fit(x).score_samples(x)
    np.testing.assert_allclose(fitted.train_scores, native, rtol=1e-6)
    from twinforge.ml.onnx_scoring import OnnxScorer

    for batch in (x[:1], x):
        out = OnnxScorer(fitted.onnx, fitted.output).run(batch)[:, 0]
        np.testing.assert_allclose(
            fitted.sign * out + fitted.shift, native[: len(batch)], atol=1e-5
        )


def test_saved_bundles_load_and_corrupt_ones_are_refused(trained, tmp_path):
    *_, report, bundle = trained
    target = tmp_path / "bundle"
    bundle.save(target, report.models)
    loaded = AnomalyBundle.load(target)
    rows = np.asarray([[*report.card.clusters[0].feature_mean]])
    assert loaded.score(rows).score == pytest.approx(bundle.score(rows).score)
    (target / report.card.clusters[0].model_file).write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match=r"cluster-000\.onnx"):
        AnomalyBundle.load(target)
    (target / "card.json").write_text("{")
    with pytest.raises(ModelFileError, match="not a model card"):
        AnomalyBundle.load(target)
    with pytest.raises(ModelFileError, match="no model card"):
        AnomalyBundle.load(tmp_path / "nowhere")


def test_bad_training_input_names_the_field_and_the_rule():
    features = np.ones((5, 2))
    common = {"names": ("a", "b"), "settings": ("a",), "lots": np.zeros(5), "machines": np.zeros(5)}
    with pytest.raises(ValueError, match="groups: expected one per sample"):
        TrainingSet(features, groups=np.zeros(3), **common)
    features[2, 1] = np.nan
    with pytest.raises(ValueError, match="features: NaN"):
        TrainingSet(features, groups=np.zeros(5), **common)
    with pytest.raises(ValueError, match="settings: c are not features"):
        TrainingSet(np.ones((5, 2)), **{**common, "settings": ("c",)}, groups=np.zeros(5))
    with pytest.raises(ValueError, match="detector: 'svm' is not one of"):
        TrainingConfig(detector="svm")
    with pytest.raises(ValueError, match="quantile"):
        ThresholdRule(quantile=2.0)


def test_threshold_rule_is_the_training_maximum_weighted_by_its_variation():
    scores = np.array([1.0, 2.0, 3.0])
    cv = np.std(scores) / np.mean(scores)
    assert ThresholdRule().threshold(scores) == 3.0
    assert ThresholdRule(cv_weight=1.0, margin=0.5).threshold(scores) == pytest.approx(
        3.0 * (1 + cv) + 0.5
    )
    assert ThresholdRule(fixed=10.0).threshold(scores) == 10.0
