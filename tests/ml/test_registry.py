"""The model registry on a real MLflow: an embedded SQLite store per module (its first use
creates the tables, about two seconds), and a tracking server for the same code by URL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from twinforge.config import Settings
from twinforge.ml import registry as registry_module
from twinforge.ml.registry import (
    InvalidModelInput,
    ModelNotFound,
    ModelRegistry,
    model_name,
    validate_name,
)

# MLflow's SQLAlchemy store uses a loader SQLAlchemy 2 deprecates: upstream's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

WINDOW = {
    "twins": ["press-1", "press-2"],
    "from": datetime(2026, 1, 1, tzinfo=UTC),
    "to": "2026-01-08T00:00:00+00:00",
    "samples": 12_000,
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(None, tmp_path_factory.mktemp("registry"))


def _model_dir(root: Path, payload: bytes) -> Path:
    """A trained model as training code leaves it: plain files, one in a subfolder."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(payload)
    (root / "card.json").write_text(json.dumps({"payload": payload.decode()}))
    (root / "clusters").mkdir()
    (root / "clusters" / "0.onnx").write_bytes(payload * 2)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _log(registry: ModelRegistry, name: str, tmp_path: Path, payload: bytes, auc: float):
    return registry.log(
        name,
        _model_dir(tmp_path / payload.decode(), payload),
        params={"n_estimators": 100, "contamination": "auto"},
        metrics={"auc": auc, "n_train": 12_000},
        data_window=WINDOW,
        tags={"trained_by": "test"},
    )


def test_log_promote_and_roll_back(registry: ModelRegistry, tmp_path: Path) -> None:
    name = model_name("anomaly", "dtmi:com:example:MoldingMachine;1")
    assert name == "anomaly.dtmi-com-example-MoldingMachine-1"
    one = _log(registry, name, tmp_path, b"v1", 0.8)
    two = _log(registry, name, tmp_path, b"v2", 0.9)
    assert (one.version, two.version) == (1, 2)
    assert one.run_id != two.run_id
    assert abs(two.created - time.time()) < 60
    assert [v.version for v in registry.versions(name)] == [1, 2]
    assert registry.promoted(name) is None

    assert registry.promote(name, 1).promoted
    assert registry.promoted(name).version == 1  # type: ignore[union-attr]
    registry.promote(name, 2)
    assert [(v.version, v.promoted) for v in registry.versions(name)] == [(1, False), (2, True)]

    back = registry.rollback(name)
    assert (back.version, back.promoted) == (1, True)
    assert registry.promoted(name).version == 1  # type: ignore[union-attr]
    with pytest.raises(ModelNotFound, match="no version was promoted before version 1"):
        registry.rollback(name)
    assert registry.promoted(name).version == 1  # type: ignore[union-attr]

    # Promoting the champion again changes nothing; a later promotion rolls back to it.
    registry.promote(name, 1)
    registry.promote(name, 2)
    assert registry.rollback(name).version == 1


def test_metrics_and_data_window_come_back(registry: ModelRegistry, tmp_path: Path) -> None:
    logged = _log(registry, "rul.window", tmp_path, b"w1", 0.75)
    expected_window = {**WINDOW, "from": "2026-01-01T00:00:00+00:00"}
    assert logged.data_window == expected_window
    assert registry.metrics("rul.window", 1) == {"auc": 0.75, "n_train": 12_000.0}
    (read,) = registry.versions("rul.window")
    assert read == logged
    assert read.metrics == {"auc": 0.75, "n_train": 12_000.0}
    assert read.data_window == expected_window


def test_a_long_data_window_is_read_from_its_artifact(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "_MAX_VERSION_TAG", 10)  # too long for the tag
    window = {"twins": [f"press-{i}" for i in range(100)]}
    logged = registry.log(
        "rul.long", _model_dir(tmp_path / "m", b"x"), params={}, metrics={}, data_window=window
    )
    assert registry.versions("rul.long")[0].data_window == window == logged.data_window


def test_download_gives_the_files_atomically(registry: ModelRegistry, tmp_path: Path) -> None:
    source_one = _model_dir(tmp_path / "src1", b"d1")
    source_two = _model_dir(tmp_path / "src2", b"d2")
    for source in (source_one, source_two):
        registry.log("forecast.dl", source, params={}, metrics={}, data_window={})

    export = tmp_path / "export"
    dest = registry.download("forecast.dl", 1, export / "forecast.dl")
    assert dest == export / "forecast.dl"
    assert _files(dest) == _files(source_one)
    # Replacing a downloaded version leaves no stale files and no temporary folders.
    registry.download("forecast.dl", 2, dest)
    assert _files(dest) == _files(source_two)
    assert [p.name for p in export.iterdir()] == ["forecast.dl"]


def test_missing_versions_and_models_error_clearly(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.log(
        "anomaly.one", _model_dir(tmp_path / "m", b"x"), params={}, metrics={}, data_window={}
    )
    with pytest.raises(ModelNotFound, match=r"version 7 of 'anomaly\.one' does not exist") as exc:
        registry.download("anomaly.one", 7, tmp_path / "out")
    assert exc.value.field == "version"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelNotFound, match="does not exist"):
        registry.download("anomaly.nobody", 1, tmp_path / "out")
    with pytest.raises(ModelNotFound, match="does not exist"):
        registry.promote("anomaly.one", 3)
    with pytest.raises(ModelNotFound, match="no version is promoted"):
        registry.rollback("anomaly.one")
    assert registry.versions("anomaly.nobody") == []
    assert registry.promoted("anomaly.nobody") is None


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: validate_name("anomaly/press"), "name"),
        (lambda: validate_name("../escape"), "name"),
        (lambda: validate_name(""), "name"),
        (lambda: validate_name("x" * 257), "name"),
        (lambda: model_name("Anomaly", "dtmi:com:example:Press;1"), "kind"),
        (lambda: model_name("anomaly", "com:example:Press"), "interface"),
        (lambda: model_name("anomaly", "dtmi:com:example:Press;1#frag"), "interface"),
    ],
)
def test_bad_names_are_rejected_naming_the_field(call, field: str) -> None:
    with pytest.raises(InvalidModelInput) as exc:
        call()
    assert exc.value.field == field
    assert exc.value.code == "BAD_USER_INPUT"


def test_bad_inputs_to_log_are_rejected_before_a_run(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    model = _model_dir(tmp_path / "m", b"x")
    good = {"params": {}, "metrics": {}, "data_window": {}}
    cases = [
        ("bad name", model, good, "name"),
        ("anomaly.bad", tmp_path / "absent", good, "model_dir"),
        ("anomaly.bad", model, {**good, "metrics": {"auc": "high"}}, "metrics.auc"),
        ("anomaly.bad", model, {**good, "metrics": {"a,b": 1.0}}, "metrics.a,b"),
        ("anomaly.bad", model, {**good, "params": {"p": "x" * 6001}}, "params.p"),
        ("anomaly.bad", model, {**good, "data_window": {"t": object()}}, "data_window"),
        ("anomaly.bad", model, {**good, "tags": {"mlflow.user": "x"}}, "tags.mlflow.user"),
    ]
    for name, model_dir, kwargs, field in cases:
        with pytest.raises(InvalidModelInput) as exc:
            registry.log(name, model_dir, **kwargs)
        assert exc.value.field == field, (name, kwargs)
    assert registry.versions("anomaly.bad") == []


def test_model_names_map_dtmis_one_to_one() -> None:
    assert model_name("rul", "dtmi:com:example:Press") == "rul.dtmi-com-example-Press"
    assert model_name("rul", "dtmi:com:example:Press;2.1") == "rul.dtmi-com-example-Press-2.1"
    assert model_name("rul", "dtmi:com:ex_ample:Press;1") == "rul.dtmi-com-ex_ample-Press-1"


def test_two_registries_in_one_process_are_apart(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.log(
        "anomaly.mine", _model_dir(tmp_path / "m", b"x"), params={}, metrics={}, data_window={}
    )
    other = ModelRegistry(None, tmp_path / "other")
    assert other.uri != registry.uri
    assert other.versions("anomaly.mine") == []
    logged = other.log(
        "anomaly.mine", _model_dir(tmp_path / "n", b"y"), params={}, metrics={}, data_window={}
    )
    assert logged.version == 1
    assert (tmp_path / "other" / "ml" / "mlflow.db").is_file()
    assert any((tmp_path / "other" / "ml" / "artifacts").iterdir())
    assert [v.run_id for v in registry.versions("anomaly.mine")] != [logged.run_id]


def test_the_setting_and_a_cheap_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINFORGE_MLFLOW_URI", "http://mlflow:5000")
    assert Settings().mlflow_uri == "http://mlflow:5000"
    monkeypatch.delenv("TWINFORGE_MLFLOW_URI")
    assert Settings().mlflow_uri is None
    # Importing the module (for its names and types) must not import MLflow.
    code = "import sys, twinforge.ml.registry; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- a real tracking server (starts in about 15 s on two cores) --


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", str(tmp_path / "server-artifacts")]
    # Its own session: the server forks workers, and they all go at teardown.
    server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded machine: seen up to 50 s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()}"
                    )
                time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow
def test_a_tracking_server_through_the_same_code(tracking_server: str, tmp_path: Path) -> None:
    registry = ModelRegistry(tracking_server, tmp_path / "data")
    assert registry.uri == tracking_server
    name = model_name("anomaly", "dtmi:com:example:Press;1")
    one = _log(registry, name, tmp_path, b"s1", 0.7)
    two = _log(registry, name, tmp_path, b"s2", 0.8)
    registry.promote(name, one.version)
    registry.promote(name, two.version)
    assert registry.promoted(name) == registry.versions(name)[1]
    assert registry.rollback(name).version == 1
    dest = registry.download(name, 1, tmp_path / "export" / name)
    assert _files(dest) == _files(tmp_path / "s1")
    assert registry.metrics(name, 2) == {"auc": 0.8, "n_train": 12_000.0}
    assert registry.versions(name)[0].data_window["twins"] == ["press-1", "press-2"]
    # Embedded data stays unused when a URL is set.
    assert not (tmp_path / "data" / "ml").exists()
