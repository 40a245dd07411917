"""Rules that span elements, checked once every document is parsed.

References must name elements of the right class (and, unless the target is an Interface,
one defined in the same Interface); ``extends`` may not loop or run too deep; names must
be unique among an Interface's contents, inherited ones included; complex schemas may not
nest beyond the version's depth; Components may not nest; enum values must match the
enum's value schema; a ValueAnnotation (and the like) must name a sibling of the right
class.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from twinforge.twin_models import standard
from twinforge.twin_models.dtmi import local_name, major_version
from twinforge.twin_models.errors import ParsingError, parsing_error
from twinforge.twin_models.metamodel import (
    ClassInfo,
    Constraint,
    Descendants,
    SiblingRule,
    language,
)
from twinforge.twin_models.nodes import Node, Reference


def check_model(
    nodes: dict[str, Node],
    roots: list[Node],
    references: list[Reference],
    errors: list[ParsingError],
) -> None:
    _check_references(nodes, references, errors)
    if errors:
        return
    size = len(nodes) + len(references)
    looping_terms = {r.term for r in references if r.target in nodes}
    for node in nodes.values():
        for rule in _descendant_rules(node.cls, node.version):
            if not _cannot_fail(rule, size, looping_terms):
                _check_descendants(node, rule, nodes, errors)
    if errors:
        return
    scope_memo: dict[str, dict[str, str]] = {}
    for node in nodes.values():
        _check_unique(node, nodes, errors, scope_memo)
        if node.cls.term == "Enum":
            _check_enum_values(node, nodes, errors)
        for cls in (node.cls, *node.cotypes):
            for sibling_rule in cls.siblings:
                _check_sibling(node, sibling_rule, nodes, errors)
            for constraint in _sibling_constraints(cls):
                _check_among_siblings(node, cls, constraint, nodes, errors)


@cache
def _sibling_constraints(cls: ClassInfo) -> tuple[Constraint, ...]:
    return tuple(c for c in cls.own.values() if c.unique_value or c.term.startswith("^"))


def _siblings(node: Node, nodes: dict[str, Node]) -> Iterator[Node]:
    """The other elements of the property (of the same parent) that holds ``node``."""
    if node.parent is None or node.parent_property is None:
        return
    for sibling_id in node.parent.values.get(node.parent_property, ()):
        sibling = nodes.get(sibling_id) if isinstance(sibling_id, str) else None
        if sibling is not None and sibling is not node:
            yield sibling


def _check_among_siblings(
    node: Node,
    cls: ClassInfo,
    constraint: Constraint,
    nodes: dict[str, Node],
    errors: list[ParsingError],
) -> None:
    """Extension rules on an element's siblings: a ``uniqueValue`` property (mqtt's
    ``index``) differs from theirs; an inverse-path rule (mqtt's NormalResult) wants the
    parent of the right class and, with ``onlyOne``, no sibling of ``cls`` too."""
    if constraint.unique_value:
        value = node.first(constraint.term)
        # Reported once for a group: on each but the one whose id sorts first.
        first = min(
            [node.id, *(s.id for s in _siblings(node, nodes) if s.first(constraint.term) == value)]
        )
        if value is not None and first != node.id:
            _error(
                errors,
                node,
                "duplicateValue",
                f"'{constraint.term}' {value!r} is already used by {first}:"
                f" it must be unique among the {node.parent_property} of its parent",
                f"Give each a different {constraint.term}.",
                property=constraint.term,
                value=value,
            )
        return
    holder = constraint.term.removeprefix("^")
    parent = node.parent
    if (
        parent is None
        or node.parent_property != holder
        or not any(parent.is_a(c) for c in constraint.classes)
    ):
        _error(
            errors,
            node,
            "misplacedCotype",
            f"a {cls.term} may only be in the {holder} of a {' or '.join(constraint.classes)}",
            f"Remove the {cls.term} co-type, or co-type its parent"
            f" {' or '.join(constraint.classes)}.",
        )
    elif constraint.only_one:
        # Reported once for a group: on each but the one whose id sorts first.
        first = min([node.id, *(s.id for s in _siblings(node, nodes) if s.is_a(cls.term))])
        if first != node.id:
            _error(
                errors,
                node,
                "duplicateCotype",
                f"{first} is a {cls.term} already: at most one of the {holder} of"
                f" {parent.id} may be",
                f"Keep one {cls.term}.",
            )


def _check_sibling(
    node: Node, rule: SiblingRule, nodes: dict[str, Node], errors: list[ParsingError]
) -> None:
    """``node``'s ``rule.keyref`` must name a sibling (an element of the same property
    of the same parent) of the rule's classes."""
    wanted = node.first(rule.keyref)
    if not isinstance(wanted, str) or node.parent is None or node.parent_property is None:
        return  # a missing or mistyped value is the property constraint's to report
    for sibling in _siblings(node, nodes):
        if sibling.first(rule.key) != wanted:
            continue
        if any(sibling.is_a(c) for c in rule.classes) and not any(
            sibling.is_a(c) for c in rule.excluded
        ):
            return
        _error(
            errors,
            node,
            "siblingWrongType",
            f"'{rule.keyref}' names {wanted!r}, which must be a"
            f" {' or '.join(rule.classes)}"
            + (f" and not a {' or '.join(rule.excluded)}" if rule.excluded else ""),
            f"Name a {' or '.join(rule.classes)} of the same {node.parent.cls.term}.",
            property=rule.keyref,
            value=wanted,
        )
        return
    _error(
        errors,
        node,
        "siblingNotFound",
        f"'{rule.keyref}' names {wanted!r}, but no element of the same"
        f" {node.parent.cls.term}'s {node.parent_property} has that {rule.key}",
        f"Name a {' or '.join(rule.classes)} of the same {node.parent.cls.term}.",
        property=rule.keyref,
        value=wanted,
    )


def _error(
    errors: list[ParsingError], node: Node, rule: str, cause: str, action: str, **where: object
) -> None:
    errors.append(
        parsing_error(rule, cause, action, primary_id=node.id, document=node.document, **where)
    )


def _target_class(target: str, nodes: dict[str, Node]) -> ClassInfo | None:
    node = nodes.get(target)
    if node is not None:
        return node.cls
    term = standard.standard_class(target)
    if term is None:
        return None
    version = major_version(target)
    return language(version if version in (2, 3, 4) else 4).by_term.get(term)


def _check_references(
    nodes: dict[str, Node], references: list[Reference], errors: list[ParsingError]
) -> None:
    for ref in references:
        source = ref.source
        target_cls = _target_class(ref.target, nodes)
        if target_cls is None:
            continue
        lang = language(target_cls.version)
        for constraint in ref.constraints:
            if not lang.conforms(target_cls, constraint):
                _error(
                    errors,
                    source,
                    "invalidReferenceType",
                    f"property {ref.term!r} refers to {ref.target}, which is not a {' or '.join(constraint.classes)}",
                    f"Refer to a {' or '.join(constraint.classes)}.",
                    property=ref.term,
                    value=ref.target,
                )
                break
            if constraint.child_of and not _is_child_of(
                ref.target, constraint.child_of, source.version
            ):
                _error(
                    errors,
                    source,
                    "invalidPropertyValue",
                    f"property {ref.term!r} value {ref.target.rsplit(':', 1)[-1]} is not a {constraint.child_of}",
                    f"Use a {constraint.child_of} value.",
                    property=ref.term,
                    value=ref.target,
                )
                break
        target = nodes.get(ref.target)
        if (
            target is not None
            and not target.cls.partition
            and target.partition is not source.partition
        ):
            _error(
                errors,
                source,
                "nonReferenceableTarget",
                f"{ref.target} is defined inside another Interface and cannot be referenced from here",
                "Define the element at the top level or inside this Interface's schemas.",
                property=ref.term,
                value=ref.target,
            )


def _is_child_of(target: str, enum_term: str, version: int) -> bool:
    """True when ``target`` is a value of the standard enum ``enum_term`` (a unit table).

    DTDL v2 units (dtmi:standard:unit:X;2) are matched by name against the same tables.
    """
    name = local_name(target)
    v2_unit = target.startswith("dtmi:standard:unit:")
    for v in (3, 4):
        for ext in language(v).extensions.values():
            values = ext.enum_values.get(enum_term)
            if values is not None and (target in values or (v2_unit and name in values.values())):
                return True
    return False


def _edges(
    node: Node, rule: Descendants, nodes: dict[str, Node]
) -> Iterator[tuple[str, str, Node | None]]:
    """(property, target DTMI, child) below ``node``; child None for a standard element."""
    for term, value in node.links:
        if rule.narrow and term not in rule.properties:
            continue
        child = nodes.get(value)
        if child is not None or standard.is_standard(value):
            yield term, value, child


def _cannot_fail(rule: Descendants, size: int, looping_terms: set[str]) -> bool:
    """True for a count limit that a set of ``size`` elements cannot reach, when the rule's
    properties cannot lead back to where they started either: nested elements form trees,
    so only a reference (by a property in ``looping_terms``) to a parsed element closes a
    cycle."""
    if rule.datatype_property:
        return True  # enum value datatypes are checked by _check_enum_values
    if rule.max_depth is not None or rule.exclude_type:
        return False
    if rule.max_count is None or size > rule.max_count:
        return False
    return rule.allow_self or (rule.narrow and looping_terms.isdisjoint(rule.properties))


def _check_descendants(
    root: Node, rule: Descendants, nodes: dict[str, Node], errors: list[ParsingError]
) -> None:
    seen: set[str] = set()
    # (node, depth along counted properties, path of ids on the stack)
    stack: list[tuple[Node, int, frozenset[str]]] = [(root, 0, frozenset({root.id}))]
    while stack:
        node, depth, path = stack.pop()
        for term, target, child in _edges(node, rule, nodes):
            counted = term in rule.properties
            child_depth = depth + (1 if counted else 0)
            if rule.max_depth is not None and child_depth > rule.max_depth:
                _error(
                    errors,
                    root,
                    "excessiveDepth",
                    f"{root.id} nests {', '.join(rule.properties)} more than {rule.max_depth} levels deep",
                    "Flatten the structure.",
                )
                return
            if child is None:
                if rule.exclude_type == "Array" and counted and standard.contains_array(target):
                    _error(
                        errors,
                        root,
                        "excludedType",
                        f"a {root.cls.term} may not use {target}, a schema built from arrays",
                        "Use another schema.",
                        property=term,
                    )
                    return
                continue
            if child.id in path:
                if child.id == root.id and not rule.allow_self and counted:
                    _error(
                        errors,
                        root,
                        "recursiveStructure",
                        f"{root.id} refers back to itself through {', '.join(rule.properties)}",
                        "Break the cycle.",
                        property=term,
                    )
                    return
                continue
            if rule.exclude_type and child.is_a(rule.exclude_type) and counted:
                _error(
                    errors,
                    root,
                    "excludedType",
                    f"a {rule.exclude_type} may not appear under a {root.cls.term} (found {child.id})",
                    f"Remove the {rule.exclude_type}.",
                    property=term,
                )
                return
            if counted:
                seen.add(child.id)
            if rule.max_count is not None and len(seen) > rule.max_count:
                _error(
                    errors,
                    root,
                    "excessiveCount",
                    f"{root.id} has more than {rule.max_count} elements through {', '.join(rule.properties)}",
                    "Split the model.",
                )
                return
            stack.append((child, child_depth, path | {child.id}))


def _names_in_scope(
    node: Node, nodes: dict[str, Node], memo: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Content name -> content id over an Interface and everything it extends (memoized:
    extends chains share their ancestors' tables). Raises ``_NameClash`` on a clash."""
    found = memo.get(node.id)
    if found is not None:
        return found
    found = {}
    for parent_id in node.values.get("extends", ()):
        parent = nodes.get(parent_id)
        if parent is None:
            continue
        inherited = _names_in_scope(parent, nodes, memo)
        for name in found.keys() & inherited.keys():
            if found[name] != inherited[name]:
                raise _NameClash(name)
        found.update(inherited)
    for content_id in node.values.get("contents", ()):
        child = nodes.get(content_id)
        content_name = child.first("name") if child is not None else None
        if isinstance(content_name, str):
            if found.get(content_name, content_id) != content_id:
                raise _NameClash(content_name)
            found[content_name] = content_id
    memo[node.id] = found
    return found


class _NameClash(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


@cache
def _unique_rules(cls: ClassInfo, version: int) -> tuple[tuple[str, Constraint], ...]:
    rules: dict[str, Constraint] = {}
    for current in language(version).chain(cls):
        for term, constraint in current.own.items():
            if constraint.unique_properties and term not in rules:
                rules[term] = constraint
    return tuple(rules.items())


@cache
def _descendant_rules(cls: ClassInfo, version: int) -> tuple[Descendants, ...]:
    return tuple(rule for current in language(version).chain(cls) for rule in current.descendants)


def _check_unique(
    node: Node,
    nodes: dict[str, Node],
    errors: list[ParsingError],
    scope_memo: dict[str, dict[str, str]],
) -> None:
    for term, constraint in _unique_rules(node.cls, node.version):
        if term not in node.values:
            continue
        if term == "contents" and "extends" in node.values:
            try:
                _names_in_scope(node, nodes, scope_memo)
            except _NameClash as clash:
                _error(
                    errors,
                    node,
                    "nonUniquePropertyValue",
                    f"name {clash.name!r} is used by more than one element of 'contents', inherited ones included",
                    "Give each content, inherited ones included, its own name.",
                    property=term,
                    value=clash.name,
                )
                return
            continue
        members = [nodes[i] for i in node.values[term] if isinstance(i, str) and i in nodes]
        for unique in constraint.unique_properties:
            seen: dict[object, str] = {}
            for member in members:
                value = member.first(unique)
                if value is None:
                    continue
                key = (type(value).__name__, value) if not isinstance(value, dict) else None
                if key is None:
                    continue
                if key in seen and seen[key] != member.id:
                    _error(
                        errors,
                        node,
                        "nonUniquePropertyValue",
                        f"{unique} {value!r} is used by more than one element of {term!r}",
                        f"Give each element of {term!r} its own {unique}.",
                        property=term,
                        value=value,
                    )
                    return
                seen[key] = member.id


def _check_enum_values(node: Node, nodes: dict[str, Node], errors: list[ParsingError]) -> None:
    value_schema = node.first("valueSchema")
    kind = standard.primitive_name(value_schema) if isinstance(value_schema, str) else None
    for value_id in node.values.get("enumValues", []):
        member = nodes.get(value_id)
        if member is None:
            continue
        value = member.first("enumValue")
        ok = (
            (kind == "integer" and isinstance(value, int) and not isinstance(value, bool))
            or (kind == "string" and isinstance(value, str))
            or kind not in ("integer", "string")
        )
        if not ok:
            _error(
                errors,
                node,
                "invalidEnumValue",
                f"enum value {value!r} of {member.first('name')!r} is not a {kind} as valueSchema requires",
                f"Make every enumValue a {kind}.",
                property="enumValues",
                value=value,
            )
            return
