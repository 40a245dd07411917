"""DTDL v3/v4: each Interface's text is at most 1 MiByte, without the Interfaces it
extends and its Components' schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from twinforge.twin_models import ModelParsingError, parse_models
from twinforge.twin_models.interface_size import MAX_INTERFACE_BYTES

TOO_LARGE = "dtmi:dtdl:parsingError:interfaceTooLarge"


def properties(count: int, prefix: str = "p") -> list[dict[str, Any]]:
    # 500-character descriptions: about 560 bytes a property, every one within its limits.
    return [
        {"@type": "Property", "name": f"{prefix}{i}", "schema": "double", "description": "d" * 500}
        for i in range(count)
    ]


def interface(dtmi: str, contents: list[Any], version: int = 3, **more: Any) -> dict[str, Any]:
    return {
        "@context": f"dtmi:dtdl:context;{version}",
        "@id": dtmi,
        "@type": "Interface",
        "contents": contents,
        **more,
    }


def verdict(doc: Any) -> list[tuple[str, str | None]]:
    try:
        parse_models([doc])
    except ModelParsingError as error:
        return [(e.validation_id, e.primary_id) for e in error.errors]
    return []


OVER = 2000  # about 1.1 MiB of properties
UNDER = 1500  # about 0.8 MiB


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("as_text", [True, False])
def test_an_interface_over_one_mebibyte_is_refused(version: int, as_text: bool) -> None:
    big = interface("dtmi:ex:big;1", properties(OVER), version)
    assert len(json.dumps(big)) > MAX_INTERFACE_BYTES
    assert verdict(json.dumps(big) if as_text else big) == [(TOO_LARGE, "dtmi:ex:big;1")]
    assert verdict(interface("dtmi:ex:big;1", properties(UNDER), version)) == []


def test_dtdl_v2_states_no_such_limit() -> None:
    # v2's contents limit (300) comes first: the size rule is not what refuses it.
    errors = verdict(interface("dtmi:ex:big;1", properties(OVER), version=2))
    assert TOO_LARGE not in {validation_id for validation_id, _ in errors}


def test_inline_extended_interfaces_and_component_schemas_count_on_their_own() -> None:
    parent = interface("dtmi:ex:parent;1", properties(UNDER))
    del parent["@context"]
    schema = interface("dtmi:ex:part;1", properties(UNDER, "q"))
    del schema["@context"]
    child = interface(
        "dtmi:ex:child;1",
        [*properties(UNDER, "c"), {"@type": "Component", "name": "part", "schema": schema}],
        extends=parent,
    )
    # Together far over the limit; each written part within it.
    assert len(json.dumps(child)) > 2 * MAX_INTERFACE_BYTES
    assert verdict(json.dumps(child)) == []

    too_big_part = interface("dtmi:ex:part;1", properties(OVER, "q"))
    del too_big_part["@context"]
    child["contents"][-1]["schema"] = too_big_part
    assert verdict(json.dumps(child)) == [(TOO_LARGE, "dtmi:ex:part;1")]
