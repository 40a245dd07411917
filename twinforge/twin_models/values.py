"""Validating JSON values against DTDL schemas: property values, telemetry, command payloads.

Every function returns a list of :class:`ValueProblem` (empty when the value is valid) and
never raises on a JSON value, however malformed, deep or large. Each problem names the
place (``settings.limits[2].max``) and a stable rule id:

``type``, ``range``, ``enum``, ``format``, ``required``, ``unknownField``, ``mapKey``,
``depth``, ``schema`` (the schema itself cannot be checked against), ``unknownProperty``,
``notAProperty``, ``unknownTelemetry``, ``notATelemetry``, ``unexpectedPayload``.

A ``None`` value stands for "absent" inside objects and twin properties, as in a JSON merge
patch; anywhere else it is a ``type`` problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from twinforge.twin_models.elements import (
    Array,
    Command,
    Component,
    Enum,
    Interface,
    Map,
    Object,
    PrimitiveSchema,
    Property,
    Schema,
    Telemetry,
)
from twinforge.twin_models.standard import DURATION

#: Values nested deeper than this are rejected rather than walked.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """One way a value breaks its schema."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<value>'}: {self.message} [{self.rule}]"


# -- public API ----------------------------------------------------------------------


def validate_value(value: Any, schema: Schema, *, path: str = "") -> list[ValueProblem]:
    """The problems of ``value`` (a decoded JSON value) against ``schema``; empty if valid."""
    out: list[ValueProblem] = []
    _validate(value, schema, path, 0, out)
    return out


def validate_twin_properties(props: Mapping[str, Any], interface: Interface) -> list[ValueProblem]:
    """The problems of a twin's (or a patch's) property values against ``interface``.

    Keys must name Properties or Components of the Interface, inherited ones included; all
    Properties are optional in DTDL. Keys starting with ``$`` (``$metadata``, ``$dtId``)
    are system keys and are skipped, at the top and inside Component values.
    """
    out: list[ValueProblem] = []
    _properties(props, interface, "", 0, out)
    return out


def validate_command_request(payload: Any, command: Command) -> list[ValueProblem]:
    """The problems of a command invocation's ``payload`` against the Command's request."""
    request = command.request
    if request is None:
        if payload is None:
            return []
        return [
            ValueProblem(command.name, "unexpectedPayload", "the command takes no request payload")
        ]
    path = request.name or command.name
    if payload is None:
        if request.nullable:
            return []
        return [ValueProblem(path, "required", "the command requires a request payload")]
    if request.schema is None:
        return [ValueProblem(path, "schema", "the request has no schema")]
    return validate_value(payload, request.schema, path=path)


def validate_telemetry(name: str, value: Any, interface: Interface) -> list[ValueProblem]:
    """The problems of one telemetry message ``name: value`` against ``interface``."""
    content = interface.contents.get(name) if isinstance(name, str) else None
    if content is None:
        return [
            ValueProblem(_key(name), "unknownTelemetry", f"{interface.id} has no {_describe(name)}")
        ]
    if not isinstance(content, Telemetry):
        return [ValueProblem(name, "notATelemetry", f"{name!r} is a {content.kind}")]
    if content.schema is None:
        return [ValueProblem(name, "schema", "the telemetry has no schema")]
    return validate_value(value, content.schema, path=name)


# -- twin properties -----------------------------------------------------------------


def _properties(
    props: Any, interface: Interface, path: str, depth: int, out: list[ValueProblem]
) -> None:
    if not isinstance(props, Mapping):
        out.append(ValueProblem(path, "type", f"expected an object, got {_describe(props)}"))
        return
    if depth > MAX_DEPTH:
        out.append(ValueProblem(path, "depth", f"nested deeper than {MAX_DEPTH} levels"))
        return
    for name, value in props.items():
        if isinstance(name, str) and name.startswith("$"):
            continue
        where = _join(path, name)
        content = interface.contents.get(name) if isinstance(name, str) else None
        if content is None:
            out.append(
                ValueProblem(where, "unknownProperty", f"{interface.id} has no {_describe(name)}")
            )
        elif not isinstance(content, Property | Component):
            out.append(ValueProblem(where, "notAProperty", f"{name!r} is a {content.kind}"))
        elif value is None:
            continue
        elif isinstance(content, Property):
            _validate(value, content.schema, where, depth + 1, out)
        elif content.schema is None:
            out.append(ValueProblem(where, "schema", "the component has no Interface"))
        else:
            _properties(value, content.schema, where, depth + 1, out)


# -- schemas -------------------------------------------------------------------------


def _validate(
    value: Any, schema: Schema | None, path: str, depth: int, out: list[ValueProblem]
) -> None:
    if depth > MAX_DEPTH:
        out.append(ValueProblem(path, "depth", f"nested deeper than {MAX_DEPTH} levels"))
    elif isinstance(schema, PrimitiveSchema):
        _primitive(value, schema.name, path, out)
    elif isinstance(schema, Enum):
        _enum(value, schema, path, out)
    elif isinstance(schema, Array):
        _array(value, schema, path, depth, out)
    elif isinstance(schema, Map):
        _map(value, schema, path, depth, out)
    elif isinstance(schema, Object):
        _object(value, schema, path, depth, out)
    else:
        out.append(ValueProblem(path, "schema", f"cannot validate against {schema!r}"))


def _enum(value: Any, schema: Enum, path: str, out: list[ValueProblem]) -> None:
    if schema.value_schema is not None:
        problems: list[ValueProblem] = []
        _primitive(value, schema.value_schema.name, path, problems)
        if problems:
            out.extend(problems)
            return
    allowed = [v.enum_value for v in schema.enum_values]
    # `type(...) is` keeps True from matching 1 when the Enum has no value schema.
    if not any(type(value) is type(a) and value == a for a in allowed):
        shown = ", ".join(json.dumps(a) for a in allowed[:10])
        more = ", ..." if len(allowed) > 10 else ""
        out.append(ValueProblem(path, "enum", f"{_describe(value)} is not one of {shown}{more}"))


def _array(value: Any, schema: Array, path: str, depth: int, out: list[ValueProblem]) -> None:
    if not isinstance(value, list):
        out.append(ValueProblem(path, "type", f"expected an array, got {_describe(value)}"))
        return
    for index, item in enumerate(value):
        _validate(item, schema.element_schema, f"{path}[{index}]", depth + 1, out)


def _map(value: Any, schema: Map, path: str, depth: int, out: list[ValueProblem]) -> None:
    if not isinstance(value, Mapping):
        out.append(ValueProblem(path, "type", f"expected an object, got {_describe(value)}"))
        return
    value_schema = schema.map_value.schema if schema.map_value else None
    for key, item in value.items():
        if not isinstance(key, str):
            out.append(ValueProblem(path, "mapKey", f"map keys are strings, got {_describe(key)}"))
            continue
        _validate(item, value_schema, _join(path, key), depth + 1, out)


def _object(value: Any, schema: Object, path: str, depth: int, out: list[ValueProblem]) -> None:
    if not isinstance(value, Mapping):
        out.append(ValueProblem(path, "type", f"expected an object, got {_describe(value)}"))
        return
    fields = {f.name: f for f in schema.fields}
    for key, item in value.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            out.append(ValueProblem(_join(path, key), "unknownField", f"no field {key!r}"))
        elif item is not None:
            _validate(item, field.schema, _join(path, key), depth + 1, out)
    for name, field in fields.items():
        if field.required and value.get(name) is None:
            out.append(ValueProblem(_join(path, name), "required", "the field is required"))


# -- primitives ----------------------------------------------------------------------

_INTEGER_RANGES = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
    "unsignedByte": (0, 2**8 - 1),
    "unsignedShort": (0, 2**16 - 1),
    "unsignedInteger": (0, 2**32 - 1),
    "unsignedLong": (0, 2**64 - 1),
}
_FLOAT_LIMITS = {"float": 3.4028235e38, "double": 1.7976931348623157e308}

# Matched with fullmatch: a pattern's `$` would also accept a trailing newline.
_DECIMAL = re.compile(r"(?:\+|-)?(?:[1-9][0-9]*|0)(?:\.[0-9]*)?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
_DATE_TIME = re.compile(rf"([0-9]{{4}})-([0-9]{{2}})-([0-9]{{2}})[Tt]{_TIME}")
_TIME_OF_DAY = re.compile(_TIME)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _primitive(value: Any, name: str, path: str, out: list[ValueProblem]) -> None:
    if name in _INTEGER_RANGES:
        _integer(value, name, path, out)
    elif name in _FLOAT_LIMITS:
        _number(value, name, path, out)
    elif name == "boolean":
        if not isinstance(value, bool):
            out.append(ValueProblem(path, "type", f"expected a boolean, got {_describe(value)}"))
    elif name == "scaledDecimal":
        _scaled_decimal(value, path, out)
    elif name in _GEOJSON_TYPES:
        _geospatial(value, name, path, out)
    elif not isinstance(value, str):
        expected = "a string" if name == "string" else f"a {name} string"
        out.append(ValueProblem(path, "type", f"expected {expected}, got {_describe(value)}"))
    elif name in _STRING_FORMATS:
        if name != "string" and not _STRING_FORMATS[name](value):
            out.append(ValueProblem(path, "format", f"{_describe(value)} is not a valid {name}"))
    else:
        out.append(ValueProblem(path, "schema", f"unknown primitive schema {name!r}"))


def _integer(value: Any, name: str, path: str, out: list[ValueProblem]) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        out.append(ValueProblem(path, "type", f"expected an integer, got {_describe(value)}"))
        return
    low, high = _INTEGER_RANGES[name]
    if not low <= value <= high:
        out.append(ValueProblem(path, "range", f"{_describe(value)} is outside {name} range"))


def _number(value: Any, name: str, path: str, out: list[ValueProblem]) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        out.append(ValueProblem(path, "type", f"expected a number, got {_describe(value)}"))
    elif isinstance(value, float) and not math.isfinite(value):
        out.append(ValueProblem(path, "range", f"{value} is not a finite number"))
    elif abs(value) > _FLOAT_LIMITS[name]:  # int vs float compares exactly, no overflow
        out.append(ValueProblem(path, "range", f"{_describe(value)} is outside {name} range"))


def _is_date(text: str) -> bool:
    match = _DATE.fullmatch(text)
    return match is not None and _is_real(*match.groups(), "00", "00", "00", None, None, None)


def _is_date_time(text: str) -> bool:
    match = _DATE_TIME.fullmatch(text)
    return match is not None and _is_real(*match.groups())


def _is_time(text: str) -> bool:
    match = _TIME_OF_DAY.fullmatch(text)
    return match is not None and _is_real("2000", "01", "01", *match.groups())


def _is_real(
    year: str, month: str, day: str, hour: str, minute: str, second: str, *offset: str | None
) -> bool:
    """Whether the matched parts name a real instant (no February 30th, no 25:00)."""
    sign, off_hours, off_minutes = offset
    try:
        if sign is not None and int(off_minutes or 0) > 59:
            return False
        delta = timedelta(hours=int(off_hours or 0), minutes=int(off_minutes or 0))
        zone = timezone(-delta if sign == "-" else delta)
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), 0, zone)
    except ValueError:
        return False
    return True


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


_STRING_FORMATS: dict[str, Callable[[str], bool]] = {
    "string": lambda _: True,
    "decimal": lambda s: _DECIMAL.fullmatch(s) is not None,
    "date": _is_date,
    "dateTime": _is_date_time,
    "time": _is_time,
    "duration": lambda s: s.isascii() and DURATION.fullmatch(s) is not None,
    "bytes": _is_base64,
    "uuid": lambda s: _UUID.fullmatch(s) is not None,
}


def _closed_object(
    value: Any, keys: tuple[str, ...], what: str, path: str, out: list[ValueProblem]
) -> bool:
    """True when ``value`` is an object; reports every key outside ``keys``."""
    if not isinstance(value, Mapping):
        out.append(ValueProblem(path, "type", f"expected {what}, got {_describe(value)}"))
        return False
    for key in value:
        if key not in keys:
            out.append(ValueProblem(_join(path, key), "unknownField", f"no field {key!r}"))
    return True


def _scaled_decimal(value: Any, path: str, out: list[ValueProblem]) -> None:
    if not _closed_object(value, ("scale", "value"), "an object", path, out):
        return
    for key, schema in (("scale", "integer"), ("value", "decimal")):
        if value.get(key) is None:
            out.append(ValueProblem(_join(path, key), "required", "the field is required"))
        else:
            _primitive(value[key], schema, _join(path, key), out)


# -- geospatial (GeoJSON, RFC 7946) ---------------------------------------------------

_GEOJSON_TYPES = {
    "point": "Point",
    "multiPoint": "MultiPoint",
    "lineString": "LineString",
    "multiLineString": "MultiLineString",
    "polygon": "Polygon",
    "multiPolygon": "MultiPolygon",
}


def _geospatial(value: Any, name: str, path: str, out: list[ValueProblem]) -> None:
    if not _closed_object(value, ("type", "coordinates"), "a GeoJSON object", path, out):
        return
    expected = _GEOJSON_TYPES[name]
    if value.get("type") != expected:
        out.append(ValueProblem(_join(path, "type"), "type", f"expected type {expected!r}"))
    where = _join(path, "coordinates")
    coordinates = value.get("coordinates")
    if coordinates is None:
        out.append(ValueProblem(where, "required", "the field is required"))
    elif name == "point":
        _position(coordinates, where, out)
    elif name == "multiPoint":
        _each(coordinates, where, out, _position)
    elif name == "lineString":
        _line(coordinates, where, out)
    elif name == "multiLineString":
        _each(coordinates, where, out, _line)
    elif name == "polygon":
        _polygon(coordinates, where, out)
    else:
        _each(coordinates, where, out, _polygon)


def _each(
    value: Any, path: str, out: list[ValueProblem], check: Callable[..., None], minimum: int = 0
) -> bool:
    if not isinstance(value, list):
        out.append(ValueProblem(path, "type", f"expected an array, got {_describe(value)}"))
        return False
    if len(value) < minimum:
        out.append(ValueProblem(path, "format", f"expected at least {minimum} positions"))
    before = len(out)
    for index, item in enumerate(value):
        check(item, f"{path}[{index}]", out)
    return len(out) == before


def _position(value: Any, path: str, out: list[ValueProblem]) -> None:
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        out.append(
            ValueProblem(path, "type", "expected a position [longitude, latitude(, altitude)]")
        )
        return
    for index, number in enumerate(value):
        _number(number, "double", f"{path}[{index}]", out)


def _line(value: Any, path: str, out: list[ValueProblem]) -> None:
    _each(value, path, out, _position, minimum=2)


def _ring(value: Any, path: str, out: list[ValueProblem]) -> None:
    if _each(value, path, out, _position, minimum=4) and value and value[0] != value[-1]:
        out.append(ValueProblem(path, "format", "a linear ring must end where it starts"))


def _polygon(value: Any, path: str, out: list[ValueProblem]) -> None:
    _each(value, path, out, _ring)


# -- paths and messages --------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def _key(key: Any) -> str:
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return key
    return f"[{json.dumps(key) if isinstance(key, str) else _describe(key)}]"


def _join(path: str, key: Any) -> str:
    """``path.key``, or ``path["odd key"]`` when a dot would be ambiguous."""
    part = _key(key)
    return f"{path}{part}" if part.startswith("[") or not path else f"{path}.{part}"


def _describe(value: Any) -> str:
    """A short description of ``value``: never huge, never raising (str(10**5000) does)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return (
            str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
