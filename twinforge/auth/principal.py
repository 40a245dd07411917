"""Who invokes or approves a command, and the roles the safety policy knows."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADMIN",
    "APPROVER_ROLES",
    "DEFAULT_ROLES",
    "ENGINEER",
    "OPERATOR",
    "VIEWER",
    "Principal",
]

OPERATOR = "operator"
ENGINEER = "engineer"
ADMIN = "admin"
#: Reads twins; may never invoke a command, whatever a policy says.
VIEWER = "viewer"

#: Roles that may invoke a command the policy says nothing about.
DEFAULT_ROLES: frozenset[str] = frozenset({OPERATOR, ENGINEER, ADMIN})
#: Roles that may approve a hazardous command invoked by somebody else.
APPROVER_ROLES: frozenset[str] = frozenset({ENGINEER, ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as the API layer hands it over.

    ``id`` is the identity every comparison uses (separation of duties, rate limits, the
    audit's "who"): ``key:<key id>`` for an API key, ``jwt:<subject>`` for a token.
    ``name`` is for display only (a key's name, a token's subject; the id when not given):
    two credentials may show the same name and still be two identities.
    """

    id: str
    roles: frozenset[str] = frozenset()
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.id)
