"""The DTDL parser: JSON documents in, validated element graph out.

One interpreter serves DTDL v2, v3, v4 and their extensions: it reads each element's
class, properties and constraints from :mod:`.metamodel`. Parsing runs in two passes:
the first walks the documents, checks every element locally and records references; the
second, once every document (and every model the resolver supplied) is in, checks what
spans elements: references, inheritance, uniqueness, depth and cycles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from twinforge.twin_models import standard
from twinforge.twin_models.context import (
    ActiveContext,
    ContextError,
    nested_context,
    top_level_context,
)
from twinforge.twin_models.dtmi import child_dtmi, is_valid_dtmi
from twinforge.twin_models.errors import (
    ModelParsingError,
    ParsingError,
    ResolutionError,
    parsing_error,
)
from twinforge.twin_models.interface_size import check_interface_sizes
from twinforge.twin_models.metamodel import ClassInfo, Constraint, find_class, language
from twinforge.twin_models.nodes import Node, Reference

Resolver = Callable[[list[str]], Iterable[str | dict[str, Any] | list[Any]] | None]

_ALLOWED_KEYWORDS = frozenset({"@context", "@id", "@type"})


def _str_keys(obj: dict[Any, Any]) -> bool:
    # Typed dict[Any, Any] so that compiled (mypyc) code does not assume str keys.
    return all(isinstance(key, str) for key in obj)


def _ignorable_keyword(key: object) -> bool:
    return (
        isinstance(key, str)
        and key.startswith("@")
        and key not in _ALLOWED_KEYWORDS
        and key != "@graph"
    )


# BCP 47: a 2-3 letter language, then script, region or variant subtags.
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_XSD = "http://www.w3.org/2001/XMLSchema#"


@dataclass(slots=True)
class Options:
    allow_undefined_extensions: bool = False
    max_dtdl_version: int | None = None
    acceptable_limits: frozenset[str] = frozenset()


@dataclass(slots=True)
class ParseResult:
    nodes: dict[str, Node]
    roots: list[Node]


@dataclass
class _State:
    options: Options
    nodes: dict[str, Node] = field(default_factory=dict)
    roots: list[Node] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    errors: list[ParsingError] = field(default_factory=list)


def _kind(text: str, ctx: ActiveContext) -> tuple[str, str]:
    """Classify a string used as a type, property or reference: (kind, iri)."""
    iri = ctx.terms.get(text)
    if iri is not None:
        return "term", iri
    if text.startswith("dtmi:"):
        return ("dtmi", text) if is_valid_dtmi(text) else ("invalidDtmi", text)
    if ":" in text:
        return "notDtmiNorTerm", text
    return "undefinedTerm", text


class _DocumentParser:
    """Parses the elements of one JSON document into :class:`Node` records."""

    def __init__(self, state: _State, document: int, *, from_json_text: bool) -> None:
        self.state = state
        self.document = document
        self.options = state.options
        # Decoded JSON text has only string keys; a value passed in decoded may not.
        self.check_keys = not from_json_text

    # -- errors ---------------------------------------------------------------
    def error(self, rule: str, cause: str, action: str, **where: Any) -> None:
        self.state.errors.append(
            parsing_error(rule, cause, action, document=self.document, **where)
        )

    # -- roots ----------------------------------------------------------------
    def parse_root(self, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                self.parse_top_level(item)
        else:
            self.parse_top_level(value)

    def parse_top_level(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            self.error(
                "invalidRoot",
                f"a model document must be a JSON object or an array of objects, not {type(obj).__name__}",
                "Wrap the model in a JSON object with @context, @id and @type.",
                value=obj,
            )
            return
        if "@context" not in obj:
            self.error(
                "missingContext",
                "a top-level element has no @context",
                'Add "@context": "dtmi:dtdl:context;3" (or ;2, ;4).',
                primary_id=obj.get("@id") if isinstance(obj.get("@id"), str) else None,
            )
            return
        try:
            ctx = top_level_context(
                obj["@context"],
                allow_undefined=self.options.allow_undefined_extensions,
                max_version=self.options.max_dtdl_version,
                acceptable_limits=self.options.acceptable_limits,
            )
        except ContextError as exc:
            self.context_error(exc, obj)
            return
        node = self.element(obj, ctx, None, None, None)
        if node is not None:
            self.state.roots.append(node)

    def context_error(self, exc: ContextError, obj: dict[str, Any]) -> None:
        self.error(
            exc.rule,
            str(exc),
            "Use a DTDL context first (dtmi:dtdl:context;3), then known extension contexts.",
            primary_id=obj.get("@id") if isinstance(obj.get("@id"), str) else None,
            property="@context",
            value=exc.value,
        )

    # -- elements -------------------------------------------------------------
    def element(
        self,
        obj: dict[str, Any],
        ctx: ActiveContext,
        constraints: tuple[Constraint, ...] | None,
        parent: Node | None,
        prop: str | None,
        index: int = 0,
    ) -> Node | None:
        """Parse one JSON object as a DTDL element; None when it cannot be.

        ``index`` is the object's place among the values of ``parent``'s ``prop``.
        """
        where = (
            obj.get("@id") if isinstance(obj.get("@id"), str) else (parent.id if parent else None)
        )
        if self.check_keys and not _str_keys(obj):
            self.error(
                "invalidJson",
                "object keys must be strings",
                "Write every property name as a JSON string.",
                primary_id=where,
            )
            return None
        if parent is not None and "@context" in obj:
            try:
                ctx = nested_context(
                    obj["@context"],
                    ctx,
                    allow_undefined=self.options.allow_undefined_extensions,
                    acceptable_limits=self.options.acceptable_limits,
                )
            except ContextError as exc:
                self.context_error(exc, obj)
                return None
        lang = ctx.lang
        for key in obj:
            if (
                key.startswith("@")
                and key not in _ALLOWED_KEYWORDS
                and (lang.globals.restrict_keywords or key == "@graph")
            ):
                self.error(
                    "invalidKeyword" if key != "@graph" else "graphDisallowed",
                    f"JSON-LD keyword {key} is not allowed in a DTDL element",
                    f"Remove {key}.",
                    primary_id=where,
                    property=key,
                )
        cls, cotypes, undefined_cotypes = self.types(obj, ctx, constraints, where)
        if cls is None:
            return None
        if constraints is None and not cls.partition:
            self.error(
                "notRootable",
                f"a {cls.term} cannot be a top-level element; only an Interface can",
                "Put the element inside an Interface.",
                primary_id=where,
            )
            return None
        node_id = self.identifier(obj, ctx, cls, constraints, parent, prop, where, index)
        if node_id is None:
            return None
        node = Node(
            id=node_id,
            cls=cls,
            ctx=ctx,
            document=self.document,
            parent=parent,
            parent_property=prop,
            cotypes=cotypes,
            undefined_cotypes=undefined_cotypes,
        )
        node.partition = node if cls.partition else (parent.partition if parent else None)
        if node_id in self.state.nodes and "@id" not in obj and parent is not None:
            # Two nested elements got the same generated identifier: they share a name.
            self.error(
                "nonUniquePropertyValue",
                f"name {obj.get('name')!r} is used by more than one element of {prop!r}",
                f"Give each element of {prop!r} its own name.",
                primary_id=parent.id,
                property=prop,
                value=obj.get("name"),
            )
        elif node_id in self.state.nodes:
            self.error(
                "duplicateDefinition",
                f"{node_id} is defined more than once",
                "Give each element its own @id.",
                primary_id=node_id,
            )
        else:
            self.state.nodes[node_id] = node
        self.properties(obj, node)
        return node

    def types(
        self,
        obj: dict[str, Any],
        ctx: ActiveContext,
        constraints: tuple[Constraint, ...] | None,
        where: str | None,
    ) -> tuple[ClassInfo | None, list[ClassInfo], list[str]]:
        raw = obj.get("@type")
        lang = ctx.lang
        if isinstance(raw, str) and constraints is not None:
            simple = _simple_type(raw, ctx.terms.get(raw), ctx.version, constraints)
            if simple is not None:
                return simple, [], []
        if "@type" not in obj:
            inferable = [c for c in constraints or [] if c.type_inferable and c.classes]
            if inferable:
                cls = lang.by_term.get(inferable[0].classes[0])
                if cls is not None and all(lang.conforms(cls, c) for c in constraints or []):
                    return cls, [], []
                if cls is not None:
                    self.error(
                        "invalidElementType",
                        f"a DTDL v{ctx.version} {cls.term} is not allowed here",
                        "Write the element in the DTDL version of its parent.",
                        primary_id=where,
                    )
                    return None, [], []
            self.error(
                "missingTypeProperty",
                "the element has no @type",
                'Add "@type" with the element kind, e.g. "Telemetry".',
                primary_id=where,
                property="@type",
            )
            return None, [], []
        raw_types = raw if isinstance(raw, list) else [raw]
        if (
            not raw_types
            or not all(isinstance(t, str) for t in raw_types)
            or not isinstance(raw, (str, list))
        ):
            self.error(
                "badType",
                "@type must be a string or an array of strings",
                "Write @type as a string or an array of strings.",
                primary_id=where,
                property="@type",
                value=raw,
            )
            return None, [], []
        materials: list[ClassInfo] = []
        cotypes: list[ClassInfo] = []
        apocryphal: list[tuple[str, str]] = []
        for text in dict.fromkeys(raw_types):
            kind, iri = _kind(text, ctx)
            if kind in ("term", "dtmi"):
                cls = find_class(iri, ctx.version)
                if cls is None or (
                    cls.extension is not None and not self.extension_active(cls, ctx)
                ):
                    apocryphal.append(("irrelevantDtmiOrTerm", text))
                elif cls.material and cls.extension is None:
                    if cls not in materials:  # "Telemetry" and its DTMI name the same class
                        materials.append(cls)
                elif cls not in cotypes:
                    cotypes.append(cls)
            else:
                apocryphal.append((kind, text))
        where_type = {"primary_id": where, "property": "@type"}
        if not materials:
            self.error(
                "missingMaterialType",
                f"@type {raw!r} names no DTDL element kind",
                "Include exactly one element kind such as Interface, Telemetry or Property.",
                **where_type,
                value=raw,
            )
            return None, [], []
        if len(materials) > 1:
            self.error(
                "multipleMaterialTypes",
                f"@type names more than one element kind: {', '.join(m.term for m in materials)}",
                "Keep one element kind in @type.",
                **where_type,
                value=raw,
            )
            return None, [], []
        cls = materials[0]
        if cls.abstract:
            self.error(
                "abstractType",
                f"{cls.term} is abstract and cannot be instantiated",
                "Use a concrete element kind.",
                **where_type,
                value=raw,
            )
            return None, [], []
        if constraints:
            for constraint in constraints:
                # An extension may ask for a co-type (mqtt: a Result's fields are each a
                # NormalResult or ErrorResult): the element kind or a co-type will do.
                if not ctx.lang.conforms(cls, constraint) and not any(
                    ctx.lang.conforms(cotype, constraint) for cotype in cotypes
                ):
                    self.error(
                        "invalidElementType",
                        f"a {cls.term} is not allowed here; expected {' or '.join(constraint.classes)}",
                        f"Use a {' or '.join(constraint.classes)}.",
                        **where_type,
                        value=raw,
                    )
                    return None, [], []
        ancestry = lang.ancestry(cls) if cotypes else frozenset()
        good_cotypes: list[ClassInfo] = []
        for cotype in cotypes:
            # An extension class's own host list is its rule; otherwise the hosts its
            # superclasses (SemanticType, AdjunctType...) declare.
            own = set(cotype.hosts) if cotype.extension is not None else set()
            hosts = own or {h for c in lang.chain(cotype) for h in c.hosts}
            if (hosts and not hosts & ancestry) or (not hosts and cotype.extension is None):
                apocryphal.append(("irrelevantDtmiOrTerm", cotype.term))
            else:
                good_cotypes.append(cotype)
        undefined: list[str] = []
        for kind, text in apocryphal:
            if self.apocrypha_allowed(kind, ctx, as_cotype=True):
                undefined.append(text)
            else:
                self.error(
                    "invalidCotype",
                    f"@type value {text!r} is not a valid co-type of a {cls.term} ({_describe(kind)})",
                    "Remove it, or add the extension @context that defines it.",
                    **where_type,
                    value=text,
                )
                return None, [], []
        names = {c.term for c in good_cotypes}
        for cotype in good_cotypes:
            missing = [r for r in cotype.requires_cotypes if r not in names]
            excluded = [x for x in cotype.excludes_cotypes if x in names]
            if missing or excluded:
                self.error(
                    "invalidCotype",
                    f"co-type {cotype.term} "
                    + (
                        f"requires {', '.join(missing)}"
                        if missing
                        else f"excludes {', '.join(excluded)}"
                    ),
                    "Fix the co-types in @type.",
                    **where_type,
                    value=raw,
                )
                return None, [], []
        return cls, good_cotypes, undefined

    def extension_active(self, cls: ClassInfo, ctx: ActiveContext) -> bool:
        return any(e.context_id == cls.extension for e in ctx.extensions)

    def apocrypha_allowed(self, kind: str, ctx: ActiveContext, *, as_cotype: bool) -> bool:
        g = ctx.lang.globals
        always = g.always_allow_cotype if as_cotype else g.always_allow_property
        never = g.never_allow_cotype if as_cotype else g.never_allow_property
        if kind in always:
            return True
        if kind in never:
            return False
        return ctx.undefined_extension

    def identifier(
        self,
        obj: dict[str, Any],
        ctx: ActiveContext,
        cls: ClassInfo,
        constraints: tuple[Constraint, ...] | None,
        parent: Node | None,
        prop: str | None,
        where: str | None,
        index: int = 0,
    ) -> str | None:
        raw = obj.get("@id")
        if "@id" not in obj:
            plan = _plan(constraints or ())
            if parent is None or plan.iri_only:
                self.error(
                    "missingIdProperty",
                    f"this {cls.term} needs an @id",
                    "Add an @id with a DTMI, e.g. dtmi:com:example:Thing;1.",
                    primary_id=where,
                    property="@id",
                )
                return None
            segment = None
            if plan.dtmi_segment is not None:
                # The element's name, as the DTDL spec says; without a valid one (an error
                # reported elsewhere) its index among the values, which no name can be (a
                # name starts with a letter): the same on every parse of the same models.
                value = obj.get(plan.dtmi_segment)
                segment = value if isinstance(value, str) and _NAME.fullmatch(value) else str(index)
            return child_dtmi(parent.id, prop or "", segment)
        g = ctx.lang.globals
        max_length = g.identifier_max_length
        for c in ctx.lang.chain(cls):
            if c.identifier_max_length:
                max_length = min(max_length, c.identifier_max_length)
                break
        limits = ctx.limits.overrides
        if limits is not None:
            override = (limits.class_overrides.get(cls.term) or {}).get("dtmm:identifier") or (
                limits.global_overrides.get("dtmm:identifier") or {}
            )
            max_length = override.get("sh:maxLength", max_length)
        problem = None
        if not isinstance(raw, str):
            problem = "@id must be a string"
        elif not g.identifier_pattern.fullmatch(raw):
            problem = f"@id {raw!r} is not a valid DTMI for DTDL v{ctx.version}"
        elif raw.startswith(g.reserved_prefixes):
            problem = f"@id {raw!r} uses a reserved prefix ({', '.join(g.reserved_prefixes)})"
        elif len(raw) > max_length:
            problem = (
                f"@id is {len(raw)} characters; a {cls.term} identifier is at most {max_length}"
            )
        if problem:
            self.error(
                "invalidId",
                problem,
                "Use a DTMI such as dtmi:com:example:Thing;1.",
                primary_id=where,
                property="@id",
                value=raw,
            )
            return None
        return raw

    # -- properties -----------------------------------------------------------
    def properties(self, obj: dict[str, Any], node: Node) -> None:
        ctx = node.ctx
        by_term, by_iri, required = _constraint_table(node.cls, tuple(node.cotypes), ctx.version)
        seen: dict[str, str] = {}
        for key, value in obj.items():
            if key[:1] == "@":
                continue
            term = key if key in by_term else by_iri.get(key)
            if term is None:
                self.undefined_property(node, key, value)
            elif term in seen:
                self.error(
                    "duplicateProperty",
                    f"property {term!r} is given twice (as {seen[term]!r} and {key!r})",
                    "Keep one of them.",
                    primary_id=node.id,
                    property=term,
                )
            else:
                seen[term] = key
                self.property_values(node, term, value, by_term[term])
        for term in required:
            if term not in seen:
                self.error(
                    "missingRequiredProperty",
                    f"a {node.cls.term} requires property {term!r}",
                    f"Add {term!r}.",
                    primary_id=node.id,
                    property=term,
                )

    def undefined_property(self, node: Node, key: str, value: Any) -> None:
        """A property no class of the element defines: kept if an undefined extension
        (or DTDL v2's leniency) allows it, an error otherwise."""
        kind, _ = _kind(key, node.ctx)
        if kind in ("term", "dtmi"):
            kind = "irrelevantDtmiOrTerm"
        if node.undefined_cotypes and self.apocrypha_allowed(kind, node.ctx, as_cotype=False):
            node.undefined_properties[key] = value
            return
        self.error(
            "invalidProperty",
            f"{key!r} is not a property of a {node.cls.term} ({_describe(kind)})",
            "Remove it, or co-type the element with the extension type that defines it.",
            primary_id=node.id,
            property=key,
        )

    def property_values(
        self, node: Node, term: str, raw: Any, constraints: tuple[Constraint, ...]
    ) -> None:
        plan = _plan(constraints)
        if plan.scalar_check is not None and type(raw) in _SCALARS and plan.scalar_check(raw):
            # One plain JSON value of the right type: the common case, checked fast.
            if not plan.value_rules and node.ctx.limits.overrides is None:
                limit = plan.max_length
                if limit is None or type(raw) is not str or len(raw) <= limit:
                    node.values[term] = [raw]
                    return
            elif _check_literal(raw, constraints, self.max_length(node, term, constraints)) is None:
                node.values[term] = [raw]
                return
        if plan.forbidden:
            self.error(
                "propertyNotAllowed",
                f"property {term!r} may not be set",
                f"Remove {term!r}.",
                primary_id=node.id,
                property=term,
                value=raw,
            )
            return
        if plan.datatype == "rdf:langString":
            values = self.language_string(node, term, raw, constraints)
        elif plan.literal:
            values = self.literals(node, term, raw, constraints, plan.datatype)
        else:
            values = self.elements(node, term, raw, constraints)
        if values is None:
            return
        count = len(values)
        for c in plan.counted:
            if c.max_count is not None and count > c.max_count:
                self.error(
                    "tooManyValues",
                    f"property {term!r} has {count} values; at most {c.max_count} allowed",
                    "Remove values.",
                    primary_id=node.id,
                    property=term,
                )
                return
            if c.min_count is not None and count < c.min_count:
                self.error(
                    "tooFewValues" if count else "missingRequiredProperty",
                    f"property {term!r} has {count} values; at least {c.min_count} required",
                    "Add values.",
                    primary_id=node.id,
                    property=term,
                )
                return
        node.values[term] = values
        if not plan.literal:
            node.links.extend((term, value) for value in values)

    def language_string(
        self, node: Node, term: str, raw: Any, constraints: tuple[Constraint, ...]
    ) -> list[Any] | None:
        if node.ctx.limits.overrides is None:  # the common cases, checked fast
            limit = _plan(constraints).max_length
            if type(raw) is str:
                if (limit is None or len(raw) <= limit) and not _SURROGATE.search(raw):
                    return [{"en": raw}]
            elif type(raw) is dict and all(
                type(text) is str
                and (limit is None or len(text) <= limit)
                and not _SURROGATE.search(text)
                and type(language) is str
                and _LANGUAGE_TAG.fullmatch(language)
                for language, text in raw.items()
            ):
                return [raw] if raw else []
        texts: dict[str, str] = {}

        def fail(cause: str) -> None:
            self.error(
                "invalidLocalizableString",
                f"property {term!r}: {cause}",
                'Use a string, or a map of language codes to strings, e.g. {"en": "Pump"}.',
                primary_id=node.id,
                property=term,
                value=raw,
            )

        def add(language: Any, text: Any) -> bool:
            if not isinstance(text, str) or _SURROGATE.search(text):
                fail(f"the value for language {language!r} is not a string")
                return False
            if not isinstance(language, str) or not _LANGUAGE_TAG.fullmatch(language):
                fail(f"{language!r} is not a language tag")
                return False
            if language in texts:
                fail(f"language {language!r} is given twice")
                return False
            texts[language] = text
            return True

        if isinstance(raw, str):
            add("en", raw)
        elif (
            isinstance(raw, dict)
            and "@value" not in raw
            and not any(str(k).startswith("@") for k in raw)
        ):
            for language, text in raw.items():
                if not add(language, text):
                    return None
        elif isinstance(raw, list):
            for item in raw:
                if isinstance(item, str):
                    if not add("en", item):
                        return None
                    continue
                if not isinstance(item, dict) or "@value" not in item:
                    fail("each entry must be a string or an object with @value")
                    return None
                extra = set(item) - {"@value", "@language"}
                if not node.ctx.lang.globals.restrict_keywords:
                    extra = {k for k in extra if not _ignorable_keyword(k) and k != "@type"}
                if extra:
                    fail("a language-tagged value may only have @value and @language")
                    return None
                language = item.get("@language", "en")
                if not isinstance(language, str) or not add(language, item["@value"]):
                    if not isinstance(language, str):
                        fail("@language must be a string")
                    return None
        else:
            fail("expected a string or a language map")
            return None
        max_length = self.max_length(node, term, constraints)
        for language, text in texts.items():
            if max_length is not None and len(text) > max_length:
                self.error(
                    "stringTooLong",
                    f"property {term!r} ({language}) is {len(text)} characters; at most {max_length}",
                    "Shorten it.",
                    primary_id=node.id,
                    property=term,
                    value=text,
                )
                return None
        return [texts] if texts else []

    def max_length(self, node: Node, term: str, constraints: tuple[Constraint, ...]) -> int | None:
        limits = node.ctx.limits.overrides
        if limits is None:
            return _plan(constraints).max_length
        if limits is not None:
            for cls in node.ctx.lang.chain(node.cls):
                for prop in (limits.class_overrides.get(cls.term) or {}).get("sh:property", []):
                    if prop.get("sh:path") == term and "sh:maxLength" in prop:
                        return prop["sh:maxLength"]
        lengths = [c.max_length for c in constraints if c.max_length is not None]
        return min(lengths) if lengths else None

    def literals(
        self,
        node: Node,
        term: str,
        raw: Any,
        constraints: tuple[Constraint, ...],
        datatype: str | None,
    ) -> list[Any] | None:
        items = raw if isinstance(raw, list) else [raw]
        values: list[Any] = []
        for item in items:
            value = self.literal(node, term, item, datatype)
            if value is _INVALID:
                return None
            problem = _check_literal(value, constraints, self.max_length(node, term, constraints))
            if problem:
                self.error(
                    "invalidPropertyValue",
                    f"property {term!r}: {problem}",
                    f"Fix the value of {term!r}.",
                    primary_id=node.id,
                    property=term,
                    value=value,
                )
                return None
            values.append(value)
        return values

    def literal(self, node: Node, term: str, item: Any, datatype: str | None) -> Any:
        expected = datatype.removeprefix("xsd:") if datatype else None
        if isinstance(item, dict):
            extra = set(item) - {"@value", "@type"}
            if not node.ctx.lang.globals.restrict_keywords:
                extra = {
                    k for k in extra if not _ignorable_keyword(k)
                }  # DTDL v2 ignores most keywords
            if "@value" not in item or extra:
                self.error(
                    "invalidPropertyValue",
                    f"property {term!r}: a value object has exactly @value and optionally @type",
                    f"Write {term!r} as a plain JSON value.",
                    primary_id=node.id,
                    property=term,
                    value=item,
                )
                return _INVALID
            if "@type" in item:
                declared = item["@type"]
                if isinstance(declared, list) and len(declared) == 1:
                    declared = declared[0]
                short = (
                    declared.removeprefix(_XSD).removeprefix("xsd:")
                    if isinstance(declared, str)
                    else None
                )
                if expected is None and short is not None:
                    expected = short  # an untyped literal (enumValue) may declare its own type
                if short is None or short != expected or not declared.startswith(("xsd:", _XSD)):
                    self.error(
                        "invalidPropertyValue",
                        f"property {term!r}: @type {declared!r} does not match xsd:{expected}",
                        f"Use @type xsd:{expected} or leave it out.",
                        primary_id=node.id,
                        property=term,
                        value=item,
                    )
                    return _INVALID
            item = item["@value"]
        ok = _TYPE_CHECKS.get(expected or "", _is_json_literal)(item)
        if not ok:
            self.error(
                "invalidPropertyValue",
                f"property {term!r} must be {_DATATYPE_WORDS.get(expected or '', 'a literal')}, got {item!r}",
                f"Fix the value of {term!r}.",
                primary_id=node.id,
                property=term,
                value=item,
            )
            return _INVALID
        return item

    def elements(
        self, node: Node, term: str, raw: Any, constraints: tuple[Constraint, ...]
    ) -> list[Any] | None:
        items = raw if isinstance(raw, list) else [raw]
        values: list[Any] = []
        plan = _plan(constraints)
        for index, item in enumerate(items):
            if isinstance(item, str):
                target = self.reference(node, term, item, constraints)
                if target is None:
                    return None
                values.append(target)
            elif isinstance(item, dict):
                if plan.iri_only and "@id" not in item:
                    self.error(
                        "missingIdProperty",
                        f"an element given inline in {term!r} needs an @id",
                        "Add an @id, or refer to the element by its DTMI.",
                        primary_id=node.id,
                        property=term,
                    )
                    return None
                if plan.enumerated:
                    self.error(
                        "invalidPropertyValue",
                        f"property {term!r} must name one of the allowed values, not define an element",
                        f"Use one of the allowed values for {term!r}.",
                        primary_id=node.id,
                        property=term,
                    )
                    return None
                child = self.element(item, node.ctx, constraints, node, term, index)
                if child is None:
                    return None
                values.append(child.id)
            else:
                self.error(
                    "invalidPropertyValue",
                    f"property {term!r} must be a DTMI, a term or an element, not {json.dumps(item)}",
                    f"Fix {term!r}.",
                    primary_id=node.id,
                    property=term,
                    value=item,
                )
                return None
        return values

    def reference(
        self, node: Node, term: str, text: str, constraints: tuple[Constraint, ...]
    ) -> str | None:
        kind, iri = _kind(text, node.ctx)
        if kind not in ("term", "dtmi"):
            self.error(
                "invalidReference",
                f"property {term!r} value {text!r} is not a DTMI or a known term ({_describe(kind)})",
                "Use a DTMI or a DTDL term.",
                primary_id=node.id,
                property=term,
                value=text,
            )
            return None
        for c in constraints:
            if c.pattern is not None and not c.pattern.fullmatch(iri):
                self.error(
                    "invalidReference",
                    f"property {term!r} value {text!r} "
                    + (c.pattern_desc or "does not match the required pattern"),
                    f"Fix {term!r}.",
                    primary_id=node.id,
                    property=term,
                    value=text,
                )
                return None
            if c.max_length is not None and len(iri) > c.max_length:
                self.error(
                    "stringTooLong",
                    f"property {term!r} value is longer than {c.max_length} characters",
                    f"Shorten {term!r}.",
                    primary_id=node.id,
                    property=term,
                )
                return None
            if c.in_values is not None and iri.split(";")[0] not in c.in_values:
                self.error(
                    "invalidPropertyValue",
                    f"property {term!r} must be one of {', '.join(sorted(v.rsplit(':', 1)[-1] for v in c.in_values))}, not {text!r}",
                    f"Use an allowed value for {term!r}.",
                    primary_id=node.id,
                    property=term,
                    value=text,
                )
                return None
        if _plan(constraints).references:
            self.state.references.append(Reference(node, term, iri, constraints))
        return iri


class _Invalid:
    pass


_SCALARS = frozenset({str, int, float, bool})
# Lone UTF-16 surrogates are not Unicode text (json.loads lets "\ud800" through).
_SURROGATE = re.compile(r"[\ud800-\udfff]")


_INVALID = _Invalid()
_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")


def _is_json_literal(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str) and not _SURROGATE.search(v),
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_int,
    "int": _is_int,
    "long": _is_int,
    "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "duration": lambda v: isinstance(v, str) and standard.DURATION.fullmatch(v) is not None,
}
_DATATYPE_WORDS = {
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
    "duration": "an ISO 8601 duration",
}


def _check_literal(
    value: Any, constraints: tuple[Constraint, ...], max_length: int | None
) -> str | None:
    for c in constraints:
        if c.pattern is not None and isinstance(value, str) and not c.pattern.fullmatch(value):
            return f"{value!r} " + (c.pattern_desc or f"does not match {c.pattern.pattern}")
        if c.min_inclusive is not None and _is_int(value) and value < c.min_inclusive:
            return f"{value} is below the minimum {c.min_inclusive}"
        if c.max_inclusive is not None and _is_int(value) and value > c.max_inclusive:
            return f"{value} is above the maximum {c.max_inclusive}"
    if max_length is not None and isinstance(value, str) and len(value) > max_length:
        return f"is {len(value)} characters; at most {max_length}"
    return None


def _describe(kind: str) -> str:
    return {
        "undefinedTerm": "an undefined term",
        "irrelevantDtmiOrTerm": "not applicable here",
        "notDtmiNorTerm": "neither a DTMI nor a term",
        "invalidDtmi": "an invalid DTMI",
    }.get(kind, kind)


@cache
def _constraint_table(
    cls: ClassInfo, cotypes: tuple[ClassInfo, ...], version: int
) -> tuple[dict[str, tuple[Constraint, ...]], dict[str, str], tuple[str, ...]]:
    """The constraints on each property of an element of ``cls`` with ``cotypes``, by term;
    property IRI -> term (a property may be written as its DTMI); the required terms."""
    lang = language(version)
    by_term: dict[str, list[Constraint]] = {}
    for source in (cls, *cotypes):
        for current in lang.chain(source):
            for term, constraint in current.own.items():
                if not term.startswith("^"):  # inverse paths constrain the parent, not this element
                    by_term.setdefault(term, []).append(constraint)
    by_iri = {c.iri: term for term, cs in by_term.items() for c in cs}
    table = {term: tuple(cs) for term, cs in by_term.items()}
    required = tuple(term for term, cs in table.items() if _plan(cs).required)
    return table, by_iri, required


@cache
def _simple_type(
    raw: str, iri: str | None, version: int, constraints: tuple[Constraint, ...]
) -> ClassInfo | None:
    """The class of an element whose ``@type`` is one term naming an allowed concrete core
    class (nearly every element); None sends the element through the full check."""
    if iri is None:
        return None
    cls = find_class(iri, version)
    if cls is None or not cls.material or cls.abstract or cls.extension is not None:
        return None
    lang = language(version)
    return cls if all(lang.conforms(cls, c) for c in constraints) else None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the constraints on one property imply for reading its values."""

    datatype: str | None
    literal: bool
    iri_only: bool
    enumerated: bool  # values must come from a fixed list (sh:in)
    dtmi_segment: str | None  # the property naming a nested element in its generated @id
    value_rules: bool  # a pattern or bounds that literal values must meet
    references: bool
    forbidden: bool
    required: bool
    counted: tuple[Constraint, ...]
    max_length: int | None
    #: type check for a single plain JSON value, when the property takes literals of a
    #: known type and allows exactly that one value (None: always take the full path)
    scalar_check: Callable[[Any], bool] | None


@cache
def _plan(constraints: tuple[Constraint, ...]) -> _Plan:
    datatype = next((c.datatype for c in constraints if c.datatype), None)
    return _Plan(
        datatype=datatype,
        literal=datatype is not None or any(c.node_kind == "Literal" for c in constraints),
        iri_only=any(c.node_kind == "IRI" for c in constraints),
        enumerated=any(c.in_values for c in constraints),
        dtmi_segment=next((c.dtmi_segment for c in constraints if c.dtmi_segment), None),
        value_rules=any(
            c.pattern is not None or c.min_inclusive is not None or c.max_inclusive is not None
            for c in constraints
        ),
        references=any(c.classes for c in constraints),
        forbidden=any(c.max_count == 0 for c in constraints),
        required=any((c.min_count or 0) > 0 for c in constraints),
        counted=tuple(c for c in constraints if c.max_count is not None or c.min_count is not None),
        max_length=min(
            (c.max_length for c in constraints if c.max_length is not None), default=None
        ),
        scalar_check=_TYPE_CHECKS.get((datatype or "").removeprefix("xsd:"))
        if datatype
        and datatype != "rdf:langString"
        and not any(c.max_count == 0 for c in constraints)
        else None,
    )


def _decode(doc: Any, index: int, state: _State) -> Any:
    if not isinstance(doc, (str, bytes, bytearray)):
        return doc
    try:
        return json.loads(
            doc, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except RecursionError:
        state.errors.append(
            parsing_error(
                "excessiveNesting",
                "the document nests JSON too deeply to be a DTDL model",
                "Flatten the model; DTDL limits nesting far below this depth.",
                document=index,
            )
        )
        return _INVALID
    except ValueError as exc:
        state.errors.append(
            parsing_error(
                "invalidJson",
                f"the document is not valid JSON: {exc}",
                "Fix the JSON syntax.",
                document=index,
            )
        )
        return _INVALID


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # JSON-LD gives a repeated key no meaning: refuse it
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _size_hint(doc: Any) -> int:
    """A document's length in characters: its text's, or its compact JSON's."""
    if isinstance(doc, (str, bytes, bytearray)):
        return len(doc)
    try:
        return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return 0  # not JSON at all: the parse reports that


def parse_documents(
    docs: Sequence[str | bytes | dict[str, Any] | list[Any]],
    options: Options,
    resolver: Resolver | None = None,
) -> ParseResult:
    """Parse ``docs`` (and what ``resolver`` supplies) into checked nodes.

    Raises :class:`ModelParsingError` listing every rule broken, or
    :class:`ResolutionError` when references stay undefined.
    """
    from twinforge.twin_models.checks import check_model  # the cross-element pass

    state = _State(options)
    pending: list[Any] = list(docs)  # what callers pass may be anything; checked below
    offset = 0
    asked: set[str] = set()
    while True:
        for index, doc in enumerate(pending, start=offset):
            value = _decode(doc, index, state)
            if value is _INVALID:
                continue
            state.errors.extend(check_interface_sizes(value, index, _size_hint(doc)))
            try:
                _DocumentParser(
                    state, index, from_json_text=isinstance(doc, (str, bytes, bytearray))
                ).parse_root(value)
            except RecursionError:
                state.errors.append(
                    parsing_error(
                        "excessiveNesting",
                        "the document nests elements too deeply to be a DTDL model",
                        "Flatten the model; DTDL limits nesting far below this depth.",
                        document=index,
                    )
                )
        offset += len(pending)
        undefined = sorted(
            {
                r.target
                for r in state.references
                if r.target not in state.nodes and not standard.is_standard(r.target)
            }
            - asked
        )
        if not undefined or resolver is None or state.errors:
            break
        asked.update(undefined)
        supplied = resolver(undefined)
        pending = list(supplied or [])
        if not pending:
            break
    if state.errors:
        raise ModelParsingError(state.errors)
    missing = sorted(
        {
            r.target
            for r in state.references
            if r.target not in state.nodes and not standard.is_standard(r.target)
        }
    )
    if missing:
        raise ResolutionError(missing)
    check_model(state.nodes, state.roots, state.references, state.errors)
    if state.errors:
        raise ModelParsingError(state.errors)
    return ParseResult(state.nodes, state.roots)
