"""Query parameters the way FalkorDB reads them.

FalkorDB takes parameters as Cypher text put in front of the query (``CYPHER id="a" ...``):
the python client writes that text, and FalkorDB's Bolt endpoint writes it itself from the
Bolt message. FalkorDB then parses it as Cypher, so a value must have a Cypher spelling
that reads back as itself. :func:`checked` refuses values without one, before anything is
sent; :func:`for_bolt` also works around the Bolt endpoint's own bugs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from twinforge.runtime.stores.base import GraphStoreError

__all__ = ["BOLT_PARAMETER_TEXT_LIMIT", "checked", "for_bolt"]

# FalkorDB 4.16's Bolt endpoint writes the parameter text into a 4 KiB stack buffer:
# past about 4,080 bytes redis dies of "stack smashing detected". Stay well short.
BOLT_PARAMETER_TEXT_LIMIT = 3_800

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def checked(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` as plain dicts and lists, or an error naming the first bad value.

    ``TypeError`` for a value that is not None, bool, int, float, str, list, tuple or a
    mapping with string keys. ``GraphStoreError`` for what FalkorDB cannot read back: a
    NUL character (its parser stops there), NaN or infinity (no Cypher literal), an empty
    name or one holding a backquote (names are quoted with backquotes).
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"parameters must be a mapping, not {type(params).__name__}")
    return _map(params, "")


def for_bolt(params: dict[str, Any]) -> dict[str, Any]:
    """Checked ``params`` made safe for FalkorDB's Bolt endpoint.

    That endpoint pastes each string between single quotes without escaping it (a quote
    in a value would end the literal and let the rest run as Cypher), so backslashes and
    single quotes are escaped here; it pastes names bare, so parameter names and map keys
    must be identifiers; it writes floats with six decimals (``%f``), so a float that
    would not survive that is refused rather than rounded; and it overflows on long
    parameter text (it crashes the server), so parameters longer than
    :data:`BOLT_PARAMETER_TEXT_LIMIT` are refused.
    """
    escaped = _escaped(params, "")
    size = sum(len(name) + 2 + _text_size(value) for name, value in escaped.items())
    if size > BOLT_PARAMETER_TEXT_LIMIT:
        raise GraphStoreError(
            f"the parameters take {size} bytes as Cypher text; FalkorDB's Bolt endpoint "
            f"crashes on about 4 KiB, so at most {BOLT_PARAMETER_TEXT_LIMIT} are sent to it"
        )
    return escaped


def _value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphStoreError(f"parameter {where}: FalkorDB cannot take {value!r}")
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise GraphStoreError(f"parameter {where}: FalkorDB cannot take a NUL character")
        return value
    if isinstance(value, (list, tuple)):
        return [_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return _map(value, where)
    raise TypeError(
        f"parameter {where}: {type(value).__name__} is not a graph value "
        "(None, bool, int, float, str, list or mapping)"
    )


def _map(mapping: Mapping[Any, Any], where: str) -> dict[str, Any]:
    plain = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter {_join(where, repr(key))}: names must be strings")
        if not key or "`" in key or "\x00" in key:
            raise GraphStoreError(
                f"parameter {_join(where, repr(key))}: FalkorDB cannot take this name"
            )
        plain[key] = _value(value, _join(where, key))
    return plain


def _escaped(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("'", "\\'")
    if isinstance(value, float) and float(f"{value:f}") != value:
        raise GraphStoreError(
            f"parameter {where}: FalkorDB's Bolt endpoint would round {value!r} to {value:f}"
        )
    if isinstance(value, list):
        return [_escaped(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not _IDENTIFIER.fullmatch(key):
                raise GraphStoreError(
                    f"parameter {_join(where, key)}: FalkorDB's Bolt endpoint takes only "
                    "identifiers as names"
                )
        return {key: _escaped(item, _join(where, key)) for key, item in value.items()}
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _text_size(value: Any) -> int:
    """Bytes of ``value`` written as a Cypher literal (a slight overestimate)."""
    if isinstance(value, str):
        return len(value.encode()) + 2
    if isinstance(value, list):
        return 2 + sum(_text_size(item) + 2 for item in value)
    if isinstance(value, dict):
        return 2 + sum(len(key) + 2 + _text_size(item) + 2 for key, item in value.items())
    if isinstance(value, float):
        return len(f"{value:f}")
    return len(repr(value))
