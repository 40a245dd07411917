"""Errors of the twin service, each with a stable code that the API passes on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request: where (``field``, a JSON path or name), which rule,
    and a sentence for the user."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field or '(document)'}: {self.message} [{self.rule}]"


class TwinServiceError(Exception):
    """Base class; ``code`` is stable (``notFound``, ``preconditionFailed``...)."""

    code = "internal"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.message = message
        self.problems = problems or []
        shown = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(": ".join(part for part in (message, shown + more) if part))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": str(self),
            "problems": [
                {"field": p.field, "rule": p.rule, "message": p.message} for p in self.problems
            ],
        }


class NotFound(TwinServiceError):
    code = "notFound"


class AlreadyExists(TwinServiceError):
    code = "alreadyExists"


class PreconditionFailed(TwinServiceError):
    """An If-Match ETag no longer matches: someone else changed the item first."""

    code = "preconditionFailed"


class ValidationFailed(TwinServiceError):
    """The request breaks a rule; ``problems`` names each field and rule."""

    code = "validationFailed"


class Conflict(TwinServiceError):
    """The request is valid but the graph's state forbids it (dependents, multiplicity)."""

    code = "conflict"


class QueryRejected(TwinServiceError):
    code = "queryRejected"


def invalid(field: str, rule: str, message: str) -> ValidationFailed:
    """A :class:`ValidationFailed` for one problem."""
    return ValidationFailed("", [Problem(field, rule, message)])
