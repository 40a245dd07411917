"""The DTDL metamodel, read from the official RDF/SHACL files shipped in ``metamodel/``.

The parser is driven by this data rather than by hand-written rules per element: each class
knows its superclasses, its properties and their SHACL constraints, so that v2, v3, v4 and
every feature extension share one interpreter. Classes are compared by their term (the
class name without version) because DTDL v3 and v4 accept elements of earlier versions
wherever they accept their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from twinforge.twin_models.dtmi import local_name

DTDL_VERSIONS = (2, 3, 4)
_DATA = resources.files(__package__) / "metamodel"


@dataclass(slots=True, eq=False)
class Constraint:
    """The SHACL constraints one class puts on one property."""

    term: str
    iri: str
    min_count: int | None = None
    max_count: int | None = None
    classes: tuple[str, ...] = ()  # class terms, any of which satisfies the constraint
    class_iris: tuple[str, ...] = ()  # the same classes with their DTDL versions
    exact_version: bool = True  # core constraints name versions; extension ones apply to all
    datatype: str | None = None
    node_kind: str | None = None  # "Literal" | "IRI" | "BlankNodeOrIRI"
    pattern: re.Pattern[str] | None = None
    pattern_desc: str | None = None
    max_length: int | None = None
    min_inclusive: int | None = None
    max_inclusive: int | None = None
    in_values: frozenset[str] | None = None  # versionless instance ids
    unique_properties: tuple[str, ...] = ()
    dtmi_segment: str | None = None
    type_inferable: bool = False
    child_of: str | None = None  # enum term whose values this property must take
    unique_value: bool = False  # no sibling (same parent and property) has the same value
    only_one: bool = False  # on an inverse path: no sibling has this class too


@dataclass(slots=True)
class Descendants:
    """A rule on the elements reachable through ``properties`` (depth, count, types)."""

    properties: tuple[str, ...]
    max_depth: int | None = None
    max_count: int | None = None
    exclude_type: str | None = None
    narrow: bool = False
    allow_self: bool = False
    datatype_property: str | None = None


@dataclass(slots=True)
class SiblingRule:
    """``keyref`` names a sibling element (by its ``key``) that must be one of ``classes``
    and none of ``excluded``: ValueAnnotation's ``annotates`` names a Property or
    Telemetry of the same Interface."""

    key: str
    keyref: str
    classes: tuple[str, ...]
    excluded: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class ClassInfo:
    iri: str
    term: str
    version: int
    abstract: bool = False
    material: bool = False
    partition: bool = False
    supers: list[str] = field(default_factory=list)  # superclass IRIs
    own: dict[str, Constraint] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()  # for adjunct/semantic types: the classes they may cotype
    requires_cotypes: tuple[str, ...] = ()
    excludes_cotypes: tuple[str, ...] = ()
    identifier_max_length: int | None = None
    descendants: list[Descendants] = field(default_factory=list)
    siblings: list[SiblingRule] = field(default_factory=list)
    extension: str | None = None  # context DTMI of the extension that defines it


@dataclass(slots=True)
class Extension:
    """A feature or limit extension named in ``@context`` (e.g. quantitativeTypes;1)."""

    context_id: str
    dtdl_version: int
    terms: dict[str, str]
    classes: list[str]
    is_limit: bool = False
    global_overrides: dict[str, Any] = field(default_factory=dict)
    class_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    enum_values: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # enum term -> {value iri: name}


@dataclass(slots=True)
class Globals:
    identifier_pattern: re.Pattern[str]
    identifier_max_length: int
    reserved_prefixes: tuple[str, ...]
    restrict_keywords: bool
    always_allow_cotype: frozenset[str]
    always_allow_property: frozenset[str]
    never_allow_cotype: frozenset[str]
    never_allow_property: frozenset[str]


@dataclass(slots=True)
class Language:
    """Everything the parser knows about one DTDL version and its extensions."""

    version: int
    context_id: str
    terms: dict[str, str]  # term -> IRI (core context)
    term_props: dict[str, dict[str, Any]]  # term -> JSON-LD term definition
    classes: dict[str, ClassInfo]  # by IRI
    by_term: dict[str, ClassInfo]  # core classes by term
    globals: Globals
    instances: dict[str, str]  # instance IRI -> class term (e.g. double;4 -> Double)
    extensions: dict[str, Extension]  # by context id

    def conforms(self, cls: ClassInfo, constraint: Constraint) -> bool:
        """True when an element of class ``cls`` satisfies ``constraint``'s class list."""
        return _conforms(self.version, cls, constraint)

    def subclass_of(self, cls: ClassInfo, target: str) -> bool:
        """True when ``cls`` is ``target`` (a term) or derives from it."""
        return target in self.ancestry(cls)

    def ancestry(self, cls: ClassInfo) -> frozenset[str]:
        """The terms of ``cls`` and all its superclasses."""
        return _ancestry(self.version, cls.iri)

    def chain(self, cls: ClassInfo) -> tuple[ClassInfo, ...]:
        """``cls`` and its superclasses, nearest first."""
        return _chain(self.version, cls.iri)


def _load(path: str) -> Any:
    return json.loads((_DATA / path).read_text(encoding="utf-8-sig"))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _versionless(iri: str) -> str:
    return iri.split(";", 1)[0]


def _shape_class_iris(node: dict[str, Any], resolve) -> tuple[str, ...]:
    """Class IRIs from ``sh:class`` or ``sh:or`` [{sh:class}] in a SHACL node."""
    found = [resolve(c) for c in _as_list(node.get("sh:class"))]
    for alt in _as_list(node.get("sh:or")):
        found += [resolve(c) for c in _as_list(alt.get("sh:class"))]
    return tuple(dict.fromkeys(found))


def _shape_classes(node: dict[str, Any], resolve) -> tuple[str, ...]:
    """Class terms from ``sh:class`` or ``sh:or`` [{sh:class}] in a SHACL node."""
    return tuple(dict.fromkeys(local_name(c) for c in _shape_class_iris(node, resolve)))


def _constraint(prop: dict[str, Any], resolve, term_of_iri, exact_version: bool) -> Constraint:
    path = prop["sh:path"]
    if isinstance(path, dict):  # inverse paths (mqtt onlyOne) are not property constraints
        path = "^" + path["sh:inversePath"]
        iri, term = path, path
    else:
        iri = resolve(path)
        term = term_of_iri(iri)
    pattern = prop.get("sh:pattern")
    in_values = prop.get("sh:in")
    return Constraint(
        term=term,
        iri=iri,
        min_count=prop.get("sh:minCount"),
        max_count=prop.get("sh:maxCount"),
        classes=_shape_classes(prop, resolve),
        class_iris=_shape_class_iris(prop, resolve),
        exact_version=exact_version,
        datatype=prop.get("sh:datatype"),
        node_kind=(prop.get("sh:nodeKind") or "").removeprefix("sh:") or None,
        pattern=re.compile(pattern) if pattern else None,
        pattern_desc=(prop.get("dtmm:patternDesc") or {}).get("en-US"),
        max_length=prop.get("sh:maxLength"),
        min_inclusive=prop.get("sh:minInclusive"),
        max_inclusive=prop.get("sh:maxInclusive"),
        in_values=frozenset(_versionless(resolve(v)) for v in in_values) if in_values else None,
        unique_properties=tuple(
            term_of_iri(resolve(p)) for p in _as_list(prop.get("dtmm:uniqueProperties"))
        ),
        dtmi_segment=term_of_iri(resolve(prop["dtmm:dtmiSegment"]))
        if "dtmm:dtmiSegment" in prop
        else None,
        type_inferable=bool(prop.get("dtmm:typeInferable")),
        unique_value=bool(prop.get("dtmm:uniqueValue")),
        only_one=bool(prop.get("dtmm:onlyOne")),
        child_of=local_name(resolve(prop["dtmm:childOf"])) if "dtmm:childOf" in prop else None,
    )


def _descendants(node: dict[str, Any], resolve, term_of_iri) -> Descendants:
    return Descendants(
        properties=tuple(term_of_iri(resolve(p)) for p in _as_list(node.get("dtmm:properties"))),
        max_depth=node.get("dtmm:maxDepth"),
        max_count=node.get("dtmm:maxCount"),
        exclude_type=node.get("dtmm:excludeType"),
        narrow=bool(node.get("dtmm:narrow")),
        allow_self=bool(node.get("dtmm:allowSelf")),
        datatype_property=term_of_iri(resolve(node["dtmm:datatypeProperty"]))
        if "dtmm:datatypeProperty" in node
        else None,
    )


def _sibling_rule(node: dict[str, Any], resolve, term_of_iri) -> SiblingRule:
    excluded = _as_list(node.get("sh:not"))
    return SiblingRule(
        key=term_of_iri(resolve(node["dtmm:keyProperty"])),
        keyref=term_of_iri(resolve(node["dtmm:keyrefProperty"])),
        classes=_shape_classes(node, resolve),
        excluded=tuple(
            local_name(resolve(e["sh:class"]))
            for e in excluded
            if isinstance(e, dict) and "sh:class" in e
        ),
    )


def _context_terms(context: dict[str, Any]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    terms: dict[str, str] = {}
    defs: dict[str, dict[str, Any]] = {}
    for key, value in context.items():
        iri = value.get("@id") if isinstance(value, dict) else value
        if isinstance(iri, str) and iri.startswith("dtmi:") and ":" not in key:
            terms[key] = iri
            defs[key] = value if isinstance(value, dict) else {"@id": value}
    return terms, defs


# The extension and limit files of each DTDL version: context DTMI -> file stem.
_EXTENSIONS: dict[int, dict[str, str]] = {
    2: {"dtmi:iotcentral:context;2": "DTDL.v2.PartnerExtension.iotcentral"},
    3: {
        f"dtmi:dtdl:extension:{name};1": f"DTDL.FeatureExtension.{name}.v1"
        for name in ("quantitativeTypes", "historization", "annotation", "overriding", "mqtt")
    },
    4: {
        **{
            f"dtmi:dtdl:extension:{name};2": f"DTDL.FeatureExtension.{name}.v2"
            for name in ("quantitativeTypes", "historization", "annotation", "overriding", "mqtt")
        },
        "dtmi:dtdl:extension:mqtt;3": "DTDL.FeatureExtension.mqtt.v3",
        "dtmi:dtdl:extension:requirement;1": "DTDL.FeatureExtension.requirement.v1",
        "dtmi:dtdl:limits:onvif;1": "DTDL.LimitExtension.onvif.v1",
    },
}
_CONTEXT_FILES = {"dtmi:iotcentral:context;2": "v2/DTDL.v2.iotcentral.context.json"}


class _Builder:
    """Reads the SHACL graphs of one DTDL version into :class:`Language`."""

    def __init__(self, version: int) -> None:
        self.version = version
        core_context = _load(f"v{version}/DTDL.v{version}.context.json")
        self.terms, self.term_props = _context_terms(core_context)
        self.iri_to_term = {iri: term for term, iri in self.terms.items()}
        self.classes: dict[str, ClassInfo] = {}

    def resolver(self, extra_terms: dict[str, str]):
        def resolve(value: str) -> str:
            return extra_terms.get(value) or self.terms.get(value) or value

        return resolve

    def term_of_iri(self, iri: str) -> str:
        if iri in self.iri_to_term:
            return self.iri_to_term[iri]
        return local_name(iri)

    def read_graph(self, graph: list[dict[str, Any]], resolve, extension: str | None) -> list[str]:
        added: list[str] = []
        for node in graph:
            types = _as_list(node.get("@type"))
            if "rdfs:Class" not in types:
                continue
            iri = resolve(node["@id"])
            info = ClassInfo(
                iri=iri,
                term=self.term_of_iri(iri),
                version=node.get("dtmm:dtdlVersion", self.version),
                abstract="dtmm:Abstract" in types,
                material="dtmm:Material" in types,
                partition="dtmm:Partition" in types,
                supers=[resolve(s) for s in _as_list(node.get("rdfs:subClassOf"))],
                hosts=_shape_classes({"sh:or": node.get("sh:or")}, resolve),
                requires_cotypes=_shape_classes({"sh:or": node.get("sh:and")}, resolve),
                excludes_cotypes=tuple(
                    local_name(resolve(c["sh:class"]))
                    for c in _as_list(node.get("sh:not"))
                    if "sh:class" in c
                ),
                extension=extension,
            )
            for prop in _as_list(node.get("sh:property")):
                constraint = _constraint(prop, resolve, self.term_of_iri, extension is None)
                info.own[constraint.term] = constraint
            identifier = node.get("dtmm:identifier") or {}
            info.identifier_max_length = identifier.get("sh:maxLength")
            info.descendants = [
                _descendants(d, resolve, self.term_of_iri)
                for d in _as_list(node.get("dtmm:descendants"))
            ]
            info.siblings = [
                _sibling_rule(r, resolve, self.term_of_iri)
                for r in _as_list(node.get("dtmm:siblings"))
                # Rules on a path of the sibling (overriding's overrides and schema) are
                # not read: only the sibling's class is checked.
                if "dtmm:path" not in r and ("sh:or" in r or "sh:class" in r)
            ]
            self.classes[iri] = info
            added.append(iri)
        return added

    def build(self) -> Language:
        version = self.version
        shacl = _load(f"v{version}/DTDL.v{version}.ModelRDF-SHACL.json")
        self.read_graph(shacl["@graph"], self.resolver({}), None)
        glob = next(n for n in shacl["@graph"] if "dtmm:Global" in _as_list(n.get("@type")))
        apocrypha = glob.get("dtmm:apocrypha") or {}
        always = apocrypha.get("dtmm:alwaysAllow") or {}
        never = apocrypha.get("dtmm:neverAllow") or {}
        ident = glob["dtmm:identifier"]
        globals_ = Globals(
            identifier_pattern=re.compile(ident["sh:pattern"]),
            identifier_max_length=ident["sh:maxLength"],
            reserved_prefixes=tuple(ident["dtmm:reservedPrefix"]),
            restrict_keywords=glob["dtmm:restrictKeywords"],
            always_allow_cotype=frozenset(
                x.removeprefix("dtmm:") for x in _as_list(always.get("dtmm:asCotype"))
            ),
            always_allow_property=frozenset(
                x.removeprefix("dtmm:") for x in _as_list(always.get("dtmm:asProperty"))
            ),
            never_allow_cotype=frozenset(
                x.removeprefix("dtmm:") for x in _as_list(never.get("dtmm:asCotype"))
            ),
            never_allow_property=frozenset(
                x.removeprefix("dtmm:") for x in _as_list(never.get("dtmm:asProperty"))
            ),
        )
        instances = {}
        for element in _load(f"v{version}/DTDL.v{version}.ModelElements.json"):
            types = [t for t in _as_list(element["@type"]) if t != "Alias"]
            instances[element["@id"]] = types[0]
        extensions = {ctx: self._extension(ctx, stem) for ctx, stem in _EXTENSIONS[version].items()}
        if version == 2:
            self._v2_semantic_types()
        by_term = {c.term: c for c in self.classes.values() if c.extension is None}
        return Language(
            version=version,
            context_id=f"dtmi:dtdl:context;{version}",
            terms=self.terms,
            term_props=self.term_props,
            classes=self.classes,
            by_term=by_term,
            globals=globals_,
            instances=instances,
            extensions=extensions,
        )

    def _v2_semantic_types(self) -> None:
        """DTDL v2's semantic types (Temperature, ...) and their unit tables.

        v2 defines them in its context and specification text only; the tables are the
        ones DTDL v3 moved into the quantitativeTypes extension, whose metamodel we read.
        """
        v3 = language(3)
        quantitative = v3.extensions["dtmi:dtdl:extension:quantitativeTypes;1"]
        unit_enum = {}
        for iri in quantitative.classes:
            unit = v3.classes[iri].own.get("unit")
            if unit is not None and unit.child_of:
                unit_enum[v3.classes[iri].term] = unit.child_of
        for term, iri in self.terms.items():
            if not iri.startswith("dtmi:standard:class:") or term not in unit_enum:
                continue
            self.classes[iri] = ClassInfo(
                iri=iri,
                term=term,
                version=2,
                supers=[self.terms["SemanticType"]],
                own={
                    "unit": Constraint(
                        term="unit",
                        iri=self.terms["unit"],
                        min_count=1,
                        max_count=1,
                        classes=("Unit",),
                        node_kind="IRI",
                        child_of=unit_enum[term],
                        exact_version=False,
                    ),
                    "schema": Constraint(
                        term="schema",
                        iri=self.terms["schema"],
                        classes=("NumericSchema",),
                        exact_version=False,
                    ),
                },
            )

    def _extension(self, context_id: str, stem: str) -> Extension:
        folder = f"v{self.version}"
        context_file = _CONTEXT_FILES.get(context_id, f"{folder}/{stem}.context.json")
        try:
            ext_terms, _ = _context_terms(_load(context_file))
        except FileNotFoundError:
            ext_terms = {}
        shacl = _load(f"{folder}/{stem}.RDF-SHACL.json")
        # Extension files name classes of other extensions they build on (overriding uses
        # annotation): resolve with every term their own @context lists.
        extra = dict(ext_terms)
        for ctx in _as_list(shacl.get("@context"))[1:]:
            other = _EXTENSIONS[self.version].get(ctx)
            if other and ctx != context_id:
                extra.update(
                    {
                        k: v
                        for k, v in _context_terms(_load(f"{folder}/{other}.context.json"))[
                            0
                        ].items()
                        if k not in extra
                    }
                )
        resolve = self.resolver(extra)
        is_limit = ":limits:" in context_id
        ext = Extension(
            context_id=context_id,
            dtdl_version=self.version,
            terms=ext_terms,
            classes=[],
            is_limit=is_limit,
        )
        if is_limit:
            for node in shacl["@graph"]:
                if "dtmm:Global" in _as_list(node.get("@type")):
                    ext.global_overrides = node
                elif node.get("@id", "").startswith("dtmi:dtdl:class:"):
                    ext.class_overrides[local_name(node["@id"])] = node
            return ext
        ext.classes = self.read_graph(shacl["@graph"], resolve, context_id)
        elements = _DATA / folder / f"{stem}.Elements.json"
        if elements.is_file():
            for enum in json.loads(elements.read_text(encoding="utf-8-sig")):
                values = {v["@id"]: v["name"] for v in _as_list(enum.get("enumValues"))}
                ext.enum_values[local_name(enum["@id"])] = values
        return ext


@cache
def language(version: int) -> Language:
    """The metamodel of DTDL ``version`` (2, 3 or 4), loaded once."""
    if version not in DTDL_VERSIONS:
        raise ValueError(f"DTDL version {version} is not supported (supported: 2, 3, 4)")
    return _Builder(version).build()


@cache
def _conforms(version: int, cls: ClassInfo, constraint: Constraint) -> bool:
    if not constraint.classes:
        return True
    chain = _chain(version, cls.iri)
    if constraint.exact_version:
        return any(c.iri in constraint.class_iris for c in chain)
    return any(c.term in constraint.classes for c in chain)


@cache
def _ancestry(version: int, iri: str) -> frozenset[str]:
    return frozenset(c.term for c in _chain(version, iri))


@cache
def _chain(version: int, iri: str) -> tuple[ClassInfo, ...]:
    classes = _all_classes(version)
    chain: list[ClassInfo] = []
    stack = [iri]
    while stack:
        current = classes.get(stack.pop(0))
        if current is None or current in chain:
            continue
        chain.append(current)
        stack.extend(current.supers)
    return tuple(chain)


@cache
def _all_classes(version: int) -> dict[str, ClassInfo]:
    """Every class a ``version`` document can meet, earlier versions' included."""
    merged: dict[str, ClassInfo] = {}
    for v in DTDL_VERSIONS:
        if v <= version:
            merged.update(language(v).classes)
    return merged


def find_class(iri: str, version: int) -> ClassInfo | None:
    return _all_classes(version).get(iri)
