"""Subscription events: per-event executions keep nothing once the event is answered, and
what subscribers share holds nothing of one user."""

from __future__ import annotations

from graphql import build_schema as build_sdl_schema
from graphql import parse
from graphql.execution import Executor

from twinforge.graphql.schema import build_schema
from twinforge.graphql.subscription import TelemetryUpdate

SDL = """
type Query { unused: Int }
type Point { value: Float, unit: String }
type Subscription { point: Point }
"""


def _memo_after_events(executor_class: type[Executor], events: int) -> int:
    executor = executor_class.build(
        build_sdl_schema(SDL), parse("subscription { point { value unit } }")
    )
    assert isinstance(executor, Executor)
    for value in range(events):
        per_event = executor.build_per_event_executor({"point": {"value": value, "unit": "C"}})
        result = per_event.execute_operation()
        assert result.data == {"point": {"value": value, "unit": "C"}}  # type: ignore[union-attr]
    return len(executor._relevant_sub_fields)


def test_each_event_gets_its_own_subfield_memo() -> None:
    executor_class = build_schema([]).schema.execution_context_class
    assert _memo_after_events(executor_class, 200) == 0


def test_graphql_core_alone_still_grows_the_memo_per_event() -> None:
    # Why the override exists: drop it once graphql-core stops sharing the memo.
    assert _memo_after_events(Executor, 200) == 200


def test_shared_payloads_have_no_per_user_fields() -> None:
    # One subscriber's answer is handed to every other: a field whose value or access
    # depended on the user (permissions, field extensions, resolvers reading the
    # context) would leak between them.
    for field in TelemetryUpdate.__strawberry_definition__.fields:
        assert not field.permission_classes and not field.extensions, field.name
        assert field.base_resolver is None, field.name
