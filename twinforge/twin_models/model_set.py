"""A parsed, linked set of DTDL models, and how the parser's nodes become typed elements."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

from twinforge.twin_models import elements as el
from twinforge.twin_models import standard
from twinforge.twin_models.dtmi import local_name, major_version
from twinforge.twin_models.metamodel import ClassInfo, language
from twinforge.twin_models.nodes import Node

# Python attribute for each DTDL property term, where the names differ.
_ATTRIBUTES = {
    "displayName": "display_name",
    "elementSchema": "element_schema",
    "valueSchema": "value_schema",
    "enumValues": "enum_values",
    "enumValue": "enum_value",
    "mapKey": "map_key",
    "mapValue": "map_value",
    "commandType": "command_type",
    "minMultiplicity": "min_multiplicity",
    "maxMultiplicity": "max_multiplicity",
    "contents": "own_contents",
}
_PLURAL = {"own_contents", "extends", "schemas", "fields", "enum_values", "properties"}
_SCALAR_REFERENCES = {"target", "command_type"}


class ModelSet(Mapping[str, el.Entity]):
    """Every element of the parsed models by DTMI (nested and standard ones included)."""

    def __init__(self, elements: dict[str, el.Entity], roots: list[str]) -> None:
        self._elements = elements
        self.roots = roots
        self.interfaces: dict[str, el.Interface] = {
            k: v for k, v in elements.items() if isinstance(v, el.Interface)
        }

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/copy work when compiled with mypyc too
        return ModelSet, (self._elements, self.roots)

    def __getitem__(self, dtmi: str) -> el.Entity:
        return self._elements[dtmi]

    def __iter__(self) -> Iterator[str]:
        return iter(self._elements)

    def __len__(self) -> int:
        return len(self._elements)

    def interface(self, dtmi: str) -> el.Interface:
        """The Interface ``dtmi``; ``KeyError`` naming it when there is none."""
        try:
            return self.interfaces[dtmi]
        except KeyError:
            raise KeyError(f"no Interface {dtmi} in the model set") from None


def build_model_set(nodes: dict[str, Node], roots: list[Node]) -> ModelSet:
    """Turn checked parser nodes into linked, typed elements."""
    elements: dict[str, el.Entity] = {}
    for node in nodes.values():
        cls = el.ELEMENT_CLASSES.get(node.cls.term, el.Entity)
        elements[node.id] = cls(id=node.id, dtdl_version=node.version)

    def lookup(target: str) -> el.Entity:
        found = elements.get(target)
        if found is None:
            found = elements[target] = _standard_element(target)
        return found

    for node in nodes.values():
        _fill(elements[node.id], node, lookup)
    for entity in elements.values():
        if isinstance(entity, el.Interface):
            entity.contents = _inherited_contents(entity)
    return ModelSet(elements, [r.id for r in roots])


def _standard_element(target: str) -> el.Entity:
    dtdl_version = major_version(target) or 0
    if standard.primitive_name(target) is not None:
        return el.PrimitiveSchema(id=target, dtdl_version=dtdl_version, name=local_name(target))
    return el.EnumValue(id=target, dtdl_version=dtdl_version, name=local_name(target))


# How a property's values become an attribute (see _fill_plan).
_SKIP, _LANG, _ONE, _MANY, _REF, _REFS, _COMMAND_TYPE = range(7)


@cache
def _fill_plan(cls: ClassInfo, version: int, entity_type: type) -> dict[str, tuple[str, int]]:
    """For each core property of ``cls``: the attribute and how to fill it."""
    fields = {f.name for f in dataclasses.fields(entity_type)}
    plan: dict[str, tuple[str, int]] = {}
    for current in language(version).chain(cls):
        for term, constraint in current.own.items():
            attribute = _ATTRIBUTES.get(term, term)
            if term in plan:
                continue
            plural = attribute in _PLURAL
            if attribute not in fields:
                how = _SKIP
            elif constraint.datatype == "rdf:langString":
                how = _LANG
            elif attribute == "command_type":
                how = _COMMAND_TYPE
            elif (
                constraint.datatype
                or constraint.node_kind == "Literal"
                or attribute in _SCALAR_REFERENCES
            ):
                how = _MANY if plural else _ONE
            else:
                how = _REFS if plural else _REF
            plan[term] = (attribute, how)
    return plan


def _fill(entity: el.Entity, node: Node, lookup: Callable[[str], el.Entity]) -> None:
    entity.defined_in = node.partition.id if node.partition else None
    entity.child_of = node.parent.id if node.parent else None
    if node.cotypes:
        entity.supplemental_types = [c.term for c in node.cotypes]
    if node.undefined_cotypes:
        entity.undefined_types = list(node.undefined_cotypes)
        entity.undefined_properties = dict(node.undefined_properties)
    plan = _fill_plan(node.cls, node.version, type(entity))  # type: ignore[arg-type]
    for term, values in node.values.items():
        found = plan.get(term)
        if found is None:
            entity.supplemental_properties[term] = values[0] if len(values) == 1 else list(values)
            continue
        attribute, how = found
        if how == _REF:
            setattr(entity, attribute, lookup(values[0]) if values else None)
        elif how == _ONE:
            setattr(entity, attribute, values[0] if values else None)
        elif how == _LANG:
            setattr(entity, attribute, dict(values[0]) if values else {})
        elif how == _REFS:
            setattr(entity, attribute, [lookup(v) for v in values])
        elif how == _MANY:
            setattr(entity, attribute, list(values))
        elif how == _COMMAND_TYPE and values:
            setattr(entity, attribute, local_name(str(lookup(values[0]))))


def _inherited_contents(interface: el.Interface) -> dict[str, el.Content]:
    contents: dict[str, el.Content] = {}
    stack = [interface]
    seen: set[str] = set()
    while stack:
        current = stack.pop(0)
        if current.id in seen:
            continue
        seen.add(current.id)
        for content in current.own_contents:
            contents.setdefault(content.name, content)
        stack.extend(current.extends)
    return contents
