"""DTDL v2, v3 and v4: identifiers, parsing and validation, model repositories, values.

This package imports nothing else of twinforge; everything that knows about models
(the twin graph, ingest, GraphQL) builds on it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from typing import Any

from twinforge.twin_models.dtmi import Dtmi, child_dtmi, is_user_dtmi, is_valid_dtmi
from twinforge.twin_models.elements import (
    PROPERTY,
    TELEMETRY,
    VALUE_KINDS,
    Array,
    Command,
    CommandPayload,
    Component,
    Content,
    Entity,
    Enum,
    EnumValue,
    Field,
    Interface,
    Map,
    MapKey,
    MapValue,
    NamedEntity,
    Object,
    PrimitiveSchema,
    Property,
    Relationship,
    Schema,
    Telemetry,
    ValueKind,
)
from twinforge.twin_models.errors import ModelParsingError, ParsingError, ResolutionError
from twinforge.twin_models.model_set import ModelSet, build_model_set
from twinforge.twin_models.parser import Options, Resolver, parse_documents
from twinforge.twin_models.values import (
    ValueProblem,
    validate_command_request,
    validate_telemetry,
    validate_twin_properties,
    validate_value,
)

Document = str | bytes | dict[str, Any] | list[Any]


def parse_models(
    docs: Iterable[Document],
    *,
    allow_undefined_extensions: bool = False,
    resolver: Resolver | None = None,
    max_dtdl_version: int | None = None,
    acceptable_limits: Sequence[str] = (),
) -> ModelSet:
    """Parse and validate DTDL documents as one set.

    ``docs`` are JSON texts (or already decoded JSON values), each an element or an array
    of elements. ``resolver`` is called with the DTMIs the documents refer to but do not
    define and returns more documents (or nothing). ``acceptable_limits`` names limit
    extensions (``dtmi:dtdl:limits:onvif``) a ``#limitless`` context may select.

    Raises :class:`ModelParsingError` with every rule broken, or :class:`ResolutionError`
    with the DTMIs that stay undefined.
    """
    options = Options(
        allow_undefined_extensions=allow_undefined_extensions,
        max_dtdl_version=max_dtdl_version,
        acceptable_limits=frozenset(acceptable_limits),
    )
    # The parse allocates many small objects and frees none of them until it ends, so the
    # cyclic garbage collector only costs time here (about a third of it).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = parse_documents(list(docs), options, resolver)
        return build_model_set(result.nodes, result.roots)
    finally:
        if gc_was_enabled:
            gc.enable()


__all__ = [
    "PROPERTY",
    "TELEMETRY",
    "VALUE_KINDS",
    "Array",
    "Command",
    "CommandPayload",
    "Component",
    "Content",
    "Document",
    "Dtmi",
    "Entity",
    "Enum",
    "EnumValue",
    "Field",
    "Interface",
    "Map",
    "MapKey",
    "MapValue",
    "ModelParsingError",
    "ModelSet",
    "NamedEntity",
    "Object",
    "ParsingError",
    "PrimitiveSchema",
    "Property",
    "Relationship",
    "ResolutionError",
    "Resolver",
    "Schema",
    "Telemetry",
    "ValueKind",
    "ValueProblem",
    "child_dtmi",
    "is_user_dtmi",
    "is_valid_dtmi",
    "parse_models",
    "validate_command_request",
    "validate_telemetry",
    "validate_twin_properties",
    "validate_value",
]
