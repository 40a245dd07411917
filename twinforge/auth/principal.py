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
    """An authenticated user, as the API layer hands it over."""

    name: str
    roles: frozenset[str] = frozenset()
