"""Checking incoming values against the twin's DTDL interface, before anything is stored."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twinforge.ingest.messages import (
    UNKNOWN_COMPONENT,
    UNKNOWN_FIELD,
    UNKNOWN_TWIN,
    WRONG_TYPE,
)
from twinforge.twin_models.elements import (
    TELEMETRY,
    Component,
    Interface,
    PrimitiveSchema,
    Property,
    Schema,
    Telemetry,
    ValueKind,
)
from twinforge.twin_models.values import validate_value


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why values were refused: a reason constant, the field and a readable message."""

    reason: str
    field: str | None
    message: str


class TelemetryValidator:
    """Checks a message's values against its twin's interface (or component's).

    ``model_of`` gives a twin's model id (None: no such twin); ``interface_of`` the parsed
    Interface of a model id. Field schemas are looked up per model once and cached.
    """

    def __init__(
        self,
        model_of: Callable[[str], str | None],
        interface_of: Callable[[str], Interface | None],
    ) -> None:
        self._model_of = model_of
        self._interface_of = interface_of
        self._schemas: dict[tuple[str, str | None, str], dict[str, tuple[bool, Schema]]] = {}

    def check(
        self,
        twin_id: str,
        values: dict[str, Any],
        *,
        component: str | None = None,
        kind: ValueKind = TELEMETRY,
    ) -> Refusal | None:
        """None when every value fits its schema, else the first problem found."""
        model = self._model_of(twin_id)
        if model is None:
            return Refusal(UNKNOWN_TWIN, None, f"no twin {twin_id!r}")
        schemas = self._fields(model, component, kind)
        if schemas is None:
            return Refusal(UNKNOWN_COMPONENT, component, f"{model} has no component {component!r}")
        if not values:
            return Refusal(UNKNOWN_FIELD, None, "the message carries no values")
        for name, value in values.items():
            entry = schemas.get(name)
            if entry is None:
                return Refusal(UNKNOWN_FIELD, name, f"{model} has no {kind} {name!r}")
            is_double, schema = entry
            # The common case skips the general schema walk; anything else takes it.
            if is_double and type(value) is float and math.isfinite(value):
                continue
            problems = validate_value(value, schema, path=name)
            if problems:
                return Refusal(WRONG_TYPE, name, str(problems[0]))
        return None

    def forget(self, model: str | None = None) -> None:
        """Drop cached schemas (of one model, or all) after models change."""
        if model is None:
            self._schemas.clear()
        else:
            for key in [key for key in self._schemas if key[0] == model]:
                del self._schemas[key]

    def _fields(
        self, model: str, component: str | None, kind: ValueKind
    ) -> dict[str, tuple[bool, Schema]] | None:
        key = (model, component, kind)
        schemas = self._schemas.get(key)
        if schemas is None:
            interface = self._interface_of(model)
            if interface is None:
                return {}
            if component is not None:
                content = interface.contents.get(component)
                if not isinstance(content, Component) or content.schema is None:
                    return None
                interface = content.schema
            wanted = Telemetry if kind == TELEMETRY else Property
            schemas = {
                name: (_is_double(content.schema), content.schema)
                for name, content in interface.contents.items()
                if isinstance(content, wanted) and content.schema is not None
            }
            self._schemas[key] = schemas
        return schemas


def _is_double(schema: Schema) -> bool:
    return isinstance(schema, PrimitiveSchema) and schema.name == "double"
