"""Hostile input: parse_models ends in ModelParsingError (or ResolutionError for a reference
that is simply undefined), never another exception, a hang or a crash.

Any other exception propagates out of :func:`outcome` and fails the test with its
traceback; ``pytestmark`` turns a hang into a failure.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinforge.twin_models import (
    Field,
    ModelParsingError,
    ModelSet,
    Object,
    ResolutionError,
    parse_models,
)

pytestmark = pytest.mark.timeout(120)

Outcome = ModelSet | ModelParsingError | ResolutionError
HUGE = "x" * 1_000_000
TEN_MB = "x" * 10_000_000


def outcome(docs: list[Any], **options: Any) -> Outcome:
    """What parse_models makes of ``docs``; any exception but the two allowed propagates."""
    try:
        result = parse_models(docs, **options)
    except (ModelParsingError, ResolutionError) as exc:
        return exc
    assert isinstance(result, ModelSet), f"parse_models returned {type(result).__name__}"
    return result


def rejected(docs: list[Any], **options: Any) -> ModelParsingError:
    result = outcome(docs, **options)
    assert isinstance(result, ModelParsingError), f"expected ModelParsingError, got {result!r}"
    assert result.errors, "a ModelParsingError must list its errors"
    return result


def rules(error: ModelParsingError) -> set[str]:
    return {e.validation_id.removeprefix("dtmi:dtdl:parsingError:") for e in error.errors}


def interface(dtmi: str = "dtmi:ex:A;1", version: int = 3, **properties: Any) -> dict[str, Any]:
    return {
        "@context": f"dtmi:dtdl:context;{version}",
        "@id": dtmi,
        "@type": "Interface",
        **properties,
    }


def telemetries(count: int) -> list[dict[str, Any]]:
    return [{"@type": "Telemetry", "name": f"t{i}", "schema": "double"} for i in range(count)]


VALID = json.dumps(interface(contents=telemetries(2)))


def test_the_valid_text_is_valid() -> None:
    assert isinstance(outcome([VALID]), ModelSet)


# -- malformed JSON text ---------------------------------------------------------------

MALFORMED = {
    "truncated": VALID[: len(VALID) // 2],
    "truncated after a key": '{"@context": "dtmi:dtdl:context;3", "@id"',
    "trailing comma in object": VALID[:-1] + ",}",
    "trailing comma in array": VALID.replace('"double"}]', '"double"},]'),
    "NaN literal": VALID.replace('"double"}]', '"double", "dtmi:ex:x;1": NaN}]'),
    "single quotes": VALID.replace('"', "'"),
    "comment": "// model\n" + VALID,
    "two values": VALID + VALID,
    "duplicate key": VALID[:-1] + ', "@id": "dtmi:ex:B;1"}',
    "BOM in a str": "\ufeff" + VALID,
    "BOM before truncated bytes": b"\xef\xbb\xbf" + VALID[:-3].encode(),
    "empty string": "",
    "whitespace": " \n\t",
    "empty bytes": b"",
    "NUL byte": "\x00",
    "invalid UTF-8": b'{"@context": "dtmi:dtdl:context;3", "comment": "\xff\xfe\x80"}',
    "invalid UTF-8 lead": b"\xc3\x28" + VALID.encode(),
    "overlong UTF-8": VALID.replace('"t0"', '"t\xc0\xaf"').encode("latin-1"),
    "UTF-8 encoded surrogate": VALID.encode().replace(b'"t0"', b'"t\xed\xa0\x80"'),
    "latin-1 text": VALID.replace('"t0"', '"t\xe9"').encode("latin-1"),
    "bare literal": "null",
    "bare number": "12",
    "bare string": '"dtmi:ex:A;1"',
    "array of arrays": "[[" + VALID + "]]",
    "array of numbers": "[1, 2, 3]",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_json_is_rejected(text: str | bytes) -> None:
    rejected([text])


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity"], ids=["NaN", "Infinity", "-Infinity"]
)
def test_non_json_number_literals_are_rejected_even_where_any_value_goes(literal: str) -> None:
    # An undefined extension property accepts any JSON value, but these are not JSON.
    text = (
        '{"@context": ["dtmi:dtdl:context;3", "dtmi:ex:extension;1"], "@id": "dtmi:ex:A;1",'
        f' "@type": ["Interface", "Gadget"], "size": {literal}}}'
    )
    assert isinstance(
        outcome([text.replace(literal, "1")], allow_undefined_extensions=True), ModelSet
    )
    rejected([text], allow_undefined_extensions=True)


@pytest.mark.parametrize(
    "where",
    ["description", "displayName", "comment", "name", "@id", "language key"],
)
@pytest.mark.parametrize("form", ["escaped", "raw str", "decoded"])
def test_lone_surrogates_are_rejected(where: str, form: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8: accepting it only moves the crash to
    # whoever writes the model out (graph store, GraphQL response, log).
    bad = "\ud800"
    doc = interface(contents=telemetries(1))
    if where == "name":
        doc["contents"][0]["name"] = "t" + bad
    elif where == "@id":
        doc["@id"] = "dtmi:ex:A" + bad + ";1"
    elif where == "language key":
        doc["displayName"] = {"en" + bad: "x"}
    else:
        doc[where] = "x" + bad
    text = json.dumps(doc)  # ensure_ascii: the surrogate as a \ud800 escape
    docs = {"escaped": text, "raw str": json.dumps(doc, ensure_ascii=False), "decoded": doc}
    rejected([docs[form]])


def test_bom_prefixed_utf8_bytes_parse_as_without_it() -> None:
    # RFC 8259 lets a parser ignore a UTF-8 BOM in bytes; either way, no crash.
    result = outcome([b"\xef\xbb\xbf" + VALID.encode()])
    if isinstance(result, ModelSet):
        assert set(result.interfaces) == {"dtmi:ex:A;1"}


@pytest.mark.parametrize(
    "doc",
    [None, 5, 1.5, True, "null", {1: "x"}, {("a",): 1}, {None: 1}],
    ids=["None", "int", "float", "bool", "null text", "int key", "tuple key", "None key"],
)
def test_non_json_python_values_are_rejected(doc: Any) -> None:
    # Decoded YAML gives int/bool/None keys; they are not JSON object members.
    if isinstance(doc, dict):
        doc = {**interface(), **doc}
    rejected([doc])


def test_non_string_language_map_keys_are_rejected() -> None:
    rejected([interface(displayName={True: "on"})])  # YAML `on:` decodes to True


# -- wrong JSON types for every property -----------------------------------------------


def dependencies(version: int) -> list[dict[str, Any]]:
    """The Interfaces the host extends and uses as a component, in its DTDL version."""
    base = interface(
        "dtmi:ex:Base;1", version, contents=[{"@type": "Telemetry", "name": "up", "schema": "long"}]
    )
    return [base, interface("dtmi:ex:Part;1", version, contents=telemetries(1))]


def host(version: int) -> dict[str, Any]:
    """An Interface using every element kind, each property with a valid value."""
    command: dict[str, Any] = {
        "@type": "Command",
        "name": "reset",
        "request": {"name": "delay", "schema": "integer"},
        "response": {"name": "ok", "schema": "boolean"},
    }
    if version == 2:
        command["commandType"] = "synchronous"
    return interface(
        "dtmi:ex:Host;1",
        version,
        displayName="Host",
        description="a host",
        comment="c",
        extends="dtmi:ex:Base;1",
        schemas=[
            {
                "@id": "dtmi:ex:Mode;1",
                "@type": "Enum",
                "valueSchema": "integer",
                "enumValues": [{"name": "on", "enumValue": 1, "displayName": "On"}],
            }
        ],
        contents=[
            {"@type": "Telemetry", "name": "temp", "schema": "double", "displayName": "T"},
            {"@type": "Property", "name": "mode", "schema": "dtmi:ex:Mode;1", "writable": True},
            {
                "@type": "Telemetry",  # v2 allows no Array in a Property
                "name": "config",
                "schema": {
                    "@type": "Object",
                    "fields": [
                        {"name": "tags", "schema": {"@type": "Array", "elementSchema": "string"}},
                        {
                            "name": "limits",
                            "schema": {
                                "@type": "Map",
                                "mapKey": {"name": "key", "schema": "string"},
                                "mapValue": {"name": "value", "schema": "double"},
                            },
                        },
                    ],
                },
            },
            command,
            {
                "@type": "Relationship",
                "name": "feeds",
                "target": "dtmi:ex:Host;1",
                "maxMultiplicity": 5,
                "minMultiplicity": 0,
                "writable": True,
                "properties": [{"@type": "Property", "name": "rate", "schema": "double"}],
            },
            {"@type": "Component", "name": "part", "schema": "dtmi:ex:Part;1"},
        ],
    )


LOCATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "Interface": lambda d: d,
    "Telemetry": lambda d: d["contents"][0],
    "Property": lambda d: d["contents"][1],
    "Object": lambda d: d["contents"][2]["schema"],
    "Field": lambda d: d["contents"][2]["schema"]["fields"][0],
    "Array": lambda d: d["contents"][2]["schema"]["fields"][0]["schema"],
    "Map": lambda d: d["contents"][2]["schema"]["fields"][1]["schema"],
    "MapKey": lambda d: d["contents"][2]["schema"]["fields"][1]["schema"]["mapKey"],
    "Command": lambda d: d["contents"][3],
    "CommandPayload": lambda d: d["contents"][3]["request"],
    "Relationship": lambda d: d["contents"][4],
    "Component": lambda d: d["contents"][5],
    "Enum": lambda d: d["schemas"][0],
    "EnumValue": lambda d: d["schemas"][0]["enumValues"][0],
}
NAMED = {"name": "string", "displayName": "lang", "description": "lang", "comment": "string"}
COMMON = {"@id": "id", "@type": "type", "displayName": "lang", "description": "lang"}
PROPERTIES: dict[str, dict[str, str]] = {
    "Interface": {
        **COMMON,
        "@context": "context",
        "comment": "string",
        "contents": "elements",
        "extends": "refs",
        "schemas": "elements",
    },
    "Telemetry": {**COMMON, **NAMED, "schema": "schema"},
    "Property": {**COMMON, **NAMED, "schema": "schema", "writable": "bool"},
    "Object": {**COMMON, "fields": "elements"},
    "Field": {**COMMON, **NAMED, "schema": "schema"},
    "Array": {**COMMON, "elementSchema": "schema"},
    "Map": {**COMMON, "mapKey": "element", "mapValue": "element"},
    "MapKey": {**NAMED, "schema": "ref"},
    "Command": {**COMMON, **NAMED, "request": "element", "response": "element"},
    "CommandPayload": {**NAMED, "schema": "schema"},
    "Relationship": {
        **COMMON,
        **NAMED,
        "target": "ref",
        "maxMultiplicity": "count",
        "minMultiplicity": "count",
        "writable": "bool",
        "properties": "elements",
    },
    "Component": {**COMMON, **NAMED, "schema": "ref"},
    "Enum": {**COMMON, "valueSchema": "ref", "enumValues": "elements"},
    "EnumValue": {**NAMED, "enumValue": "integer"},
}
# Values no property of the kind accepts (a JSON type it does not take, a string no rule
# allows, a value too long for any limit).
UNIVERSAL: list[Any] = [None, 0.5, HUGE, {"x": [1, {"y": None}]}, [[]]]
WRONG: dict[str, list[Any]] = {
    "string": [7, True, {"en": "x"}, ["a", 7]],
    "lang": [7, True, {"en": 7}, {"not a tag!": "x"}, {"en": None}, {"en": ["x"]}],
    "bool": ["true", 1, 0, ["yes"], {}],
    "count": ["1", -1, True, [1, 2], {}],
    "integer": ["one", True, [1, 2], {}],
    "elements": [7, True, "x", [7], ["x"], [None], [True]],
    "element": [
        7,
        True,
        "x",
        [7],
        [{"name": "a", "schema": "double"}, {"name": "b", "schema": "double"}],
    ],
    "schema": [7, True, "x", "dtmi:bad id;1", [7], {"@type": "Nonexistent"}, {}],
    "ref": [7, True, "x", "dtmi:bad id;1", [7], ["dtmi:ex:Part;1", "dtmi:ex:Base;1"]],
    "refs": [7, True, "x", "dtmi:bad id;1", [7], [None]],
    "id": [7, True, "x", "dtmi:bad id;1", [], ["dtmi:ex:Z;1"], {}],
    "type": [7, True, "Nonexistent", [], [7], {"@id": "x"}],
    "context": [7, True, "x", "dtmi:dtdl:context;99", [], {}, [7]],
}
CASES = [
    (kind_name, prop, kind, version)
    for version in (2, 3, 4)
    for kind_name, props in PROPERTIES.items()
    for prop, kind in props.items()
]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_the_host_model_is_valid(version: int) -> None:
    result = outcome([host(version), *dependencies(version)])
    assert isinstance(result, ModelSet), result
    assert set(result.interface("dtmi:ex:Host;1").contents) >= {"temp", "part", "up", "feeds"}


@pytest.mark.parametrize(
    ("element", "prop", "kind", "version"),
    CASES,
    ids=[f"v{v}-{e}-{p}" for e, p, _, v in CASES],
)
def test_wrong_json_types_are_rejected(element: str, prop: str, kind: str, version: int) -> None:
    accepted = []
    others = dependencies(version)
    assert isinstance(outcome([host(version), *others]), ModelSet), "the unmodified host must parse"
    for value in [*UNIVERSAL, *WRONG[kind]]:
        doc = host(version)
        LOCATIONS[element](doc)[prop] = value
        result = outcome([doc, *others])
        if not isinstance(result, ModelParsingError):
            accepted.append(f"{str(value)[:40]!r} -> {result!r}"[:200])
    # Removing the property is legal or not, but never a crash.
    doc = host(version)
    LOCATIONS[element](doc).pop(prop, None)
    outcome([doc, *others])
    assert not accepted, f"{element}.{prop} accepted wrong values: {accepted}"


# -- depth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[" * 100_000,
        '[{"@context": "dtmi:dtdl:context;3", "x": ' + "[" * 100_000 + "]" * 100_000 + "}]",
    ],
    ids=["arrays", "objects", "unclosed", "inside an element"],
)
def test_json_text_nested_100000_deep_is_rejected(text: str) -> None:
    rejected([text])
    rejected([text.encode()])


def _nested_list(depth: int) -> list[Any]:
    root: list[Any] = []
    current = root
    for _ in range(depth):
        child: list[Any] = []
        current.append(child)
        current = child
    return root


def test_decoded_value_nested_100000_deep_is_rejected() -> None:
    rejected([_nested_list(100_000)])
    rejected([interface(comment=_nested_list(100_000))])


def _object_chain(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    current = root
    for i in range(depth):
        child: dict[str, Any] = {}
        current.update({"@type": "Object", "fields": [{"name": f"f{i}", "schema": child}]})
        current = child
    current.update({"@type": "Object", "fields": [{"name": "leaf", "schema": "double"}]})
    return root


@pytest.mark.parametrize("version", [2, 3, 4])
@pytest.mark.parametrize("depth", [10, 40, 300])
def test_deep_object_schema_chain_is_rejected(version: int, depth: int) -> None:
    doc = interface(
        version=version,
        contents=[{"@type": "Property", "name": "p", "schema": _object_chain(depth)}],
    )
    error = rejected([doc])
    assert rules(error) & {"excessiveDepth", "excessiveNesting"}, rules(error)


# -- size ------------------------------------------------------------------------------


def _timed(docs: list[Any], limit_s: float, **options: Any) -> Outcome:
    start = time.perf_counter()
    result = outcome(docs, **options)
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"took {elapsed:.1f}s"
    return result


@pytest.mark.parametrize("version", [2, 3, 4])
@pytest.mark.parametrize("where", ["description", "comment", "name", "@id", "extends"])
def test_ten_megabyte_strings_are_rejected_quickly(version: int, where: str) -> None:
    doc = interface(version=version, contents=telemetries(1))
    if where == "name":
        doc["contents"][0]["name"] = "t" + TEN_MB
    elif where == "@id":
        doc["@id"] = "dtmi:ex:" + TEN_MB + ";1"
    elif where == "extends":
        doc["extends"] = "dtmi:ex:" + TEN_MB + ";1"
    else:
        doc[where] = TEN_MB
    error = _timed([json.dumps(doc)], 5.0)
    assert isinstance(error, ModelParsingError), error


def test_fifty_thousand_contents_are_over_the_v2_limit() -> None:
    error = _timed([json.dumps(interface(version=2, contents=telemetries(50_000)))], 10.0)
    assert isinstance(error, ModelParsingError), error
    assert "tooManyValues" in rules(error)
    assert isinstance(outcome([interface(version=2, contents=telemetries(300))]), ModelSet)
    error = rejected([interface(version=2, contents=telemetries(301))])
    assert rules(error) == {"tooManyValues"}


@pytest.mark.parametrize("version", [3, 4])
def test_fifteen_thousand_contents_are_within_the_v3_v4_limits(version: int) -> None:
    # About 0.8 MiB of text: more would pass the 1 MiByte an Interface's text may have.
    result = _timed([json.dumps(interface(version=version, contents=telemetries(15_000)))], 10.0)
    assert isinstance(result, ModelSet), result
    assert len(result.interface("dtmi:ex:A;1").contents) == 15_000


def test_more_than_100000_elements_are_rejected_in_v4() -> None:
    # Spread over the schemas of six Components, each within the text limit on its own.
    parts = [
        interface(f"dtmi:ex:P{n};1", version=4, contents=telemetries(16_667)) for n in range(6)
    ]
    components = [
        {"@type": "Component", "name": f"c{n}", "schema": part["@id"]}
        for n, part in enumerate(parts)
    ]
    error = _timed([json.dumps([interface(version=4, contents=components), *parts])], 15.0)
    assert isinstance(error, ModelParsingError), error
    assert rules(error) == {"excessiveCount"}


@pytest.mark.parametrize(
    "dtmi",
    [
        "dtmi:" + "a" * 4090 + "_",
        "dtmi:" + "a:" * 2040 + "a_",
        "dtmi:_" + "_" * 4090 + "!",
        "dtmi:a" + "0" * 4000 + ";1.",
        "dtmi:" + "a" * 3000 + ";" + "1" * 1000,
    ],
    ids=[
        "trailing underscore",
        "many segments",
        "system underscores",
        "dangling dot",
        "long version",
    ],
)
def test_near_limit_dtmis_are_rejected_quickly(dtmi: str) -> None:
    docs = [interface(dtmi), interface(extends=dtmi)]
    for doc in docs:
        error = _timed([doc], 2.0)
        assert isinstance(error, ModelParsingError), error


# -- cycles ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3, 4])
def test_extends_cycles_are_rejected(version: int) -> None:
    a = interface("dtmi:ex:A;1", version, extends="dtmi:ex:B;1")
    b = interface("dtmi:ex:B;1", version, extends="dtmi:ex:A;1")
    assert "recursiveStructure" in rules(rejected([a, b]))
    assert "recursiveStructure" in rules(
        rejected([interface(version=version, extends="dtmi:ex:A;1")])
    )


@pytest.mark.parametrize("version", [2, 3, 4])
def test_extends_cycle_through_the_resolver_is_rejected(version: int) -> None:
    calls: list[list[str]] = []

    def resolver(dtmis: list[str]) -> list[Any]:
        calls.append(dtmis)
        return [interface(d, version, extends="dtmi:ex:A;1") for d in dtmis]

    a = interface("dtmi:ex:A;1", version, extends="dtmi:ex:B;1")
    assert "recursiveStructure" in rules(rejected([a], resolver=resolver))
    assert calls == [["dtmi:ex:B;1"]]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_component_cycles_are_rejected(version: int) -> None:
    def with_component(dtmi: str, schema: str) -> dict[str, Any]:
        component = {"@type": "Component", "name": "c", "schema": schema}
        return interface(dtmi, version, contents=[component])

    rejected(
        [with_component("dtmi:ex:A;1", "dtmi:ex:B;1"), with_component("dtmi:ex:B;1", "dtmi:ex:A;1")]
    )
    rejected([with_component("dtmi:ex:A;1", "dtmi:ex:A;1")])


def _recursive_object(version: int) -> dict[str, Any]:
    node = {
        "@id": "dtmi:ex:Node;1",
        "@type": "Object",
        "fields": [
            {"name": "value", "schema": "double"},
            {"name": "next", "schema": "dtmi:ex:Node;1"},
        ],
    }
    return interface(
        version=version,
        schemas=[node],
        contents=[{"@type": "Property", "name": "list", "schema": "dtmi:ex:Node;1"}],
    )


@pytest.mark.parametrize("version", [2, 3])
def test_recursive_object_schema_is_invalid_before_v4(version: int) -> None:
    assert "recursiveStructure" in rules(rejected([_recursive_object(version)]))


def test_recursive_object_schema_is_allowed_in_v4() -> None:
    result = outcome([_recursive_object(4)])
    assert isinstance(result, ModelSet), result
    node = result["dtmi:ex:Node;1"]
    assert isinstance(node, Object)
    following = [f for f in node.fields if f.name == "next"]
    assert len(following) == 1 and isinstance(following[0], Field)
    assert following[0].schema is node


def test_mutually_recursive_v4_schemas_through_an_array_are_allowed() -> None:
    tree = {
        "@id": "dtmi:ex:Tree;1",
        "@type": "Object",
        "fields": [{"name": "children", "schema": "dtmi:ex:Forest;1"}],
    }
    forest = {"@id": "dtmi:ex:Forest;1", "@type": "Array", "elementSchema": "dtmi:ex:Tree;1"}
    doc = interface(
        version=4,
        schemas=[tree, forest],
        contents=[{"@type": "Property", "name": "root", "schema": "dtmi:ex:Tree;1"}],
    )
    result = outcome([doc])
    assert isinstance(result, ModelSet), result
    assert result["dtmi:ex:Forest;1"].element_schema is result["dtmi:ex:Tree;1"]  # type: ignore[attr-defined]


# -- duplicates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "docs",
    [
        [interface(), interface()],
        [[interface(), interface()]],
        [VALID, VALID],
        [
            interface(
                contents=[
                    {"@id": "dtmi:ex:B;1", "@type": "Telemetry", "name": "t", "schema": "double"}
                ]
            ),
            interface("dtmi:ex:B;1"),
        ],
        [
            interface(
                contents=[
                    {"@id": "dtmi:ex:A;1", "@type": "Telemetry", "name": "t", "schema": "double"}
                ]
            )
        ],
    ],
    ids=[
        "two documents",
        "one array",
        "same text twice",
        "nested vs top-level",
        "nested same as parent",
    ],
)
def test_duplicate_ids_are_rejected(docs: list[Any]) -> None:
    assert "duplicateDefinition" in rules(rejected(docs))


def test_resolver_redefining_a_given_id_is_rejected() -> None:
    a = interface(extends="dtmi:ex:B;1")
    error = rejected([a], resolver=lambda dtmis: [interface(), *[interface(d) for d in dtmis]])
    assert "duplicateDefinition" in rules(error)


def test_ids_differing_only_in_case_are_distinct() -> None:
    result = outcome([interface("dtmi:ex:A;1"), interface("dtmi:ex:a;1")])
    assert isinstance(result, ModelSet), result
    assert set(result.interfaces) == {"dtmi:ex:A;1", "dtmi:ex:a;1"}


# -- injection-like identifiers ----------------------------------------------------------

INJECTIONS = [
    "dtmi:x;1' OR 1=1 --",
    'dtmi:x;1" OR "1"="1',
    "dtmi:x;1}) MATCH (n) DETACH DELETE n //",
    "../../etc/passwd",
    "dtmi:../../etc/passwd;1",
    "file:///etc/passwd",
    "dtmi:x;1\n",
    "dtmi:x;1\r\nX-Injected: 1",
    "dtmi:x;1\x00",
    "dtmi:caf\u00e9:x;1",
    "dtmi:\u0430:x;1",  # Cyrillic a
    "dtmi:x\u202e;1",
    "dtmi:x;\uff11",  # fullwidth digit one
    " dtmi:x;1",
    "dtmi:x;1 ",
    "<script>alert(1)</script>",
    "${jndi:ldap://x/a}",
]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("where", ["@id", "extends", "component schema", "target"])
def test_injection_like_identifiers_are_rejected(bad: str, where: str) -> None:
    doc = interface(contents=telemetries(1))
    if where == "@id":
        doc["@id"] = bad
    elif where == "extends":
        doc["extends"] = bad
    elif where == "component schema":
        doc["contents"].append({"@type": "Component", "name": "c", "schema": bad})
    else:
        doc["contents"].append({"@type": "Relationship", "name": "r", "target": bad})
    rejected([doc])
    rejected([json.dumps(doc)])


@pytest.mark.parametrize(
    "name",
    [
        "temp\n",
        "temp\r\nX: 1",
        "temp\x00",
        "temp' OR 1=1 --",
        "temp}) DETACH DELETE n //",
        "../temp",
        "te mp",
        "température",
        "тemp",  # Cyrillic te
        "temp​",  # zero-width space
        "",
    ],
)
def test_injection_like_names_are_rejected(name: str) -> None:
    doc = interface(contents=telemetries(1))
    doc["contents"][0]["name"] = name
    rejected([doc])


# -- hypothesis --------------------------------------------------------------------------

DTDL_WORDS = [
    "@context",
    "@id",
    "@type",
    "dtmi:dtdl:context;2",
    "dtmi:dtdl:context;3",
    "dtmi:dtdl:context;4",
    "Interface",
    "Telemetry",
    "Property",
    "Command",
    "Relationship",
    "Component",
    "Object",
    "Enum",
    "Map",
    "Array",
    "contents",
    "schemas",
    "extends",
    "schema",
    "fields",
    "name",
    "enumValues",
    "enumValue",
    "valueSchema",
    "elementSchema",
    "mapKey",
    "mapValue",
    "target",
    "double",
    "string",
    "integer",
    "dtmi:ex:A;1",
    "dtmi:ex:B;1",
    "dtmi:ex:A",
    "dtmi:ex:A;1.2",
    "displayName",
    "en",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(DTDL_WORDS)
)
keys = st.sampled_from(DTDL_WORDS) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)


def _as_text(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity become the non-JSON literals


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, as_text=st.booleans(), version=st.sampled_from([None, 2, 3]))
def test_random_json_values(value: Any, as_text: bool, version: int | None) -> None:
    outcome([_as_text(value) if as_text else value], max_dtdl_version=version)


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), version=st.sampled_from([2, 3, 4]), as_text=st.booleans())
def test_mutated_valid_interfaces(data: st.DataObject, version: int, as_text: bool) -> None:
    doc = copy.deepcopy(host(version))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        targets = list(_dicts(doc))
        target = targets[data.draw(st.integers(0, len(targets) - 1), label="element")]
        operation = data.draw(st.sampled_from(["drop", "replace", "add"]), label="operation")
        if operation == "add" or not target:
            target[data.draw(keys, label="new key")] = data.draw(json_values, label="new value")
            continue
        key = data.draw(st.sampled_from(sorted(target)), label="key")
        if operation == "drop":
            del target[key]
        else:
            target[key] = data.draw(json_values, label="value")
    docs = [doc, *dependencies(version)]
    result = outcome([_as_text(d) for d in docs] if as_text else docs)
    if isinstance(result, ModelSet):
        assert all(isinstance(i, str) for i in result.interfaces)
