"""Building and checking twin documents against their DTDL Interface (no I/O here)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch

from twinforge.runtime.twin_service import documents as docs
from twinforge.runtime.twin_service.errors import Problem, ValidationFailed, invalid
from twinforge.runtime.twin_service.models import ModelCatalog
from twinforge.twin_models import Interface, validate_twin_properties


@dataclass(slots=True)
class TwinRecord:
    """A checked twin, ready to be written: the document, its JSON text and what its graph
    node needs."""

    id: str
    model: str
    lineage: list[str]  # the model and every Interface it extends
    document: dict[str, Any]
    text: str  # the document as JSON, encoded (and size-checked) once
    components: frozenset[str]

    @property
    def etag(self) -> str:
        return self.document["$etag"]

    def node(self) -> dict[str, Any]:
        """Every property of the twin's graph node."""
        fields = docs.query_fields(docs.user_properties(self.document), self.components)
        return {
            "twin_id": self.id,
            "model": self.model,
            "models": self.lineage,
            "etag": self.etag,
            "doc": self.text,
            **fields,
        }


def model_of(document: Any) -> str:
    if not isinstance(document, Mapping):
        raise invalid("", "type", "a twin must be a JSON object")
    metadata = document.get("$metadata")
    model = metadata.get("$model") if isinstance(metadata, Mapping) else None
    if not isinstance(model, str):
        raise invalid("$metadata.$model", "required", "a twin names its model in $metadata.$model")
    return model


def build_twin(
    twin_id: str,
    document: Any,
    catalog: ModelCatalog,
    *,
    previous: Mapping[str, Any] | None = None,
) -> TwinRecord:
    """Check ``document`` against its model and stamp ids, ETag and update times.

    ``previous`` is the stored document being replaced or patched: values that did not
    change keep their ``lastUpdateTime``.
    """
    docs.check_id(twin_id, "$dtId")
    model = model_of(document)
    given_id = document.get("$dtId")
    if given_id is not None and given_id != twin_id:
        raise invalid(
            "$dtId", "mismatch", f"$dtId {given_id!r} differs from the twin id {twin_id!r}"
        )
    stored = catalog.find(model)
    if stored is None:
        raise invalid("$metadata.$model", "unknownModel", f"no model {model} is uploaded")
    previous_model = model_of(previous) if previous is not None else None
    if stored.decommissioned and model != previous_model:
        raise invalid("$metadata.$model", "decommissioned", f"model {model} is decommissioned")
    interface = catalog.interface(model)
    properties = docs.user_properties(document)
    for name in interface.components:
        properties.setdefault(name, {"$metadata": {}})
    check_properties(properties, interface)
    time = docs.now()
    old = previous or {}
    components = frozenset(interface.components)
    metadata = _metadata(properties, old, time, skip=components)
    for name in components:
        inner = dict(properties[name])
        old_inner = old.get(name) if isinstance(old.get(name), Mapping) else {}
        inner["$metadata"] = _metadata(inner, old_inner, time)
        properties[name] = inner
    metadata["$model"] = model
    metadata["$lastUpdateTime"] = time
    document_out = {"$dtId": twin_id, "$etag": docs.new_etag(), "$metadata": metadata, **properties}
    text = docs.encode(document_out)  # size and JSON checks before anything is written
    return TwinRecord(twin_id, model, catalog.lineage(model), document_out, text, components)


def check_properties(properties: Mapping[str, Any], interface: Interface) -> None:
    problems = validate_twin_properties(properties, interface)
    if problems:
        raise ValidationFailed(
            f"the twin does not match {interface.id}",
            [Problem(p.path, p.rule, p.message) for p in problems],
        )


def apply_patch(current: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch to a twin document.

    Paths may touch properties and component properties, and ``/$metadata/$model`` to
    move a twin to another model; other system keys are the service's.
    """
    if not isinstance(patch, Sequence) or isinstance(patch, (str, bytes)) or not patch:
        raise invalid("patch", "type", "a JSON Patch is a non-empty array of operations")
    for index, operation in enumerate(patch):
        if not isinstance(operation, Mapping):
            raise invalid(f"patch[{index}]", "type", "each operation is an object")
        for key in ("path", "from"):
            path = operation.get(key)
            if path is None:
                continue
            if not isinstance(path, str):
                raise invalid(f"patch[{index}].{key}", "type", f"{key} must be a string")
            if path.startswith("/$") and path != "/$metadata/$model":
                raise invalid(
                    f"patch[{index}].{key}", "systemProperty", f"{path} is maintained by twinforge"
                )
    try:
        return jsonpatch.apply_patch(copy.deepcopy(dict(current)), list(patch))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise invalid("patch", "jsonPatch", str(exc)) from None


def _metadata(
    properties: Mapping[str, Any],
    old: Mapping[str, Any],
    time: str,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Per-property ``lastUpdateTime``, kept where the value did not change; ``skip``
    names the components, which carry their own metadata."""
    old_metadata = old.get("$metadata") if isinstance(old.get("$metadata"), Mapping) else {}
    metadata: dict[str, Any] = {}
    for name, value in properties.items():
        if name.startswith("$") or name in skip:
            continue
        previous = old_metadata.get(name)
        unchanged = name in old and old[name] == value and isinstance(previous, Mapping)
        metadata[name] = dict(previous) if unchanged else {"lastUpdateTime": time}
    return metadata
