"""The parse_models contract of DESIGN.md and the typed object model it returns."""

from __future__ import annotations

import json

import pytest

from twinforge.twin_models import (
    Command,
    Component,
    Dtmi,
    Enum,
    Interface,
    ModelParsingError,
    Object,
    PrimitiveSchema,
    Relationship,
    ResolutionError,
    Telemetry,
    child_dtmi,
    is_user_dtmi,
    parse_models,
)

BASE = {
    "@context": "dtmi:dtdl:context;3",
    "@id": "dtmi:com:example:Equipment;1",
    "@type": "Interface",
    "displayName": {"en": "Equipment", "de": "Anlage"},
    "contents": [
        {"@type": "Property", "name": "serialNumber", "schema": "string"},
        {
            "@type": "Relationship",
            "name": "feeds",
            "target": "dtmi:com:example:Equipment;1",
            "maxMultiplicity": 4,
        },
    ],
}
PUMP = {
    "@context": ["dtmi:dtdl:context;3", "dtmi:dtdl:extension:quantitativeTypes;1"],
    "@id": "dtmi:com:example:Pump;1",
    "@type": "Interface",
    "extends": "dtmi:com:example:Equipment;1",
    "contents": [
        {
            "@type": ["Telemetry", "Temperature"],
            "name": "bearingTemp",
            "schema": "double",
            "unit": "degreeCelsius",
        },
        {
            "@type": "Property",
            "name": "state",
            "writable": True,
            "schema": {
                "@type": "Enum",
                "valueSchema": "string",
                "enumValues": [
                    {"name": "running", "enumValue": "running"},
                    {"name": "fault", "enumValue": "fault"},
                ],
            },
        },
        {
            "@type": "Command",
            "name": "setSpeed",
            "request": {"name": "rpm", "schema": "double"},
            "response": {
                "name": "result",
                "schema": {"@type": "Object", "fields": [{"name": "ok", "schema": "boolean"}]},
            },
        },
        {"@type": "Component", "name": "motor", "schema": "dtmi:com:example:Motor;1"},
    ],
}
MOTOR = {
    "@context": "dtmi:dtdl:context;3",
    "@id": "dtmi:com:example:Motor;1",
    "@type": "Interface",
    "contents": [{"@type": "Telemetry", "name": "current", "schema": "double"}],
}


def _docs(*models: dict) -> list[str]:
    return [json.dumps(m) for m in models]


def test_typed_model_with_inheritance_components_and_units() -> None:
    models = parse_models(_docs(BASE, PUMP, MOTOR))
    pump = models.interface("dtmi:com:example:Pump;1")
    assert isinstance(pump, Interface)
    assert set(pump.contents) == {
        "serialNumber",
        "feeds",
        "bearingTemp",
        "state",
        "setSpeed",
        "motor",
    }
    assert [c.name for c in pump.own_contents] == ["bearingTemp", "state", "setSpeed", "motor"]
    temp = pump.telemetries["bearingTemp"]
    assert isinstance(temp, Telemetry) and isinstance(temp.schema, PrimitiveSchema)
    assert temp.schema.name == "double"
    assert temp.supplemental_types == ["Temperature"] and temp.unit == "degreeCelsius"
    state = pump.properties["state"]
    assert state.writable is True and isinstance(state.schema, Enum)
    assert [v.enum_value for v in state.schema.enum_values] == ["running", "fault"]
    command = pump.commands["setSpeed"]
    assert isinstance(command, Command) and command.request.schema.name == "double"
    assert (
        isinstance(command.response.schema, Object)
        and command.response.schema.fields[0].name == "ok"
    )
    motor = pump.components["motor"]
    assert isinstance(motor, Component) and motor.schema is models.interface(
        "dtmi:com:example:Motor;1"
    )
    feeds = pump.relationships["feeds"]
    assert isinstance(feeds, Relationship) and feeds.max_multiplicity == 4
    assert feeds.target == "dtmi:com:example:Equipment;1"
    assert pump.is_a("dtmi:com:example:Equipment;1") and not models.interface(BASE["@id"]).is_a(
        PUMP["@id"]
    )
    assert models.interface(BASE["@id"]).display_name == {"en": "Equipment", "de": "Anlage"}
    # nested elements without @id get the identifiers the DTDL spec assigns
    assert state.id == "dtmi:com:example:Pump:_contents:__state;1"
    assert state.schema.id == "dtmi:com:example:Pump:_contents:__state:_schema;1"


def test_errors_name_the_rule_the_element_and_the_property() -> None:
    bad = dict(
        BASE,
        contents=[
            *BASE["contents"],
            {"@type": "Telemetry", "name": "serialNumber", "schema": "double"},
        ],
    )
    with pytest.raises(ModelParsingError) as caught:
        parse_models(_docs(bad))
    error = caught.value.errors[0]
    assert error.validation_id == "dtmi:dtdl:parsingError:nonUniquePropertyValue"
    assert error.primary_id == "dtmi:com:example:Equipment;1"
    assert error.property == "contents" and error.value == "serialNumber"
    assert "serialNumber" in error.cause and error.action
    assert error.document == 0


def test_generated_ids_come_from_names_or_positions_never_from_memory() -> None:
    # An element without @id gets <parent>:_<property>:__<name> (DTDL spec, "Automatic
    # Identifier Assignment"); without a valid name its index stands in, on every parse.
    model = {
        "@context": "dtmi:dtdl:context;3",
        "@id": "dtmi:com:example:Gen;1",
        "@type": "Interface",
        "contents": [
            {"@type": "Property", "name": "good", "schema": "double"},
            {"@type": "Property", "schema": "double"},  # no name
            {"@type": "Telemetry", "name": "bad name", "schema": "double"},
        ],
    }

    def error_ids() -> list[str]:
        with pytest.raises(ModelParsingError) as caught:
            parse_models(_docs(model))
        return sorted(str(e.primary_id) for e in caught.value.errors)

    first = error_ids()
    assert first == error_ids()
    assert first == ["dtmi:com:example:Gen:_contents:__1;1", "dtmi:com:example:Gen:_contents:__2;1"]
    named = dict(model, contents=model["contents"][:1])
    good = parse_models(_docs(named)).interface("dtmi:com:example:Gen;1").contents["good"]
    assert good.id == "dtmi:com:example:Gen:_contents:__good;1"


@pytest.mark.parametrize(
    ("patch", "rule", "prop"),
    [
        ({"@id": "dtmi:dtdl:reserved;1"}, "invalidId", "@id"),
        ({"@id": 42}, "invalidId", "@id"),
        ({"@type": "Telemetry"}, "notRootable", None),
        ({"displayName": 7}, "invalidLocalizableString", "displayName"),
        ({"comment": "x" * 600}, "invalidPropertyValue", "comment"),
        ({"extends": "dtmi:com:example:Equipment;1"}, "recursiveStructure", "extends"),
        (
            {"schemas": [{"@type": "Array", "elementSchema": "double"}]},
            "missingIdProperty",
            "schemas",
        ),
        ({"foo": 1}, "invalidProperty", "foo"),
    ],
)
def test_each_rule_reports_its_id(patch: dict, rule: str, prop: str | None) -> None:
    with pytest.raises(ModelParsingError) as caught:
        parse_models(_docs(dict(BASE, **patch)))
    ids = [(e.validation_id.rsplit(":", 1)[-1], e.property) for e in caught.value.errors]
    assert (rule, prop) in ids, ids


def test_undefined_references_raise_resolution_error() -> None:
    with pytest.raises(ResolutionError) as caught:
        parse_models(_docs(PUMP))
    assert caught.value.undefined_ids == [
        "dtmi:com:example:Equipment;1",
        "dtmi:com:example:Motor;1",
    ]


def test_resolver_is_asked_for_undefined_ids_until_none_remain() -> None:
    asked: list[list[str]] = []
    store = {BASE["@id"]: json.dumps(BASE), MOTOR["@id"]: json.dumps(MOTOR)}

    def resolver(ids: list[str]) -> list[str]:
        asked.append(ids)
        return [store[i] for i in ids if i in store]

    models = parse_models(_docs(PUMP), resolver=resolver)
    assert asked == [["dtmi:com:example:Equipment;1", "dtmi:com:example:Motor;1"]]
    assert "serialNumber" in models.interface(PUMP["@id"]).contents


def test_resolver_that_supplies_nothing_leaves_a_resolution_error() -> None:
    with pytest.raises(ResolutionError) as caught:
        parse_models(_docs(PUMP), resolver=lambda ids: [])
    assert "dtmi:com:example:Motor;1" in caught.value.undefined_ids


def test_max_dtdl_version_and_undefined_extensions() -> None:
    with pytest.raises(ModelParsingError) as caught:
        parse_models(_docs(MOTOR), max_dtdl_version=2)
    assert caught.value.errors[0].validation_id.endswith("disallowedVersionDefinition")
    extended = dict(MOTOR, **{"@context": ["dtmi:dtdl:context;3", "dtmi:com:acme:context;1"]})
    with pytest.raises(ModelParsingError):
        parse_models(_docs(extended))
    assert parse_models(_docs(extended), allow_undefined_extensions=True).interface(MOTOR["@id"])


def test_dtmi_syntax() -> None:
    parsed = Dtmi.parse("dtmi:com:example:Thermostat;12.3")
    assert parsed.labels == ("com", "example", "Thermostat")
    assert (parsed.major_version, parsed.minor_version) == (12, 3)
    assert str(parsed) == "dtmi:com:example:Thermostat;12.3"
    for bad in ("dtmi:com:example;0", "dtmi::x;1", "dtmi:1com:x;1", "urn:x", "dtmi:com:x;01"):
        with pytest.raises(ValueError):
            Dtmi.parse(bad)
    assert is_user_dtmi("dtmi:com:example:Thermostat;1", 2)
    assert not is_user_dtmi("dtmi:com:example:Thermostat", 2) and is_user_dtmi(
        "dtmi:com:example:Thermostat", 3
    )
    assert not is_user_dtmi("dtmi:com:_system:x;1")
    assert child_dtmi("dtmi:ex:a;1", "contents", "temp") == "dtmi:ex:a:_contents:__temp;1"
    assert child_dtmi("dtmi:ex:a", "schema") == "dtmi:ex:a:_schema"


@pytest.mark.parametrize("version", [2, 3])
def test_interfaces_that_contain_each_other_are_rejected(version: int) -> None:
    # Reference cycles are the only way contents can loop; the checks that skip acyclic
    # sets must still see this one.
    def interface(name: str, other: str) -> dict:
        return {
            "@context": f"dtmi:dtdl:context;{version}",
            "@id": f"dtmi:test:{name};1",
            "@type": "Interface",
            "contents": [{"@type": "Component", "name": "part", "schema": f"dtmi:test:{other};1"}],
        }

    with pytest.raises(ModelParsingError) as raised:
        parse_models([json.dumps(interface("A", "B")), json.dumps(interface("B", "A"))])
    rules = {e.validation_id.rsplit(":", 1)[-1] for e in raised.value.errors}
    assert rules & {"recursiveStructure", "excludedType"}
