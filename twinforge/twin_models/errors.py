"""Errors raised when DTDL models do not parse.

Validation ids follow the official DTDL parser (``dtmi:dtdl:parsingError:<rule>``) so that
tools which know those ids can act on ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_PREFIX = "dtmi:dtdl:parsingError:"


@dataclass(slots=True)
class ParsingError:
    """One rule a model breaks.

    ``cause`` says what is wrong in words a modeler understands, ``action`` what to do;
    ``primary_id`` is the element, ``property`` the property (when one is at fault) and
    ``value`` the offending value; ``document`` is the index of the input document.
    """

    validation_id: str
    cause: str
    action: str
    primary_id: str | None = None
    property: str | None = None
    value: Any = None
    document: int | None = None

    def __str__(self) -> str:
        where = f"{self.primary_id}" if self.primary_id else "document"
        if self.property:
            where += f" property '{self.property}'"
        return f"{where}: {self.cause} ({self.validation_id.removeprefix(_PREFIX)})"


def parsing_error(rule: str, cause: str, action: str, **where: Any) -> ParsingError:
    """Build a :class:`ParsingError` for ``rule`` (the id's last segment)."""
    return ParsingError(validation_id=_PREFIX + rule, cause=cause, action=action, **where)


class ModelParsingError(Exception):
    """The models break one or more DTDL rules; ``errors`` lists every one found."""

    def __init__(self, errors: list[ParsingError]) -> None:
        self.errors = errors
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} DTDL error(s): {shown}{more}")


@dataclass
class ResolutionError(Exception):
    """The models refer to DTMIs that neither the documents nor the resolver define."""

    undefined_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(
            "undefined DTMI(s) referenced: "
            + ", ".join(self.undefined_ids[:10])
            + (" ..." if len(self.undefined_ids) > 10 else "")
        )

    def __str__(self) -> str:
        return self.args[0]
