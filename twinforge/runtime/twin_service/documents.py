"""Twin and relationship documents in the Azure Digital Twins JSON shape, and how they
are kept in the graph.

A twin document is ``{"$dtId", "$etag", "$metadata": {"$model", "$lastUpdateTime",
"<property>": {"lastUpdateTime"}}, "<property>": value, "<component>": {"$metadata": {},
...}}``. The graph node keeps the whole document as JSON text (``doc``) plus each scalar
property as its own node property (``p_<name>``, ``p_<component>__<name>``) so that
queries can filter on it with parameters.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from twinforge.runtime.twin_service.errors import invalid

MAX_ID_LENGTH = 128
MAX_DOCUMENT_BYTES = 1_000_000  # larger twins belong in the history store or a blob
# DTDL names (properties, relationships, components): safe as Cypher identifiers.
NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCALARS = (str, int, float, bool)


def check_id(value: Any, field: str) -> str:
    """A twin or relationship id: 1-128 characters, no control characters, not ``$``-led."""
    if not isinstance(value, str) or not value:
        raise invalid(field, "required", f"{field} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise invalid(field, "maxLength", f"{field} is longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value) or value.startswith("$"):
        raise invalid(field, "pattern", f"{field} may not start with $ or hold control characters")
    return value


def check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise invalid(field, "pattern", f"{field} must be a DTDL name (letters, digits, _)")
    return value


def new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def now() -> str:
    """The current UTC time as ADT writes it (ISO 8601 with a Z)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def updated_values(document: Mapping[str, Any]) -> Iterator[tuple[str, Any, str | None]]:
    """(path, value, lastUpdateTime) of each property of a twin document; component
    properties as ``component.property``."""
    for name, value in user_properties(document).items():
        if isinstance(value, Mapping) and isinstance(value.get("$metadata"), Mapping):
            inner_metadata = value["$metadata"]
            for inner, inner_value in user_properties(value).items():
                yield f"{name}.{inner}", inner_value, _updated(inner_metadata.get(inner))
        else:
            yield name, value, _updated(document.get("$metadata", {}).get(name))


def _updated(metadata: Any) -> str | None:
    return metadata.get("lastUpdateTime") if isinstance(metadata, Mapping) else None


def encode(document: Mapping[str, Any]) -> str:
    """JSON text of a document, refusing what JSON cannot hold and oversize documents."""
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise invalid("", "json", f"the document is not JSON: {exc}") from None
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise invalid("", "maxSize", f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return text


def decode(text: str) -> dict[str, Any]:
    return json.loads(text)


def user_properties(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without its system keys (``$dtId``, ``$etag``, ``$metadata``...)."""
    return {k: v for k, v in document.items() if not k.startswith("$")}


def query_fields(properties: Mapping[str, Any], components: set[str]) -> dict[str, Any]:
    """``p_<name>`` node properties for the scalar values a query may filter on."""
    fields: dict[str, Any] = {}
    for name, value in properties.items():
        if name in components and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                if not inner.startswith("$") and _is_scalar(inner_value):
                    fields[f"p_{name}__{inner}"] = inner_value
        elif _is_scalar(value):
            fields[f"p_{name}"] = value
    return fields


def _is_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value  # FalkorDB cannot take NUL in a parameter; doc keeps it
    return isinstance(value, _SCALARS) and not (
        isinstance(value, float) and not math.isfinite(value)
    )
