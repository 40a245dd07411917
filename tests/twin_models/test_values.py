"""Value validation against parsed DTDL schemas: every primitive, the complex schemas,
twin properties with a Component, command payloads and telemetry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinforge.twin_models import Interface, parse_models
from twinforge.twin_models.values import (
    MAX_DEPTH,
    ValueProblem,
    validate_command_request,
    validate_telemetry,
    validate_twin_properties,
    validate_value,
)

PRIMITIVES = [
    "boolean", "byte", "bytes", "date", "dateTime", "decimal", "double", "duration", "float",
    "integer", "long", "short", "string", "time", "unsignedByte", "unsignedInteger",
    "unsignedLong", "unsignedShort", "uuid", "point", "multiPoint", "lineString",
    "multiLineString", "polygon", "multiPolygon", "scaledDecimal",
]  # fmt: skip

GAUGE = {
    "@context": ["dtmi:dtdl:context;4", "dtmi:dtdl:extension:requirement;1"],
    "@id": "dtmi:test:values:Gauge;1",
    "@type": "Interface",
    "contents": [{"@type": "Property", "name": "reading", "schema": "double"}],
}
MACHINE = {
    "@context": ["dtmi:dtdl:context;4", "dtmi:dtdl:extension:requirement;1"],
    "@id": "dtmi:test:values:Machine;1",
    "@type": "Interface",
    "contents": [
        *({"@type": "Property", "name": f"p_{name}", "schema": name} for name in PRIMITIVES),
        {
            "@type": "Property",
            "name": "tags",
            "schema": {"@type": "Array", "elementSchema": "string"},
        },
        {
            "@type": "Property",
            "name": "mode",
            "schema": {
                "@type": "Enum",
                "valueSchema": "string",
                "enumValues": [
                    {"name": "auto", "enumValue": "auto"},
                    {"name": "manual", "enumValue": "manual"},
                ],
            },
        },
        {
            "@type": "Property",
            "name": "level",
            "schema": {
                "@type": "Enum",
                "valueSchema": "integer",
                "enumValues": [{"name": "low", "enumValue": 1}, {"name": "high", "enumValue": 2}],
            },
        },
        {
            "@type": "Property",
            "name": "gains",
            "schema": {
                "@type": "Map",
                "mapKey": {"name": "axis", "schema": "string"},
                "mapValue": {"name": "gain", "schema": "double"},
            },
        },
        {
            "@type": "Property",
            "name": "settings",
            "writable": True,
            "schema": {
                "@type": "Object",
                "fields": [
                    {"@type": ["Field", "Required"], "name": "name", "schema": "string"},
                    {
                        "name": "limits",
                        "schema": {
                            "@type": "Array",
                            "elementSchema": {
                                "@type": "Object",
                                "fields": [
                                    {
                                        "@type": ["Field", "Required"],
                                        "name": "max",
                                        "schema": "integer",
                                    },
                                    {"name": "min", "schema": "integer"},
                                ],
                            },
                        },
                    },
                ],
            },
        },
        {"@type": "Telemetry", "name": "temperature", "schema": "double"},
        {"@type": "Relationship", "name": "feeds"},
        {"@type": "Component", "name": "gauge", "schema": "dtmi:test:values:Gauge;1"},
        {
            "@type": "Command",
            "name": "setSpeed",
            "request": {"name": "rpm", "schema": "integer"},
        },
        {
            "@type": "Command",
            "name": "calibrate",
            "request": {"name": "offset", "schema": "double", "nullable": True},
        },
        {"@type": "Command", "name": "stop"},
    ],
}

MODELS = parse_models([json.dumps(GAUGE), json.dumps(MACHINE)])
MACHINE_INTERFACE: Interface = MODELS.interface("dtmi:test:values:Machine;1")
PROPERTIES = MACHINE_INTERFACE.properties

SQUARE = [[0, 0], [1, 0], [1, 1], [0, 0]]

VALID: dict[str, list[Any]] = {
    "boolean": [True, False],
    "byte": [-128, 127],
    "bytes": ["", "aGVsbG8=", "QQ=="],
    "date": ["2024-02-29", "1999-12-31"],
    "dateTime": [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01T12:00:00.123456789-05:30",
    ],
    "decimal": ["0", "-1.5", "+12.", "3.14159265358979323846264338327950288"],
    "double": [0, -1.5, 1e308, 10**300],
    "duration": ["P1D", "PT1H30M", "P1Y2M3DT4H5M6.5S"],
    "float": [1.5, -3.4e38, 7],
    "integer": [0, -(2**31), 2**31 - 1],
    "long": [-(2**63), 2**63 - 1],
    "short": [-32768, 32767],
    "string": ["", "anything"],
    "time": ["12:00:00Z", "23:59:59.5+01:00"],
    "unsignedByte": [0, 255],
    "unsignedInteger": [2**32 - 1],
    "unsignedLong": [2**64 - 1],
    "unsignedShort": [65535],
    "uuid": ["123e4567-e89b-12d3-a456-426614174000"],
    "point": [
        {"type": "Point", "coordinates": [8.5, 47.4]},
        {"type": "Point", "coordinates": [1, 2, 3]},
    ],
    "multiPoint": [{"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}],
    "lineString": [{"type": "LineString", "coordinates": [[1, 2], [3, 4]]}],
    "multiLineString": [{"type": "MultiLineString", "coordinates": [[[1, 2], [3, 4]]]}],
    "polygon": [{"type": "Polygon", "coordinates": [SQUARE]}],
    "multiPolygon": [{"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE, SQUARE]]}],
    "scaledDecimal": [{"scale": 2, "value": "123.45"}],
}

# (schema, value, rule, path below the property)
INVALID: list[tuple[str, Any, str, str]] = [
    ("boolean", 1, "type", ""),
    ("boolean", "true", "type", ""),
    ("byte", 128, "range", ""),
    ("byte", 1.0, "type", ""),
    ("bytes", "aGVsbG8", "format", ""),
    ("bytes", "a b=", "format", ""),
    ("bytes", "é===", "format", ""),
    ("date", "2023-02-29", "format", ""),
    ("date", "2024-5-1", "format", ""),
    ("date", "2024-05-01\n", "format", ""),
    ("date", "٢٠٢٤-05-01", "format", ""),
    ("dateTime", "2024-05-01T12:00:00", "format", ""),
    ("dateTime", "2024-05-01 12:00:00Z", "format", ""),
    ("dateTime", "2024-13-01T12:00:00Z", "format", ""),
    ("dateTime", "2024-05-01T24:00:00Z", "format", ""),
    ("dateTime", "2024-05-01T12:00:00+24:00", "format", ""),
    ("dateTime", "2024-05-01T12:00:00+01:60", "format", ""),
    ("dateTime", 1714564800, "type", ""),
    ("decimal", "1e5", "format", ""),
    ("decimal", "01.5", "format", ""),
    ("decimal", 1.5, "type", ""),
    ("double", True, "type", ""),
    ("double", "1.0", "type", ""),
    ("double", float("nan"), "range", ""),
    ("double", float("inf"), "range", ""),
    ("double", 10**400, "range", ""),
    ("duration", "P", "format", ""),
    ("duration", "1D", "format", ""),
    ("duration", "PT1S\n", "format", ""),
    ("float", 3.5e38, "range", ""),
    ("float", -(10**39), "range", ""),
    ("integer", 2**31, "range", ""),
    ("integer", -(2**31) - 1, "range", ""),
    ("integer", True, "type", ""),
    ("integer", 10**5000, "range", ""),
    ("long", 2**63, "range", ""),
    ("short", -32769, "range", ""),
    ("string", 5, "type", ""),
    ("string", None, "type", ""),
    ("time", "12:00:00", "format", ""),
    ("time", "12:60:00Z", "format", ""),
    ("unsignedByte", -1, "range", ""),
    ("unsignedInteger", 2**32, "range", ""),
    ("unsignedLong", 2**64, "range", ""),
    ("unsignedShort", 65536, "range", ""),
    ("uuid", "123e4567e89b12d3a456426614174000", "format", ""),
    ("uuid", "{123e4567-e89b-12d3-a456-426614174000}", "format", ""),
    ("point", [1, 2], "type", ""),
    ("point", {"type": "MultiPoint", "coordinates": [1, 2]}, "type", ".type"),
    ("point", {"type": "Point"}, "required", ".coordinates"),
    ("point", {"type": "Point", "coordinates": [1]}, "type", ".coordinates"),
    ("point", {"type": "Point", "coordinates": [1, float("nan")]}, "range", ".coordinates[1]"),
    ("point", {"type": "Point", "coordinates": [1, "2"]}, "type", ".coordinates[1]"),
    ("point", {"type": "Point", "coordinates": [1, 2], "crs": "x"}, "unknownField", ".crs"),
    ("multiPoint", {"type": "MultiPoint", "coordinates": [1, 2]}, "type", ".coordinates[0]"),
    ("lineString", {"type": "LineString", "coordinates": [[1, 2]]}, "format", ".coordinates"),
    ("multiLineString", {"type": "MultiLineString", "coordinates": [[[1, 2], [3, True]]]},
     "type", ".coordinates[0][1][1]"),
    ("polygon", {"type": "Polygon", "coordinates": [SQUARE[:3]]}, "format", ".coordinates[0]"),
    ("polygon", {"type": "Polygon", "coordinates": [[*SQUARE[:3], [5, 5]]]},
     "format", ".coordinates[0]"),
    ("multiPolygon", {"type": "MultiPolygon", "coordinates": [SQUARE]},
     "type", ".coordinates[0][0][0]"),
    ("scaledDecimal", {"scale": 2}, "required", ".value"),
    ("scaledDecimal", {"scale": 2.5, "value": "1"}, "type", ".scale"),
    ("scaledDecimal", {"scale": 2, "value": "x"}, "format", ".value"),
    ("scaledDecimal", {"scale": 2, "value": "1", "unit": "m"}, "unknownField", ".unit"),
]  # fmt: skip


def rules(problems: list[ValueProblem]) -> list[tuple[str, str]]:
    return [(p.rule, p.path) for p in problems]


def test_model_covers_every_primitive() -> None:
    assert sorted(VALID) == sorted(PRIMITIVES)
    assert {schema for schema, *_ in INVALID} == set(PRIMITIVES)


@pytest.mark.parametrize(
    ("name", "value"), [(name, v) for name, values in VALID.items() for v in values]
)
def test_valid_primitives_pass(name: str, value: Any) -> None:
    schema = PROPERTIES[f"p_{name}"].schema
    assert validate_value(value, schema, path=f"p_{name}") == []


@pytest.mark.parametrize(
    ("name", "value", "rule", "below"),
    INVALID,
    ids=[f"{name}-{rule}-{i}" for i, (name, _, rule, _) in enumerate(INVALID)],
)
def test_invalid_primitives_fail_with_rule_and_path(
    name: str, value: Any, rule: str, below: str
) -> None:
    problems = validate_value(value, PROPERTIES[f"p_{name}"].schema, path=f"p_{name}")
    assert (rule, f"p_{name}{below}") in rules(problems), problems
    assert all(p.message for p in problems)


def test_type_messages_name_the_schema_once() -> None:
    [plain] = validate_value(7, PROPERTIES["p_string"].schema, path="p_string")
    assert plain.message == "expected a string, got 7", plain
    [dated] = validate_value(7, PROPERTIES["p_date"].schema, path="p_date")
    assert dated.message == "expected a date string, got 7", dated


def test_huge_integer_message_stays_short() -> None:
    [problem] = validate_value(10**5000, PROPERTIES["p_integer"].schema)
    assert len(problem.message) < 100


def test_array() -> None:
    schema = PROPERTIES["tags"].schema
    assert validate_value(["a", "b"], schema) == []
    assert rules(validate_value("a", schema, path="tags")) == [("type", "tags")]
    assert rules(validate_value(["a", 1, None], schema, path="tags")) == [
        ("type", "tags[1]"),
        ("type", "tags[2]"),
    ]


@pytest.mark.parametrize(
    ("prop", "good", "bad", "rule"),
    [
        ("mode", "auto", "fast", "enum"),
        ("mode", "manual", 1, "type"),
        ("level", 2, 3, "enum"),
        ("level", 1, True, "type"),
        ("level", 1, "1", "type"),
    ],
)
def test_enum(prop: str, good: Any, bad: Any, rule: str) -> None:
    schema = PROPERTIES[prop].schema
    assert validate_value(good, schema) == []
    assert rules(validate_value(bad, schema, path=prop)) == [(rule, prop)]


def test_map() -> None:
    schema = PROPERTIES["gains"].schema
    assert validate_value({"x": 1.0, "y axis": 2}, schema) == []
    assert validate_value({}, schema) == []
    assert rules(validate_value([], schema, path="gains")) == [("type", "gains")]
    assert rules(validate_value({"x": "1", "a.b": None}, schema, path="gains")) == [
        ("type", "gains.x"),
        ("type", 'gains["a.b"]'),
    ]
    assert rules(validate_value({1: 1.0}, schema, path="gains")) == [("mapKey", "gains")]


def test_object_nested() -> None:
    schema = PROPERTIES["settings"].schema
    good = {
        "name": "s",
        "limits": [
            {"max": 5},
            {
                "max": 9,
                "min": 1,
            },
        ],
    }
    assert validate_value(good, schema, path="settings") == []
    assert validate_value({"name": "s", "limits": None}, schema) == []  # None is absent
    bad = {"limits": [{"max": 1}, {"min": 0}, {"max": 1, "min": 2**40, "avg": 3}], "x": 1}
    assert sorted(rules(validate_value(bad, schema, path="settings"))) == [
        ("range", "settings.limits[2].min"),
        ("required", "settings.limits[1].max"),
        ("required", "settings.name"),
        ("unknownField", "settings.limits[2].avg"),
        ("unknownField", "settings.x"),
    ]
    assert rules(validate_value({"name": None}, schema)) == [("required", "name")]
    assert rules(validate_value("s", schema)) == [("type", "")]


def test_twin_properties() -> None:
    good = {
        "$metadata": {"$model": "dtmi:test:values:Machine;1"},
        "p_double": 1.5,
        "mode": "auto",
        "gauge": {"$metadata": {}, "reading": 3.0},
        "settings": None,
    }
    assert validate_twin_properties(good, MACHINE_INTERFACE) == []
    bad = {
        "nope": 1,
        "temperature": 20.0,
        "feeds": None,
        "setSpeed": 1,
        "p_integer": "1",
        "gauge": {"reading": "hot", "other": 1},
    }
    assert sorted(rules(validate_twin_properties(bad, MACHINE_INTERFACE))) == [
        ("notAProperty", "feeds"),
        ("notAProperty", "setSpeed"),
        ("notAProperty", "temperature"),
        ("type", "gauge.reading"),
        ("type", "p_integer"),
        ("unknownProperty", "gauge.other"),
        ("unknownProperty", "nope"),
    ]
    assert rules(validate_twin_properties({"gauge": 5}, MACHINE_INTERFACE)) == [("type", "gauge")]
    assert rules(validate_twin_properties([], MACHINE_INTERFACE)) == [("type", "")]


def test_command_request() -> None:
    commands = MACHINE_INTERFACE.commands
    assert validate_command_request(1200, commands["setSpeed"]) == []
    assert rules(validate_command_request(None, commands["setSpeed"])) == [("required", "rpm")]
    assert rules(validate_command_request(1.5, commands["setSpeed"])) == [("type", "rpm")]
    assert validate_command_request(None, commands["calibrate"]) == []
    assert validate_command_request(0.5, commands["calibrate"]) == []
    assert validate_command_request(None, commands["stop"]) == []
    assert rules(validate_command_request({}, commands["stop"])) == [("unexpectedPayload", "stop")]


def test_telemetry() -> None:
    assert validate_telemetry("temperature", 21.5, MACHINE_INTERFACE) == []
    assert rules(validate_telemetry("temperature", "hot", MACHINE_INTERFACE)) == [
        ("type", "temperature")
    ]
    assert rules(validate_telemetry("pressure", 1.0, MACHINE_INTERFACE)) == [
        ("unknownTelemetry", "pressure")
    ]
    assert rules(validate_telemetry("mode", "auto", MACHINE_INTERFACE)) == [
        ("notATelemetry", "mode")
    ]


def recursive_array_schema() -> Any:
    doc = {
        "@context": "dtmi:dtdl:context;4",
        "@id": "dtmi:test:values:Tree;1",
        "@type": "Interface",
        "schemas": [
            {
                "@id": "dtmi:test:values:Nested;1",
                "@type": "Array",
                "elementSchema": "dtmi:test:values:Nested;1",
            }
        ],
        "contents": [{"@type": "Property", "name": "tree", "schema": "dtmi:test:values:Nested;1"}],
    }
    return parse_models([json.dumps(doc)]).interface(doc["@id"]).properties["tree"].schema


def test_deep_nesting_is_a_problem_not_a_recursion_error() -> None:
    value: Any = []
    for _ in range(5000):
        value = [value]
    problems = validate_value(value, recursive_array_schema(), path="tree")
    assert [p.rule for p in problems] == ["depth"]
    assert problems[0].path.count("[0]") == MAX_DEPTH + 1
    assert validate_value([[[]]], recursive_array_schema()) == []


def test_unknown_schema_kind_is_a_problem() -> None:
    gauge = MODELS.interface("dtmi:test:values:Gauge;1")
    assert rules(validate_value(1, gauge, path="x")) == [("schema", "x")]  # type: ignore[arg-type]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ALL_SCHEMAS = [p.schema for p in PROPERTIES.values()]


@settings(max_examples=300, deadline=None)
@given(value=JSON, index=st.integers(min_value=0, max_value=len(ALL_SCHEMAS) - 1))
def test_random_json_never_raises(value: Any, index: int) -> None:
    problems = validate_value(value, ALL_SCHEMAS[index], path="p")
    assert isinstance(problems, list)
    assert all(isinstance(p, ValueProblem) for p in problems)


@settings(max_examples=150, deadline=None)
@given(value=JSON)
def test_random_twin_documents_never_raise(value: Any) -> None:
    assert isinstance(validate_twin_properties(value, MACHINE_INTERFACE), list)
    assert isinstance(validate_telemetry("temperature", value, MACHINE_INTERFACE), list)
    assert isinstance(validate_command_request(value, MACHINE_INTERFACE.commands["setSpeed"]), list)
