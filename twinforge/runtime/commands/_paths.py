"""Bounds paths: ``rpm``, ``part.partId``, ``recipe.steps.*.temperature``.

A path starts with the request's DTDL name and goes down Object fields by name; ``*``
stands for every element of an Array or every value of a Map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinforge.twin_models import Array, Command, Map, Object


def path_problem(path: str, command: Command) -> str | None:
    """Why ``path`` cannot name a value of ``command``'s request, or None when it can."""
    segments = path.split(".")
    request = command.request
    if request is None:
        return f"{command.name} takes no request"
    if request.name != segments[0]:
        return f"the request of {command.name} is named {request.name!r}"
    schema, where = request.schema, segments[0]
    for segment in segments[1:]:
        if segment == "*":
            if isinstance(schema, Array):
                schema = schema.element_schema
            elif isinstance(schema, Map) and schema.map_value is not None:
                schema = schema.map_value.schema
            else:
                return f"{where} is not an Array or a Map"
        elif isinstance(schema, Object):
            field = next((f for f in schema.fields if f.name == segment), None)
            if field is None:
                return f"{where} has no field {segment!r}"
            schema = field.schema
        else:
            return f"{where} is not an Object"
        where = f"{where}.{segment}"
    return None


def values_at(path: str, request: Any) -> list[tuple[str, Any]]:
    """The values present at ``path`` in a request, each with its concrete place."""
    segments = path.split(".")
    found: list[tuple[str, Any]] = [(segments[0], request)]
    for segment in segments[1:]:
        deeper: list[tuple[str, Any]] = []
        for where, value in found:
            if segment == "*" and isinstance(value, list):
                deeper.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
            elif segment == "*" and isinstance(value, Mapping):
                deeper.extend((f"{where}.{key}", item) for key, item in value.items())
            elif isinstance(value, Mapping) and segment in value:
                deeper.append((f"{where}.{segment}", value[segment]))
        found = deeper
    # None means absent (an optional field left out); the schema check has ruled on it.
    return [(where, value) for where, value in found if value is not None]
