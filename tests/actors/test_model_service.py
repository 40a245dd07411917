"""The model service on real Ray and a real MLflow registry: a model trained from the
history the hosts wrote (in a Ray task), promoted into the running hosts without a
restart, rolled back, and a version installed by another process picked up on its own."""

from __future__ import annotations

import time

import numpy as np
import pytest

from twinforge.actors import models as host_models
from twinforge.actors.training import ModelService, promote_version
from twinforge.ml.config import ModelBinding
from twinforge.ml.registry import ModelRegistry

PUMP = "dtmi:com:example:ml:Pump;1"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BINDING = ModelBinding(
    name="anomaly",
    interface=PUMP,
    detector="autoencoder",
    features=("flow", "power"),
    min_samples=200,
)
TWINS = ("pump-1", "pump-2", "pump-3")


def feed(fleet, seconds: int, start: float) -> None:
    rng = np.random.default_rng(8)
    for k in range(seconds):
        entries = []
        for twin in TWINS:
            flow = float(rng.normal(10.0, 0.5))
            values = {"flow": flow, "power": 2 * flow + float(rng.normal(0, 0.2))}
            entries.append((twin, "telemetry", values, start + k, start + k))
        fleet.send(fleet.route(TWINS[0]), entries).result(timeout=60)


def statuses(fleet) -> list[dict]:
    return [s for answers in fleet.anomaly_of(list(TWINS)).values() for s in answers]


@pytest.mark.slow
def test_train_promote_rollback_reach_the_running_hosts(make_fleet, tmp_path, monkeypatch):
    fleet = make_fleet(assets_per_host=10, ml=(("anomaly", PUMP),))
    fleet.add(dict.fromkeys(TWINS, PUMP))
    feed(fleet, 120, time.time() - 200)
    fleet.checkpoint()  # history durable
    assert {s["mode"] for s in statuses(fleet)} == {"rules"}

    data_dir = fleet.config.data_dir
    service = ModelService(
        fleet, lambda _: TWINS, [BINDING], data_dir=data_dir, history_url=None, mlflow_uri=None
    )
    first = service.train("anomaly", PUMP, hours=1.0, quick=True)
    assert first.version == 1 and first.metrics["train_samples"] == 360  # 120 s of 3 twins
    assert first.data_window["twins"] == list(TWINS)
    service.promote("anomaly", PUMP, first.version)
    feed(fleet, 1, time.time())
    answers = statuses(fleet)
    assert {(s["mode"], s["version"]) for s in answers} == {("model", "1")}
    assert all(s["score"] is not None for s in answers)

    second = service.train("anomaly", PUMP, hours=1.0, quick=True)
    service.promote("anomaly", PUMP, second.version)
    assert {s["version"] for s in statuses(fleet)} == {"2"}
    rolled = service.promote("anomaly", PUMP, None)
    assert rolled.version == 1
    assert {s["version"] for s in statuses(fleet)} == {"1"}
    assert [v.promoted for v in service.versions("anomaly", PUMP)] == [True, False]

    # Another process (the CLI) promotes: the hosts find it on their own.
    monkeypatch.setattr(host_models, "WATCH_INTERVAL_S", 0.0)  # this process only
    promote_version(ModelRegistry(None, data_dir), BINDING, 2, data_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        feed(fleet, 1, time.time())
        if {s["version"] for s in statuses(fleet)} == {"2"}:
            break
        time.sleep(1)
    assert {s["version"] for s in statuses(fleet)} == {"2"}


def test_too_little_history_is_a_clear_error(make_fleet):
    fleet = make_fleet(assets_per_host=10, ml=(("anomaly", PUMP),))
    fleet.add(dict.fromkeys(TWINS, PUMP))
    feed(fleet, 5, time.time() - 10)
    fleet.checkpoint()
    service = ModelService(
        fleet,
        lambda _: TWINS,
        [BINDING],
        data_dir=fleet.config.data_dir,
        history_url=None,
        mlflow_uri=None,
    )
    with pytest.raises(ValueError, match=r"window: 15 samples .* at least 200"):
        service.train("anomaly", PUMP, hours=1.0, quick=True)
    with pytest.raises(LookupError, match="no model energy of"):
        service.train("energy", PUMP, hours=1.0)
