"""Building and checking relationship documents against the source twin's Interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twinforge.runtime.twin_service import documents as docs
from twinforge.runtime.twin_service.errors import Problem, ValidationFailed, invalid
from twinforge.twin_models import Interface, validate_value


@dataclass(slots=True)
class RelationshipRecord:
    id: str
    source: str
    target: str
    name: str
    document: dict[str, Any]
    text: str  # the document as JSON, encoded (and size-checked) once
    max_multiplicity: int | None

    @property
    def etag(self) -> str:
        return self.document["$etag"]

    def edge(self) -> dict[str, Any]:
        """The properties of the graph relationship."""
        return {"rel_id": self.id, "etag": self.etag, "doc": self.text}


def build_relationship(
    source_id: str,
    relationship_id: str,
    document: Any,
    source_interface: Interface,
    target_lineage: Sequence[str] | None,
) -> RelationshipRecord:
    """Check a relationship from a twin of ``source_interface``; ``target_lineage`` is
    the target twin's model and the Interfaces it extends (None: no such twin)."""
    docs.check_id(relationship_id, "$relationshipId")
    if not isinstance(document, Mapping):
        raise invalid("", "type", "a relationship must be a JSON object")
    name = docs.check_name(document.get("$relationshipName"), "$relationshipName")
    target_id = docs.check_id(document.get("$targetId"), "$targetId")
    for key, expected in (("$sourceId", source_id), ("$relationshipId", relationship_id)):
        given = document.get(key)
        if given is not None and given != expected:
            raise invalid(key, "mismatch", f"{key} {given!r} differs from {expected!r}")
    relationship = source_interface.relationships.get(name)
    if relationship is None:
        raise invalid(
            "$relationshipName",
            "unknownRelationship",
            f"{source_interface.id} has no relationship {name!r}"
            + (
                f"; it has {', '.join(sorted(source_interface.relationships))}"
                if source_interface.relationships
                else ""
            ),
        )
    if target_lineage is None:
        raise invalid("$targetId", "unknownTwin", f"no twin {target_id}")
    if relationship.target is not None and relationship.target not in target_lineage:
        raise invalid(
            "$targetId",
            "targetModel",
            f"{name!r} must point to a {relationship.target} twin; {target_id} is a {target_lineage[0]}",
        )
    allowed = {p.name: p for p in relationship.properties}
    problems: list[Problem] = []
    properties = docs.user_properties(document)
    for key, value in properties.items():
        declared = allowed.get(key)
        if declared is None:
            problems.append(
                Problem(key, "unknownProperty", f"relationship {name!r} has no property {key!r}")
            )
        elif declared.schema is not None:
            problems += [
                Problem(p.path, p.rule, p.message)
                for p in validate_value(value, declared.schema, path=key)
            ]
    if problems:
        raise ValidationFailed(f"the relationship does not match {name!r}", problems)
    document_out = {
        "$relationshipId": relationship_id,
        "$etag": docs.new_etag(),
        "$sourceId": source_id,
        "$relationshipName": name,
        "$targetId": target_id,
        **properties,
    }
    return RelationshipRecord(
        relationship_id,
        source_id,
        target_id,
        name,
        document_out,
        docs.encode(document_out),
        relationship.max_multiplicity,
    )
