"""The twins' anomaly models through the GraphQL API, on real parts: twins in an embedded
FalkorDB, asset hosts on Ray, training in a Ray task from the hosts' history, MLflow,
and the real FastAPI app."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from support.graphql_parts import serving

from twinforge.actors.training import ModelService, twins_of
from twinforge.ml.config import ModelBinding
from twinforge.runtime.twin_service import TwinService

PUMP = "dtmi:com:example:mlapi:Pump;1"
MODEL = {
    "@context": "dtmi:dtdl:context;3",
    "@id": PUMP,
    "@type": "Interface",
    "contents": [
        {"@type": "Telemetry", "name": "flow", "schema": "double"},
        {"@type": "Telemetry", "name": "power", "schema": "double"},
    ],
}
BINDING = ModelBinding(
    name="anomaly", interface=PUMP, detector="autoencoder", features=("flow", "power"),
    min_samples=100, interval_s=0.0,
)  # fmt: skip
ANOMALY = """query($id: String!) { twin(id: $id) { dtId anomaly {
  name interface version mode reason detector score threshold level cluster fallbackCluster
  topFields time } } }"""
TRAIN = """mutation($n: String!, $i: String!, $h: Float!, $p: Boolean!) {
  trainModel(name: $n, interface: $i, hours: $h, promote: $p) {
    name version champion metrics dataWindow } }"""
VERSIONS = """query($n: String!, $i: String!) { modelVersions(name: $n, interface: $i) {
  version champion } }"""
ROLLBACK = """mutation($n: String!, $i: String!) { rollbackModel(name: $n, interface: $i) {
  version champion } }"""

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def data(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def code(answer: dict[str, Any]) -> str:
    return answer["errors"][0]["extensions"]["code"]


def test_train_promote_and_read_the_anomaly_of_a_twin(embedded_store, make_fleet, tmp_path) -> None:
    embedded_store.clear()
    twins = TwinService(embedded_store)
    twins.models.upload([MODEL])
    for name in ("p1", "p2"):
        twins.create_twin(name, {"$metadata": {"$model": PUMP}})
    fleet = make_fleet(10, ml=(("anomaly", PUMP),), lineage={PUMP: (PUMP,)})
    fleet.add({"p1": PUMP, "p2": PUMP})
    rng = np.random.default_rng(4)
    start = time.time() - 300
    for k in range(120):
        entries = []
        for twin in ("p1", "p2"):
            flow = float(rng.normal(10.0, 0.5))
            values = {"flow": flow, "power": 2 * flow + float(rng.normal(0, 0.2))}
            entries.append((twin, "telemetry", values, start + k, start + k))
        fleet.send(0, entries).result(timeout=60)
    fleet.checkpoint()
    service = ModelService(
        fleet,
        lambda interface: twins_of(twins, interface),
        [BINDING],
        data_dir=fleet.config.data_dir,
        history_url=None,
        mlflow_uri=None,
    )
    with serving(twins, embedded_store, tmp_path / "keys.sqlite3", models=service) as api:
        [before] = data(api.post(ANOMALY, {"id": "p1"}, role="viewer"))["twin"]["anomaly"]
        assert before["mode"] == "rules" and "no promoted anomaly model" in before["reason"]

        args = {"n": "anomaly", "i": PUMP, "h": 1.0, "p": True}
        assert code(api.post(TRAIN, args, role="viewer")) == "FORBIDDEN"
        trained = data(api.post(TRAIN, args, role="engineer"))["trainModel"]
        assert trained["version"] == 1 and trained["champion"]
        assert trained["metrics"]["train_samples"] == 240
        assert sorted(trained["dataWindow"]["twins"]) == ["p1", "p2"]

        def score_of(flow: float, power: float, ts: float) -> dict[str, Any]:
            entry = ("p1", "telemetry", {"flow": flow, "power": power}, ts, ts)
            fleet.send(0, [entry]).result(timeout=60)
            return data(api.post(ANOMALY, {"id": "p1"}, role="viewer"))["twin"]["anomaly"][0]

        healthy = score_of(10.0, 20.0, time.time())
        assert healthy["mode"] == "model" and healthy["version"] == "1"
        assert healthy["detector"] == "autoencoder" and healthy["cluster"] == "*/0"
        assert healthy["level"] in ("normal", "warning", "critical")
        broken = score_of(11.5, 2.0, time.time() + 1)  # power the flow cannot explain
        assert broken["score"] > 3 * healthy["score"]

        data(api.post(TRAIN, args, role="engineer"))
        versions = data(api.post(VERSIONS, {"n": "anomaly", "i": PUMP}))["modelVersions"]
        assert [(v["version"], v["champion"]) for v in versions] == [(1, False), (2, True)]
        rolled = data(api.post(ROLLBACK, {"n": "anomaly", "i": PUMP}, role="engineer"))
        assert rolled["rollbackModel"] == {"version": 1, "champion": True}

        # Hostile inputs: named fields, clear codes, nothing trained.
        assert code(api.post(TRAIN, {**args, "n": "nothing"}, role="engineer")) == "NOT_FOUND"
        assert code(api.post(TRAIN, {**args, "h": -1.0}, role="engineer")) == "BAD_USER_INPUT"
        promote = (
            'mutation { promoteModel(name: "anomaly", interface: "%s", version: 99) { version } }'
        )
        assert code(api.post(promote % PUMP, role="engineer")) == "NOT_FOUND"
