"""Query arguments the API refuses instead of answering with an empty page."""

from __future__ import annotations

from typing import Any

import pytest
from support.graphql_parts import Api

PUMP = "dtmi:com:twinforge:factory:Pump;1"
TWINS = "query($m: String) { twins(model: $m, first: 5) { nodes { dtId } } }"


def _errors(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return answer.get("errors", [])


@pytest.mark.parametrize(
    "model", ["not-a-dtmi", "dtmi:com:twinforge:factory:Pump;", "Pump", "", "dtmi:1st:x;1"]
)
def test_twins_refuses_a_model_that_is_not_a_dtmi(api: Api, model: str) -> None:
    answer = api.post(TWINS, {"m": model}, role="viewer")
    errors = _errors(answer)
    assert len(errors) == 1, answer
    error = errors[0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["path"] == ["twins"]
    assert "model" in error["message"] and repr(model) in error["message"]
    assert [p["field"] for p in error["extensions"]["problems"]] == ["model"]
    assert answer.get("data") is None


def test_twins_takes_a_valid_model(api: Api) -> None:
    answer = api.post(TWINS, {"m": PUMP}, role="viewer")
    assert "errors" not in answer, answer
    assert [n["dtId"] for n in answer["data"]["twins"]["nodes"]] == [
        "pump-01",
        "pump-02",
        "pump-03",
    ]
    # A DTMI no stored model has is a valid question with an empty answer.
    unknown = api.post(TWINS, {"m": "dtmi:com:example:Nothing;1"}, role="viewer")
    assert "errors" not in unknown and unknown["data"]["twins"]["nodes"] == []
