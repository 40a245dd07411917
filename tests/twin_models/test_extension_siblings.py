"""Extension properties that name a sibling element: ValueAnnotation's ``annotates`` must
name a Property or Telemetry of the same Interface (not another annotation)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from twinforge.twin_models import ModelParsingError, parse_models

CONTEXT = ["dtmi:dtdl:context;4", "dtmi:dtdl:extension:annotation;2"]


def sensor(annotates: str, *more: dict[str, Any]) -> str:
    return json.dumps(
        {
            "@context": CONTEXT,
            "@id": "dtmi:com:example:Sensor;1",
            "@type": "Interface",
            "contents": [
                {"@type": "Telemetry", "name": "currentTemp", "schema": "double"},
                {"@type": "Command", "name": "reset"},
                {
                    "@type": ["Telemetry", "ValueAnnotation"],
                    "name": "currentTempAccuracy",
                    "annotates": annotates,
                    "schema": "double",
                },
                *more,
            ],
        }
    )


def errors(text: str) -> list[tuple[str, str | None, Any]]:
    try:
        parse_models([text])
    except ModelParsingError as error:
        return [(e.validation_id.rsplit(":", 1)[-1], e.property, e.value) for e in error.errors]
    return []


def test_an_annotation_of_a_telemetry_is_valid() -> None:
    assert errors(sensor("currentTemp")) == []
    model = parse_models([sensor("currentTemp")])
    assert model.interface("dtmi:com:example:Sensor;1") is not None


@pytest.mark.parametrize(
    ("annotates", "rule"),
    [
        ("nothing", "siblingNotFound"),
        ("currentTempAccuracy", "siblingNotFound"),  # itself: no other element of that name
        ("reset", "siblingWrongType"),  # a Command
    ],
)
def test_an_annotation_must_name_a_property_or_telemetry_sibling(annotates: str, rule: str) -> None:
    assert errors(sensor(annotates)) == [(rule, "annotates", annotates)]


def test_an_annotation_may_not_annotate_an_annotation() -> None:
    second = {
        "@type": ["Property", "ValueAnnotation"],
        "name": "lastCalibrated",
        "annotates": "currentTempAccuracy",
        "schema": "date",
    }
    assert errors(sensor("currentTemp", second)) == [
        ("siblingWrongType", "annotates", "currentTempAccuracy")
    ]
