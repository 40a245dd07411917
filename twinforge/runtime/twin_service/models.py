"""The model catalog: DTDL models stored in the graph, parsed once, kept as a ModelSet.

Uploads are validated with twin_models as one batch that resolves references against the
models already stored; a model can be decommissioned (no new twins) and deleted only when
no twin and no other model depends on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twinforge.runtime.events import EventBus, EventKind
from twinforge.runtime.stores import GraphStore
from twinforge.runtime.twin_service import documents as docs
from twinforge.runtime.twin_service.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    Problem,
    ValidationFailed,
    invalid,
)
from twinforge.twin_models import (
    Interface,
    ModelParsingError,
    ModelSet,
    ResolutionError,
    parse_models,
)
from twinforge.twin_models.dtmi import is_valid_dtmi

MAX_MODELS_PER_UPLOAD = 1000


@dataclass(frozen=True, slots=True)
class StoredModel:
    id: str
    document: dict[str, Any]
    upload_time: str
    decommissioned: bool
    #: Other stored models this one refers to (extends, component schemas, targets...).
    dependencies: tuple[str, ...]

    def to_dict(self, *, include_model: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "uploadTime": self.upload_time,
            "decommissioned": self.decommissioned,
            "dependencies": list(self.dependencies),
        }
        if include_model:
            out["model"] = self.document
        return out


class ModelCatalog:
    def __init__(self, store: GraphStore, bus: EventBus | None = None) -> None:
        self._store = store
        self._bus = bus
        self._lock = threading.RLock()
        self._models: dict[str, StoredModel] = {}
        self._model_set: ModelSet = parse_models([])
        self.reload()

    # -- reading ---------------------------------------------------------------------
    def reload(self) -> None:
        """Read every stored model back from the graph (at start-up)."""
        rows = self._store.read(
            "MATCH (m:Model) RETURN m.model_id AS id, m.doc AS doc, m.upload_time AS time, "
            "m.decommissioned AS decommissioned, m.dependencies AS deps"
        )
        with self._lock:
            self._models = {
                r["id"]: StoredModel(
                    r["id"],
                    json.loads(r["doc"]),
                    r["time"],
                    bool(r["decommissioned"]),
                    tuple(r["deps"] or ()),
                )
                for r in rows
            }
            self._model_set = parse_models([m.document for m in self._models.values()])

    @property
    def model_set(self) -> ModelSet:
        return self._model_set

    def find(self, model_id: str) -> StoredModel | None:
        return self._models.get(model_id)

    def get(self, model_id: str) -> StoredModel:
        found = self._models.get(model_id)
        if found is None:
            raise NotFound(f"no model {model_id}")
        return found

    def list(self, *, dependencies_for: Sequence[str] | None = None) -> list[StoredModel]:
        """Every stored model, or ``dependencies_for`` those ids and what they depend on."""
        models = self._models
        if dependencies_for is None:
            return sorted(models.values(), key=lambda m: m.id)
        out: dict[str, StoredModel] = {}
        stack = list(dependencies_for)
        while stack:
            current = self.get(stack.pop())
            if current.id not in out:
                out[current.id] = current
                stack.extend(current.dependencies)
        return sorted(out.values(), key=lambda m: m.id)

    def interface(self, model_id: str) -> Interface:
        try:
            return self._model_set.interface(model_id)
        except KeyError:
            raise NotFound(f"no model {model_id}") from None

    def lineage(self, model_id: str) -> list[str]:
        """``model_id`` and every Interface it extends, directly or not."""
        out: list[str] = []
        stack = [self.interface(model_id)]
        while stack:
            current = stack.pop()
            if current.id not in out:
                out.append(current.id)
                stack.extend(current.extends)
        return out

    # -- writing ---------------------------------------------------------------------
    def upload(self, documents: Iterable[Mapping[str, Any]]) -> list[StoredModel]:
        """Validate and store a batch of Interface documents; all or nothing."""
        batch = [dict(d) if isinstance(d, Mapping) else d for d in documents]
        if not batch:
            raise invalid("models", "required", "upload at least one model")
        if len(batch) > MAX_MODELS_PER_UPLOAD:
            raise invalid(
                "models", "maxItems", f"upload at most {MAX_MODELS_PER_UPLOAD} models at once"
            )
        ids: list[str] = []
        for index, doc in enumerate(batch):
            model_id = doc.get("@id") if isinstance(doc, dict) else None
            if not isinstance(model_id, str) or not is_valid_dtmi(model_id):
                raise invalid(
                    f"models[{index}].@id", "dtmi", "each model needs an @id that is a DTMI"
                )
            ids.append(model_id)
        with self._lock:
            taken = [i for i in ids if i in self._models]
            repeated = {i for i in ids if ids.count(i) > 1}
            if taken or repeated:
                raise AlreadyExists(
                    "models already exist",
                    [
                        Problem(i, "unique", "a model with this id exists")
                        for i in sorted(set(taken) | repeated)
                    ],
                )
            self._validate(batch)
            everything = [m.document for m in self._models.values()] + batch
            model_set = parse_models(everything)
            time = docs.now()
            stored = [
                StoredModel(i, d, time, False, _dependencies(d, model_set, i))
                for i, d in zip(ids, batch, strict=True)
            ]
            self._store.write(
                "UNWIND $rows AS r CREATE (m:Model {model_id: r.id, doc: r.doc, "
                "upload_time: r.time, decommissioned: false, dependencies: r.deps})",
                {
                    "rows": [
                        {
                            "id": m.id,
                            "doc": docs.encode(m.document),
                            "time": time,
                            "deps": list(m.dependencies),
                        }
                        for m in stored
                    ]
                },
            )
            self._models.update((m.id, m) for m in stored)
            self._model_set = model_set
        for m in stored:
            self._publish(EventKind.MODEL_CREATED, m)
        return stored

    def decommission(self, model_id: str) -> StoredModel:
        with self._lock:
            current = self.get(model_id)
            self._store.write(
                "MATCH (m:Model {model_id: $id}) SET m.decommissioned = true", {"id": model_id}
            )
            updated = StoredModel(
                current.id, current.document, current.upload_time, True, current.dependencies
            )
            self._models[model_id] = updated
        self._publish(EventKind.MODEL_DECOMMISSIONED, updated)
        return updated

    def delete(self, model_id: str) -> None:
        """Delete a model no twin and no other model uses."""
        with self._lock:
            current = self.get(model_id)
            users = sorted(m.id for m in self._models.values() if model_id in m.dependencies)
            twins = self._store.read(
                "MATCH (t:Twin {model: $id}) RETURN t.twin_id AS id LIMIT 5", {"id": model_id}
            )
            if users or twins:
                problems = [Problem(u, "dependency", "this model depends on it") for u in users]
                problems += [Problem(t["id"], "dependency", "this twin uses it") for t in twins]
                raise Conflict(f"model {model_id} is still in use", problems)
            self._store.write("MATCH (m:Model {model_id: $id}) DELETE m", {"id": model_id})
            del self._models[model_id]
            self._model_set = parse_models([m.document for m in self._models.values()])
        self._publish(EventKind.MODEL_DELETED, current)

    # -- helpers ---------------------------------------------------------------------
    def _validate(self, batch: list[Any]) -> None:
        def resolve(undefined: Sequence[str]) -> list[dict[str, Any]]:
            return [self._models[i].document for i in undefined if i in self._models]

        try:
            parse_models(batch, resolver=resolve)
        except ModelParsingError as exc:
            raise ValidationFailed(
                "the models are not valid DTDL",
                [
                    Problem(
                        e.primary_id or f"models[{e.document}]",
                        e.validation_id,
                        f"{e.cause} {e.action}",
                    )
                    for e in exc.errors
                ],
            ) from None
        except ResolutionError as exc:
            raise ValidationFailed(
                "the models refer to models that are not uploaded",
                [
                    Problem(
                        i,
                        "dtmi:dtdl:parsingError:unresolvedIdentifier",
                        "upload it first or in the same batch",
                    )
                    for i in exc.undefined_ids
                ],
            ) from None

    def _publish(self, kind: EventKind, model: StoredModel) -> None:
        if self._bus is not None:
            self._bus.publish(kind, model.id, model.to_dict())


def _dependencies(document: Any, model_set: ModelSet, own_id: str) -> tuple[str, ...]:
    """The top-level models ``document`` names (strings equal to another root's DTMI)."""
    roots = set(model_set.roots)
    found: set[str] = set()
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if value in roots and value != own_id:
                found.add(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return tuple(sorted(found))
