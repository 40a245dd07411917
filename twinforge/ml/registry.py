"""The model registry on MLflow: trained model directories, their metrics, training data
windows and versions, and which version is promoted (the ``champion`` alias).

Embedded by default (SQLite and a local artifact folder under ``data_dir/ml``), a tracking
server or database by URL (``TWINFORGE_MLFLOW_URI``), through the same code.

Importing MLflow takes seconds and pulls in SQLAlchemy, Flask and more, so this module
imports it only when a :class:`ModelRegistry` is made: importing the module (for
:func:`model_name`, :class:`ModelVersion` or a type hint) stays cheap. Only the server and
the CLI make a registry; asset hosts never do, they read the files :meth:`download` exports.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinforge.errors import ClientError
from twinforge.twin_models.dtmi import Dtmi

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion as MlflowModelVersion

__all__ = [
    "CHAMPION",
    "EXPERIMENT",
    "InvalidModelInput",
    "ModelNotFound",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "model_name",
    "validate_name",
]

EXPERIMENT = "twinforge"
"""The MLflow experiment every training run goes to."""

CHAMPION = "champion"
"""The registered-model alias of the promoted version."""

MODEL_PATH = "model"
"""Where a run keeps the model directory among its artifacts."""

_WINDOW_FILE = "data_window.json"
_WINDOW_TAG = "twinforge.data_window"  # on the model version: read back without a download
_HISTORY_TAG = "twinforge.promotions"  # on the registered model: promoted versions, oldest first
_HISTORY_KEPT = 100  # promotions remembered for rollback (a tag value holds about 5000 digits)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}")
_NAME_RULE = "letters, digits and . _ - :, starting with a letter or digit, 1 to 256 characters"
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
# MLflow's own rule for param and metric names; checked here so the error names our field.
_KEY = re.compile(r"[A-Za-z0-9_\-. /:]{1,250}")
_KEY_RULE = "letters, digits, spaces and _ - . / :, 1 to 250 characters"
_MAX_PARAM = 6000  # MLflow's limit on a param value
_MAX_RUN_TAG = 8000  # ... on a run tag value
_MAX_VERSION_TAG = 100_000  # ... on a model version tag value
_MAX_WINDOW_TAG_ENTRY = 250  # data window entries copied to run tags (for search), if short


class RegistryError(ClientError):
    """A refusal of the model registry."""


class InvalidModelInput(RegistryError, ValueError):
    """A name, parameter, metric, tag or data window that breaks its rule."""

    code = "BAD_USER_INPUT"


class ModelNotFound(RegistryError, LookupError):
    """A registered model, version or promotion that does not exist."""

    code = "NOT_FOUND"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered version of a model, as the registry holds it."""

    name: str
    version: int
    run_id: str
    created: float
    """When the version was registered (seconds since the epoch)."""
    promoted: bool
    """Whether it is the ``champion``, the version hosts load."""
    metrics: dict[str, float] = field(hash=False)
    data_window: dict[str, Any] = field(hash=False)
    """The training data: which twins, from and to when, how many samples."""


def validate_name(name: object, field_name: str = "name") -> str:
    """Return ``name`` if it is a valid model name; raise :class:`InvalidModelInput`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidModelInput(f"{field_name} {name!r}: use {_NAME_RULE}", field=field_name)
    return name


def model_name(kind: str, interface: str) -> str:
    """The registered-model name of the ``kind`` model (``anomaly``, ``rul``, ...) of a DTDL
    interface: ``anomaly`` and ``dtmi:com:example:MoldingMachine;1`` give
    ``anomaly.dtmi-com-example-MoldingMachine-1``.

    One-to-one: DTMI segments hold no ``-`` and start with a letter, so a trailing
    ``-<digits>`` can only be the version."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidModelInput(
            f"kind {kind!r}: use lowercase letters, digits and _, starting with a letter, "
            "1 to 32 characters",
            field="kind",
        )
    try:
        dtmi = Dtmi.parse(interface)
    except ValueError as exc:
        raise InvalidModelInput(f"interface: {exc}", field="interface") from None
    if dtmi.fragment is not None or any(label.startswith("_") for label in dtmi.labels):
        raise InvalidModelInput(
            f"interface {interface!r}: an interface DTMI has no fragment and no system segment",
            field="interface",
        )
    text = str(dtmi).replace(":", "-").replace(";", "-")
    return validate_name(f"{kind}.{text}", "interface")


class ModelRegistry:
    """Registered models on MLflow, each version one training run's model directory.

    ``uri`` None: an embedded SQLite store at ``data_dir/ml/mlflow.db`` with artifacts in
    ``data_dir/ml/artifacts``; otherwise an MLflow tracking URI (``http(s)://`` for a
    tracking server, ``sqlite:///``, ``postgresql://`` ... for a database). The client is
    this object's own, never MLflow's global state, so several registries can share a
    process.
    """

    def __init__(self, uri: str | None, data_dir: Path) -> None:
        # Lazily: importing MLflow costs seconds (see the module docstring).
        from mlflow import MlflowClient

        self._artifact_location: str | None = None
        if not uri:  # unset, or TWINFORGE_MLFLOW_URI set empty: the embedded store
            root = Path(data_dir).resolve() / "ml"
            artifacts = root / "artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{root / 'mlflow.db'}"
            self._artifact_location = artifacts.as_uri()
        self.uri = uri
        self._client: MlflowClient = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._experiment_id: str | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry({self.uri!r})"

    # -- writing --

    def log(
        self,
        name: str,
        model_dir: Path,
        *,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        data_window: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Record one training run (params, metrics, data window, the files of
        ``model_dir``) and register its model as the next version of ``name``."""
        from mlflow.entities import Metric, Param

        validate_name(name)
        model_dir = Path(model_dir)
        if not model_dir.is_dir() or not any(model_dir.iterdir()):
            raise InvalidModelInput(
                f"model_dir {str(model_dir)!r}: must be a directory holding the model's files",
                field="model_dir",
            )
        params_ = [Param(key, value) for key, value in _params(params).items()]
        metrics_ = _metrics(metrics)
        window, window_json = _data_window(data_window)
        tags_ = _tags(tags)

        now_ms = int(time.time() * 1000)
        run_tags = {**tags_, **_window_tags(window), "twinforge.model": name}
        run = self._client.create_run(self._experiment(), run_name=name, tags=run_tags)
        run_id = run.info.run_id
        try:
            self._client.log_batch(
                run_id,
                metrics=[Metric(key, value, now_ms, 0) for key, value in metrics_.items()],
                params=params_,
            )
            self._client.log_text(run_id, window_json, _WINDOW_FILE)
            self._client.log_artifacts(run_id, str(model_dir), MODEL_PATH)
        except BaseException:
            self._client.set_terminated(run_id, "FAILED")
            raise
        self._client.set_terminated(run_id, "FINISHED")

        self._ensure_registered(name)
        version_tags = dict(tags_)
        if len(window_json) <= _MAX_VERSION_TAG:  # else read back from the artifact
            version_tags[_WINDOW_TAG] = window_json
        created = self._client.create_model_version(
            name, source=f"runs:/{run_id}/{MODEL_PATH}", run_id=run_id, tags=version_tags
        )
        return ModelVersion(
            name=name,
            version=int(created.version),
            run_id=run_id,
            created=created.creation_timestamp / 1000,
            promoted=False,
            metrics=metrics_,
            data_window=window,
        )

    def promote(self, name: str, version: int) -> ModelVersion:
        """Make ``version`` the champion of ``name``, remembering the one it replaces."""
        version = _version_number(version)
        found = self._get(name, version)  # a clear error for a version that does not exist
        history = self._history(name)
        if not history or history[-1] != version:
            history.append(version)
        self._set_champion(name, version, history)
        return self._version(name, found, champion=version)

    def rollback(self, name: str) -> ModelVersion:
        """Re-promote the version promoted before the current champion."""
        history = self._history(name)
        if not history:
            raise ModelNotFound(f"name {name!r}: no version is promoted", field="name")
        current = history.pop()
        while history:
            earlier = history[-1]
            try:
                found = self._get(name, earlier)
            except ModelNotFound:  # deleted since it was promoted: go further back
                history.pop()
                continue
            self._set_champion(name, earlier, history)
            return self._version(name, found, champion=earlier)
        raise ModelNotFound(
            f"name {name!r}: no version was promoted before version {current}", field="name"
        )

    # -- reading --

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first; none for an unknown name."""
        validate_name(name)
        champion = self._champion(name)
        found: list[MlflowModelVersion] = []
        token: str | None = None
        while True:  # the name is validated: no quote can break out of the filter
            page = self._client.search_model_versions(f"name = '{name}'", page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        found.sort(key=lambda mv: int(mv.version))
        return [self._version(name, mv, champion=champion) for mv in found]

    def promoted(self, name: str) -> ModelVersion | None:
        """The champion of ``name``, or None if none is promoted (or the name unknown)."""
        validate_name(name)
        champion = self._champion(name)
        if champion is None:
            return None
        return self._version(name, self._get(name, champion), champion=champion)

    def metrics(self, name: str, version: int) -> dict[str, float]:
        """The metrics the training run of ``version`` logged."""
        found = self._get(name, _version_number(version))
        return dict(self._client.get_run(found.run_id).data.metrics)

    def download(self, name: str, version: int, dest: Path) -> Path:
        """Put the files of ``version`` at ``dest`` (a directory, replaced if there) and
        return it. The files land in a temporary sibling first and are renamed into place,
        so a reader never sees half a model; replacing leaves ``dest`` missing for an
        instant, so readers that must never miss one use a fresh ``dest`` per version."""
        found = self._get(name, _version_number(version))
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            try:
                got = Path(self._client.download_artifacts(found.run_id, MODEL_PATH, str(staging)))
            except Exception as exc:
                raise ModelNotFound(
                    f"version {version} of {name!r}: its files cannot be read from run "
                    f"{found.run_id} ({exc})",
                    field="version",
                ) from exc
            if dest.exists():
                old = staging.with_name(staging.name + ".old")
                os.replace(dest, old)
                try:
                    os.replace(got, dest)
                except OSError:
                    os.replace(old, dest)  # keep the version hosts had
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(got, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    # -- MLflow --

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                try:
                    self._experiment_id = self._client.create_experiment(
                        EXPERIMENT, artifact_location=self._artifact_location
                    )
                except MlflowException as exc:  # another process made it first
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = self._client.get_experiment_by_name(EXPERIMENT)
            if found is not None:
                self._experiment_id = found.experiment_id
        assert self._experiment_id is not None
        return self._experiment_id

    def _ensure_registered(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _get(self, name: str, version: int) -> MlflowModelVersion:
        from mlflow.exceptions import MlflowException

        validate_name(name)
        try:
            return self._client.get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        raise ModelNotFound(f"version {version} of {name!r} does not exist", field="version")

    def _registered(self, name: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        return None

    def _champion(self, name: str) -> int | None:
        registered = self._registered(name)
        if registered is None:
            return None
        # SQLite gives the alias's version as an int, the REST API as a string.
        version = registered.aliases.get(CHAMPION)
        return None if version is None else int(version)

    def _history(self, name: str) -> list[int]:
        """Promoted versions, oldest first, ending with the champion. A champion set by
        hand in MLflow (not through :meth:`promote`) is counted as the latest promotion."""
        validate_name(name)
        registered = self._registered(name)
        if registered is None:
            return []
        try:
            history = [int(v) for v in json.loads(registered.tags.get(_HISTORY_TAG, "[]"))]
        except (TypeError, ValueError):  # edited by hand: start again from the champion
            history = []
        champion = registered.aliases.get(CHAMPION)
        if champion is not None and (not history or history[-1] != int(champion)):
            history.append(int(champion))
        return history

    def _set_champion(self, name: str, version: int, history: list[int]) -> None:
        # Two writes, not one transaction: the server is the only writer that promotes.
        self._client.set_registered_model_tag(
            name, _HISTORY_TAG, json.dumps(history[-_HISTORY_KEPT:])
        )
        self._client.set_registered_model_alias(name, CHAMPION, str(version))

    def _version(
        self, name: str, found: MlflowModelVersion, *, champion: int | None
    ) -> ModelVersion:
        run = self._client.get_run(found.run_id)
        window_json = found.tags.get(_WINDOW_TAG)
        if window_json is None:  # too long for a tag: read the artifact
            with tempfile.TemporaryDirectory() as tmp:
                path = self._client.download_artifacts(found.run_id, _WINDOW_FILE, tmp)
                window_json = Path(path).read_text(encoding="utf-8")
        return ModelVersion(
            name=name,
            version=int(found.version),
            run_id=found.run_id,
            created=found.creation_timestamp / 1000,
            promoted=champion == int(found.version),
            metrics=dict(run.data.metrics),
            data_window=json.loads(window_json),
        )


# -- validation of what log() records --


def _version_number(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidModelInput(
            f"version {version!r}: must be a whole number of at least 1", field="version"
        )
    return version


def _key(key: object, field_name: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidModelInput(
            f"{field_name} key {key!r}: use {_KEY_RULE}", field=f"{field_name}.{key}"
        )
    return key


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > _MAX_PARAM:
            raise InvalidModelInput(
                f"params.{key}: at most {_MAX_PARAM} characters", field=f"params.{key}"
            )
        out[_key(key, "params")] = text
    return out


def _metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise InvalidModelInput(
                f"metrics.{key} {value!r}: must be a number (not NaN)", field=f"metrics.{key}"
            )
        out[_key(key, "metrics")] = float(value)
    return out


def _tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if _key(key, "tags").startswith(("mlflow.", "twinforge.")):
            raise InvalidModelInput(
                f"tags key {key!r}: 'mlflow.' and 'twinforge.' are reserved", field=f"tags.{key}"
            )
        if not isinstance(value, str) or len(value) > _MAX_RUN_TAG:
            raise InvalidModelInput(
                f"tags.{key}: must be a string of at most {_MAX_RUN_TAG} characters",
                field=f"tags.{key}",
            )
        out[key] = value
    return out


def _data_window(window: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The window as JSON (datetimes as ISO 8601), and the plain dict it reads back as."""

    def default(value: Any) -> Any:
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, set | frozenset | tuple):
            return sorted(value, key=str) if not isinstance(value, tuple) else list(value)
        raise TypeError(type(value).__name__)

    if not isinstance(window, Mapping):
        raise InvalidModelInput("data_window: must be a mapping", field="data_window")
    try:
        text = json.dumps(dict(window), default=default, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidModelInput(
            f"data_window: must hold JSON values and datetimes only ({exc})", field="data_window"
        ) from None
    return json.loads(text), text


def _window_tags(window: dict[str, Any]) -> dict[str, str]:
    """Short entries of the data window as run tags, so runs can be searched by them."""
    tags: dict[str, str] = {}
    for key, value in window.items():
        if not _KEY.fullmatch(f"data_window.{key}.count"):  # MLflow's rule for tag names
            continue
        if isinstance(value, list | dict):
            tags[f"data_window.{key}.count"] = str(len(value))
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) <= _MAX_WINDOW_TAG_ENTRY:
            tags[f"data_window.{key}"] = text
    return tags
