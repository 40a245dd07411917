"""Digital Twin Model Identifiers (DTMI): syntax, versions and generated identifiers.

The patterns follow the DTDL specifications: v2 requires a one-part version, v3 and v4
allow the version to be omitted and v4 allows a two-part ``major.minor`` version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_SEGMENT = r"[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?"
_SYSTEM_SEGMENT = r"(?:_[A-Za-z0-9_]*|[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)"

#: A user DTMI (no system segments) for each DTDL major version.
USER_DTMI_PATTERNS: dict[int, re.Pattern[str]] = {
    2: re.compile(rf"^dtmi:{_SEGMENT}(?::{_SEGMENT})*;[1-9][0-9]{{0,8}}$"),
    3: re.compile(rf"^dtmi:{_SEGMENT}(?::{_SEGMENT})*(?:;[1-9][0-9]{{0,8}})?$"),
    4: re.compile(
        rf"^dtmi:{_SEGMENT}(?::{_SEGMENT})*(?:;[1-9][0-9]{{0,8}}(?:\.[1-9][0-9]{{0,5}})?)?$"
    ),
}
#: Any DTMI, system segments (leading underscore) and fragments included.
_ANY_DTMI = re.compile(
    rf"^dtmi:{_SYSTEM_SEGMENT}(?::{_SYSTEM_SEGMENT})*"
    r"(?:;[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,5})?)?(?:#[A-Za-z0-9_]*)?$"
)
MAX_DTMI_LENGTH = 4096
MAX_USER_DTMI_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Dtmi:
    """A parsed DTMI: ``dtmi:<labels>[;major[.minor]][#fragment]``."""

    labels: tuple[str, ...]
    major_version: int | None
    minor_version: int | None
    fragment: str | None

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/copy work when compiled with mypyc too
        return Dtmi, (self.labels, self.major_version, self.minor_version, self.fragment)

    @classmethod
    def parse(cls, text: object) -> Dtmi:
        """Parse ``text``; raises ``ValueError`` naming the rule it breaks."""
        if not isinstance(text, str):
            raise ValueError(f"a DTMI must be a string, got {type(text).__name__}")
        if len(text) > MAX_DTMI_LENGTH:
            raise ValueError(f"a DTMI is at most {MAX_DTMI_LENGTH} characters")
        if not _ANY_DTMI.fullmatch(text):
            raise ValueError(f"{text!r} is not a DTMI (dtmi:<segment>[:<segment>...][;version])")
        body, _, fragment = text[5:].partition("#")
        path, _, version = body.partition(";")
        major, _, minor = version.partition(".")
        return cls(
            labels=tuple(path.split(":")),
            major_version=int(major) if major else None,
            minor_version=int(minor) if minor else None,
            fragment=fragment or None,
        )

    @property
    def versionless(self) -> str:
        return "dtmi:" + ":".join(self.labels)

    def __str__(self) -> str:
        text = self.versionless
        if self.major_version is not None:
            text += f";{self.major_version}"
            if self.minor_version is not None:
                text += f".{self.minor_version}"
        if self.fragment:
            text += f"#{self.fragment}"
        return text


@lru_cache(maxsize=8192)  # models name the same few DTMIs over and over
def is_valid_dtmi(text: str) -> bool:
    """True for any syntactically valid DTMI, system DTMIs included."""
    return len(text) <= MAX_DTMI_LENGTH and _ANY_DTMI.fullmatch(text) is not None


def is_user_dtmi(text: str, dtdl_version: int = 4) -> bool:
    """True for a DTMI that a model document may use as an ``@id`` in ``dtdl_version``."""
    pattern = USER_DTMI_PATTERNS[dtdl_version]
    return len(text) <= MAX_USER_DTMI_LENGTH and pattern.fullmatch(text) is not None


def local_name(dtmi: str) -> str:
    """The last label without version: ``double`` for ``dtmi:dtdl:instance:Schema:double;4``."""
    return dtmi.rsplit(":", 1)[-1].split(";", 1)[0]


def major_version(dtmi: str) -> int | None:
    """The major version of ``dtmi`` (``4`` for ``...;4`` and ``...;4.1``), None when absent."""
    major = dtmi.partition(";")[2].split(".", 1)[0]
    return int(major) if major.isdigit() else None


def child_dtmi(parent: str, property_name: str, segment: str | None = None) -> str:
    """The identifier the DTDL specs assign to an element without ``@id``.

    ``dtmi:ex:a;1`` + ``schema`` -> ``dtmi:ex:a:_schema;1``;
    ``dtmi:ex:a;1`` + ``contents`` + ``temp`` -> ``dtmi:ex:a:_contents:__temp;1``.
    """
    base, sep, version = parent.partition(";")
    added = f":_{property_name}" + (f":__{segment}" if segment is not None else "")
    return base + added + (sep + version if sep else "")
