"""The MQTT extension's rules among siblings: ``index`` values are unique among the
elements of one property, and a Result Object has at most one NormalResult Field, which
only a Result may hold."""

from __future__ import annotations

import json
from typing import Any

from twinforge.twin_models import ModelParsingError, parse_models

CONTEXT = ["dtmi:dtdl:context;4", "dtmi:dtdl:extension:mqtt;3"]


def errors(doc: dict[str, Any]) -> list[tuple[str, str | None]]:
    try:
        parse_models([json.dumps(doc)])
    except ModelParsingError as error:
        return [(e.validation_id.rsplit(":", 1)[-1], e.property) for e in error.errors]
    return []


def mqtt_interface(dtmi: str, contents: list[dict[str, Any]], **topics: str) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "@id": dtmi,
        "@type": ["Interface", "Mqtt"],
        "payloadFormat": "Json/ecma/404",
        **topics,
        "contents": contents,
    }


def vehicle(*indexes: int) -> dict[str, Any]:
    return mqtt_interface(
        "dtmi:example:TestVehicle;1",
        [
            {"@type": ["Telemetry", "Indexed"], "name": f"t{n}", "schema": "double", "index": i}
            for n, i in enumerate(indexes)
        ],
        telemetryTopic="vehicles/{modelId}/{senderId}/telemetry",
    )


def test_indexes_must_differ_among_siblings() -> None:
    assert errors(vehicle(3, 2)) == []
    assert errors(vehicle(3, 2, 3)) == [("duplicateValue", "index")]


def counter(*fields: dict[str, Any], result: bool = True) -> dict[str, Any]:
    response = {
        "name": "incrementResponse",
        "schema": {"@type": ["Object", "Result"] if result else "Object", "fields": list(fields)},
    }
    return mqtt_interface(
        "dtmi:com:example:CounterCollection;1",
        [{"@type": "Command", "name": "increment", "response": response}],
        commandTopic="rpc/command-samples/{executorId}/{commandName}",
    )


NORMAL = {"@type": ["Field", "NormalResult"], "name": "counterValue", "schema": "integer"}


def test_one_normal_result_in_a_result_object() -> None:
    assert errors(counter(NORMAL)) == []
    second = {**NORMAL, "name": "otherValue"}
    assert errors(counter(NORMAL, second)) == [("duplicateCotype", None)]


def test_a_normal_result_belongs_in_a_result_object() -> None:
    assert errors(counter(NORMAL, result=False)) == [("misplacedCotype", None)]


def test_the_specifications_result_example_is_valid() -> None:
    error_object = {
        "@id": "dtmi:com:example:CounterCollection:CounterError;1",
        "@type": ["Object", "Error"],
        "fields": [
            {"@type": ["Field", "ErrorMessage"], "name": "explanation", "schema": "string"},
            {"name": "condition", "schema": "integer"},
        ],
    }
    error_result = {
        "@type": ["Field", "ErrorResult"],
        "name": "incrementError",
        "schema": error_object,
    }
    assert errors(counter(NORMAL, error_result)) == []
    other_object = {**error_object, "@id": "dtmi:com:example:CounterCollection:Other;1"}
    again = {**error_result, "name": "again", "schema": other_object}
    assert errors(counter(NORMAL, error_result, again)) == [("duplicateCotype", None)]
