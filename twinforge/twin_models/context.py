"""JSON-LD ``@context`` handling: which DTDL version, extensions and limits are in force.

A top-level ``@context`` names a DTDL context first (``dtmi:dtdl:context;3``), optionally
followed by extension contexts; ``#limitless`` must be followed by a limits context.
Nested elements may add extension contexts. An extension the parser does not know is an
*undefined extension*: allowed only when the caller allows undefined extensions, and then
it licenses undefined terms in its scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from twinforge.twin_models.metamodel import Extension, Language, language

_VERSIONED_DTMI = re.compile(
    r"^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}(?:#[A-Za-z]+)?$"
)
_PARTNER_CONTEXTS = frozenset({"dtmi:iotcentral:context;2"})
_DTDL_CONTEXT = re.compile(r"^dtmi:dtdl:context;([0-9]+)(?:#(limitless|limits))?$")


class ContextError(ValueError):
    """``@context`` breaks a rule; ``rule`` is the validation id's last segment."""

    def __init__(self, rule: str, cause: str, value: object = None) -> None:
        super().__init__(cause)
        self.rule = rule
        self.value = value


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits in force: the core ones, or those of a limit extension (onvif)."""

    name: str  # "core" or the limit extension's context id
    overrides: Extension | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/copy work when compiled with mypyc too
        return Limits, (self.name, self.overrides)


CORE_LIMITS = Limits("core")


@dataclass(frozen=True, slots=True)
class ActiveContext:
    lang: Language
    extensions: tuple[Extension, ...] = ()
    undefined_extension: bool = False
    limits: Limits = CORE_LIMITS
    #: term -> IRI for the DTDL version and the extensions in force (derived, cached)
    terms: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple(e.context_id for e in self.extensions)
        object.__setattr__(self, "terms", _merged_terms(self.lang.version, ids))

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/copy work when compiled with mypyc too
        return ActiveContext, (self.lang, self.extensions, self.undefined_extension, self.limits)

    @property
    def version(self) -> int:
        return self.lang.version

    def with_extensions(self, added: list[Extension], undefined: bool) -> ActiveContext:
        known = list(self.extensions)
        known += [e for e in added if e not in known]
        return ActiveContext(
            self.lang, tuple(known), self.undefined_extension or undefined, self.limits
        )


def find_extension(context_id: str, version: int) -> Extension | None:
    """A known extension usable from DTDL ``version`` (v4 documents may use v3 extensions)."""
    for candidate in range(version, 2, -1) if version >= 3 else (version,):
        ext = language(candidate).extensions.get(context_id)
        if ext is not None:
            return ext
    return None


@cache
def _merged_terms(version: int, extension_ids: tuple[str, ...]) -> dict[str, str]:
    terms = dict(language(version).terms)
    for ext_id in extension_ids:
        ext = find_extension(ext_id, version)
        if ext is not None:
            terms.update(ext.terms)
    return terms


def _entries(value: object) -> list[str]:
    if isinstance(value, str):
        entries: list[object] = [value]
    elif isinstance(value, list):
        entries = value
    else:
        raise ContextError(
            "invalidContextSpecifier", "@context must be a string or an array of strings", value
        )
    for entry in entries:
        if not isinstance(entry, str):
            raise ContextError(
                "invalidContextSpecifier", "every @context entry must be a string", entry
            )
        if not _VERSIONED_DTMI.fullmatch(entry):
            raise ContextError(
                "invalidContextSpecifier",
                f"@context entry {entry!r} is not a DTMI with a version (e.g. dtmi:dtdl:context;3)",
                entry,
            )
    return entries  # type: ignore[return-value]


def _extensions(
    entries: list[str], version: int, allow_undefined: bool, acceptable_limits: frozenset[str]
) -> tuple[list[Extension], bool, Limits | None]:
    """Read extension and limit contexts; returns (extensions, undefined?, limits)."""
    found: list[Extension] = []
    undefined = False
    limits: Limits | None = None
    previous: str | None = None
    for entry in entries:
        dtdl = _DTDL_CONTEXT.fullmatch(entry)
        if dtdl:
            if dtdl.group(2) == "limits" and previous != "limitless":
                raise ContextError(
                    "invalidContextSpecifier", "'#limits' must directly follow '#limitless'", entry
                )
            if dtdl.group(2) == "limits" or (previous == "limitless" and dtdl.group(2) is None):
                limits = CORE_LIMITS  # a plain DTDL context after #limitless restores its limits
            previous = dtdl.group(2) or "dtdl"
            continue
        ext = find_extension(entry, version)
        if ext is not None and ext.is_limit:
            if previous != "limitless":
                raise ContextError(
                    "invalidContextSpecifier",
                    f"limit context {entry} must directly follow '#limitless'",
                    entry,
                )
            if entry.split(";")[0] not in acceptable_limits:
                raise ContextError(
                    "invalidContextSpecifier", f"limit context {entry} is not accepted here", entry
                )
            limits = Limits(entry, ext)
        elif ext is not None:
            found.append(ext)
        elif _DTDL_CONTEXT.fullmatch(entry.split("#")[0]) is None and allow_undefined:
            undefined = True
        else:
            raise ContextError(
                "unrecognizedContext",
                f"@context {entry!r} is not a DTDL context or a known extension "
                "(allow undefined extensions to accept it)",
                entry,
            )
        previous = "extension"
    if previous == "limitless":
        raise ContextError(
            "invalidContextSpecifier", "'#limitless' must be followed by a limits context", entries
        )
    return found, undefined, limits


def top_level_context(
    value: object,
    *,
    allow_undefined: bool,
    max_version: int | None,
    acceptable_limits: frozenset[str],
) -> ActiveContext:
    """The context of a top-level element."""
    entries = _entries(value)
    # DTDL v2 partner contexts (IoT Central) may precede the DTDL context.
    partners = [e for e in entries[:1] if e in _PARTNER_CONTEXTS]
    entries = entries[len(partners) :] + partners
    first = _DTDL_CONTEXT.fullmatch(entries[0]) if entries else None
    if first is None or first.group(2) == "limits":
        raise ContextError(
            "missingDtdlContext",
            "a top-level @context must start with a DTDL context such as dtmi:dtdl:context;3",
            value,
        )
    dtdl_positions = [
        i for i, e in enumerate(entries) if _DTDL_CONTEXT.fullmatch(e) and not e.endswith("#limits")
    ]
    if dtdl_positions != list(range(len(dtdl_positions))):
        raise ContextError(
            "invalidContextSpecifier",
            "the DTDL context must precede every other @context entry",
            value,
        )
    last_dtdl = _DTDL_CONTEXT.fullmatch(entries[dtdl_positions[-1]])
    assert last_dtdl is not None
    version = int(last_dtdl.group(1))
    if version not in (2, 3, 4):
        raise ContextError(
            "unsupportedDtdlVersion", f"DTDL version {version} is not supported (2, 3 or 4)", value
        )
    if max_version is not None and version > max_version:
        raise ContextError(
            "disallowedVersionDefinition",
            f"DTDL version {version} is above the allowed maximum {max_version}",
            value,
        )
    limitless = any(e.endswith("#limitless") for e in entries)
    if limitless and version < 4:
        raise ContextError("invalidContextSpecifier", "'#limitless' requires DTDL v4", value)
    exts, undefined, limits = _extensions(entries, version, allow_undefined, acceptable_limits)
    if limitless and limits is None:
        raise ContextError(
            "invalidContextSpecifier", "'#limitless' must be followed by a limits context", value
        )
    return ActiveContext(language(version), tuple(exts), undefined, limits or CORE_LIMITS)


def nested_context(
    value: object,
    parent: ActiveContext,
    *,
    allow_undefined: bool,
    acceptable_limits: frozenset[str],
) -> ActiveContext:
    """The context of a nested element: the parent's plus the extensions it adds."""
    entries = _entries(value)
    if entries and _DTDL_CONTEXT.fullmatch(entries[0]):
        # A nested element may be written in another DTDL version.
        return top_level_context(
            value,
            allow_undefined=allow_undefined,
            max_version=None,
            acceptable_limits=acceptable_limits,
        )
    exts, undefined, limits = _extensions(
        entries, parent.version, allow_undefined, acceptable_limits
    )
    if limits is not None:
        raise ContextError(
            "invalidContextSpecifier", "limits may only be set in a top-level @context", value
        )
    return parent.with_extensions(exts, undefined)
