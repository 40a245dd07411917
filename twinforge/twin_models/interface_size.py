"""DTDL v3 and v4 limit the text of each Interface to 1 MiByte, not counting the Interfaces
it extends or the schemas of its Components, even when those are written inline.

The text is measured as compact JSON (UTF-8) of the decoded document: the whitespace of
the original text is not counted, so an Interface refused here is over the limit however
it was written, and one padded past it with whitespace alone is let through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from twinforge.twin_models.errors import ParsingError, parsing_error

__all__ = ["MAX_INTERFACE_BYTES", "check_interface_sizes"]

MAX_INTERFACE_BYTES = 1024 * 1024
#: The DTDL versions whose specification states the limit.
_LIMITED_VERSIONS = frozenset({3, 4})
_CONTEXT_PREFIX = "dtmi:dtdl:context;"


def check_interface_sizes(value: Any, document: int, size_hint: int) -> list[ParsingError]:
    """Errors for the Interfaces of decoded document ``value`` over the limit.
    ``size_hint``: the document's length in characters (its text, or an estimate), so
    that the usual document, smaller than the limit, costs nothing."""
    if size_hint <= MAX_INTERFACE_BYTES:
        return []
    errors = []
    for interface, version in _interfaces(value, None):
        if version not in _LIMITED_VERSIONS:
            continue
        size = len(
            json.dumps(_own_text(interface), separators=(",", ":"), ensure_ascii=False).encode()
        )
        if size > MAX_INTERFACE_BYTES:
            identifier = interface.get("@id")
            errors.append(
                parsing_error(
                    "interfaceTooLarge",
                    f"the Interface's text is {size:,} bytes; DTDL v{version} allows at most"
                    f" {MAX_INTERFACE_BYTES:,} (1 MiByte), not counting extended Interfaces"
                    " and Component schemas",
                    "Split it: move contents into Interfaces it extends or into Components.",
                    primary_id=identifier if isinstance(identifier, str) else None,
                    document=document,
                )
            )
    return errors


def _version(element: dict[str, Any], inherited: int | None) -> int | None:
    context = element.get("@context")
    for entry in context if isinstance(context, list) else [context]:
        if isinstance(entry, str) and entry.startswith(_CONTEXT_PREFIX):
            number = entry.removeprefix(_CONTEXT_PREFIX)
            return int(number) if number.isdigit() else inherited
    return inherited


def _is_interface(element: dict[str, Any]) -> bool:
    kind = element.get("@type")
    return kind == "Interface" or (isinstance(kind, list) and "Interface" in kind)


def _interfaces(value: Any, inherited: int | None) -> Iterator[tuple[dict[str, Any], int | None]]:
    """Every Interface written in ``value``, inline ones included, with its version.
    Only where Interfaces may stand is searched: the top level, ``extends`` and
    Component ``schema``."""
    for element in value if isinstance(value, list) else [value]:
        if not isinstance(element, dict):
            continue
        version = _version(element, inherited)
        if _is_interface(element):
            yield element, version
            for inline in _inline_interfaces(element):
                yield from _interfaces(inline, version)


def _inline_interfaces(interface: dict[str, Any]) -> Iterator[Any]:
    extends = interface.get("extends")
    for parent in extends if isinstance(extends, list) else [extends]:
        if isinstance(parent, dict):
            yield parent
    for content in _contents(interface):
        if _is_inline_component(content):
            yield content["schema"]


def _contents(interface: dict[str, Any]) -> list[Any]:
    contents = interface.get("contents")
    return contents if isinstance(contents, list) else [contents]


def _is_inline_component(content: Any) -> bool:
    return (
        isinstance(content, dict)
        and content.get("@type") == "Component"
        and isinstance(content.get("schema"), dict)
    )


def _own_text(interface: dict[str, Any]) -> dict[str, Any]:
    """``interface`` with its inline extended Interfaces and Component schemas left out."""
    own = dict(interface)
    extends = own.get("extends")
    if isinstance(extends, dict):
        own["extends"] = ""
    elif isinstance(extends, list):
        own["extends"] = [e if isinstance(e, str) else "" for e in extends]
    if "contents" in own:
        own["contents"] = [
            {**c, "schema": ""} if _is_inline_component(c) else c for c in _contents(own)
        ]
    return own
