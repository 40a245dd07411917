"""Edge checks, and the row encoding that the store backends share.

A row is ``(twin_id, field, ts, kind, value_num, value_json)``. ``ts`` is in UTC.
``value_num`` holds every number (not booleans) so SQL can filter and aggregate them;
``value_json`` holds the JSON text of every value except floats, which ``value_num``
already holds exactly. Integers are in both: JSON keeps them exact beyond 2**53. JSON is
kept as text, not PostgreSQL jsonb, because jsonb rewrites what it stores (1e300 comes
back as an integer, keys are reordered, strings holding U+0000 are refused).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from twinforge.runtime.history.point import HistoryPoint
from twinforge.twin_models import VALUE_KINDS

MAX_NAME_BYTES = 1024
"""Longest twin id or field name, in UTF-8 bytes: two of them and a timestamp stay within
PostgreSQL's btree entry limit (2704 bytes) for the (twin_id, field, ts) key."""

MAX_DEPTH = 100
"""Deepest nesting of lists and objects in a value; deeper ones (or cycles) are refused
before they exhaust the stack."""

Row = tuple[str, str, datetime, str, float | None, str | None]

_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class _Invalid(Exception):
    """A rule broken at ``path`` (parts appended innermost first) inside the checked value."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule
        self.path: list[str] = []

    def message(self, where: str) -> str:
        return f"{where}{''.join(reversed(self.path))}: {self.rule}"


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is usable as a twin id or field name, else raise ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{what}: must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what}: must not be empty")
    # PostgreSQL text refuses NUL; SQLite gets the same rule so both accept the same ids.
    if "\x00" in value:
        raise ValueError(f"{what}: must not contain NUL (U+0000)")
    try:
        _check_unicode(value)
    except _Invalid as exc:
        raise ValueError(exc.message(what)) from None
    size = len(value) if value.isascii() else len(value.encode())
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{what}: must be at most {MAX_NAME_BYTES} bytes of UTF-8, got {size}")
    return value


def check_time(value: object, what: str) -> datetime:
    """Return ``value`` in UTC if it is a timezone-aware datetime, else raise ValueError."""
    if not isinstance(value, datetime):
        raise ValueError(f"{what}: must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(
            f"{what}: naive datetime {value.isoformat()}; give a timezone-aware one "
            "(e.g. tzinfo=datetime.UTC)"
        )
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{what}: {value.isoformat()} is out of range in UTC") from None


def check_range(
    start: object, end: object, limit: object
) -> tuple[datetime | None, datetime | None]:
    """Check a query's bounds and limit; return the bounds in UTC."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit: must be a non-negative integer or None, got {limit!r}")
    return (
        None if start is None else check_time(start, "start"),
        None if end is None else check_time(end, "end"),
    )


def encode_point(point: HistoryPoint, where: str = "point") -> Row:
    """Check ``point`` and return its row; ValueError names ``where``, the field and the rule."""
    if not isinstance(point, HistoryPoint):
        raise ValueError(f"{where}: must be a HistoryPoint, got {type(point).__name__}")
    twin_id = check_name(point.twin_id, f"{where}.twin_id")
    field = check_name(point.field, f"{where}.field")
    ts = check_time(point.ts, f"{where}.ts")
    if point.kind not in VALUE_KINDS:
        raise ValueError(
            f"{where}.kind: must be one of {', '.join(VALUE_KINDS)}, got {point.kind!r}"
        )
    value = point.value
    value_type = type(value)
    # Fast path: most telemetry is a plain float, and a float needs no JSON.
    if value_type is float:
        if not math.isfinite(value):
            raise ValueError(f"{where}.value: {value} is not JSON; numbers must be finite")
        return (twin_id, field, ts, point.kind, value, None)
    try:
        _check_json(value, 0)
        value_json = _encode_json(value)
    except _Invalid as exc:
        raise ValueError(exc.message(f"{where}.value")) from None
    except ValueError as exc:  # integers beyond Python's int-to-text digit limit
        raise ValueError(f"{where}.value: {exc}") from None
    if isinstance(value, float):  # a float subclass, such as numpy.float64
        return (twin_id, field, ts, point.kind, float(value), None)
    value_num = None
    if isinstance(value, int) and not isinstance(value, bool):
        value_num = _int_to_float(value)
    return (twin_id, field, ts, point.kind, value_num, value_json)


def encode_points(points: Sequence[HistoryPoint]) -> list[Row]:
    """Check every point and return their rows, one per key (the last point wins), in key
    order: b-tree inserts in key order touch each page once, which makes large batches of
    interleaved series about 1.5x faster to write in SQLite.

    The first invalid point raises ValueError naming ``points[i]``, so a batch is written
    whole or not at all.
    """
    rows: dict[tuple[str, str, datetime], Row] = {}
    for index, point in enumerate(points):
        row = encode_point(point, f"points[{index}]")
        rows[row[0], row[1], row[2]] = row
    # Keys are unique now, so tuple comparison never reaches the mixed-type value columns.
    return sorted(rows.values())


def decode_value(value_num: float | None, value_json: str | None) -> Any:
    """The value of a stored row: its JSON if it has any, else its float."""
    return value_num if value_json is None else json.loads(value_json)


def _int_to_float(value: int) -> float | None:
    try:
        return float(value)
    except OverflowError:  # beyond a double's range: kept exact in value_json only
        return None


def _check_unicode(text: str) -> None:
    # Lone surrogates (json.loads makes them from "\ud800") cannot be encoded as UTF-8.
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _Invalid("strings must be valid Unicode (no lone surrogates)") from None


def _check_json(value: Any, depth: int) -> None:
    if isinstance(value, str):
        _check_unicode(value)
    elif value is None or isinstance(value, int):  # bool is an int
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"{value} is not JSON; numbers must be finite")
    elif isinstance(value, list | tuple | dict):
        if depth == MAX_DEPTH:
            raise _Invalid(f"nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            try:
                if isinstance(value, dict):
                    if not isinstance(key, str):
                        raise _Invalid(f"object key {key!r} is not a string")
                    _check_unicode(key)
                _check_json(item, depth + 1)
            except _Invalid as exc:
                exc.path.append(f"[{key!r}]")
                raise
    else:
        raise _Invalid(
            f"{type(value).__name__} is not JSON; use a number, bool, string, None, list or dict"
        )
