"""The four API roles and their ranking: viewer < operator < engineer < admin.

A higher role includes every lower one, so a check asks for the least role that may act.
"""

from __future__ import annotations

from collections.abc import Iterable

from twinforge.auth.errors import Forbidden, InvalidInput
from twinforge.auth.principal import ADMIN, ENGINEER, OPERATOR, VIEWER, Principal

__all__ = ["ROLES", "has_role", "highest_role", "parse_roles", "require_role"]

#: Every role, lowest first.
ROLES: tuple[str, ...] = (VIEWER, OPERATOR, ENGINEER, ADMIN)
_RANK = {role: rank for rank, role in enumerate(ROLES)}
#: A principal's role set is tiny; a longer list is hostile input, not a real request.
_MAX_ROLES = 16


def _rank(role: str) -> int:
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return _RANK[role]


def highest_role(principal: Principal) -> str | None:
    """The principal's highest known role, or None when it holds none."""
    known = [_RANK[role] for role in principal.roles if role in _RANK]
    return ROLES[max(known)] if known else None


def has_role(principal: Principal, role: str) -> bool:
    """Whether ``principal`` holds ``role`` or a higher one."""
    needed = _rank(role)
    return any(_RANK.get(held, -1) >= needed for held in principal.roles)


def require_role(principal: Principal, role: str) -> None:
    """Raise :class:`Forbidden` unless ``principal`` holds ``role`` or a higher one."""
    if not has_role(principal, role):
        held = highest_role(principal) or "no role"
        raise Forbidden(f"forbidden: this needs the {role} role; you have {held}")


def parse_roles(values: Iterable[object], *, field: str = "roles") -> frozenset[str]:
    """The roles in ``values``, refusing unknown names, non-strings and an empty set."""
    if isinstance(values, str | bytes):
        # A bare string would iterate as letters; say what was meant instead.
        raise InvalidInput(f"{field}: expected a list of roles, not a single string", field=field)
    roles: set[str] = set()
    for count, value in enumerate(values, start=1):
        if count > _MAX_ROLES:
            raise InvalidInput(f"{field}: at most {_MAX_ROLES} roles", field=field)
        if not isinstance(value, str):
            raise InvalidInput(
                f"{field}: each role is a string, not {type(value).__name__}", field=field
            )
        if value not in _RANK:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise InvalidInput(
                f"{field}: unknown role {shown!r}; the roles are {', '.join(ROLES)}",
                field=field,
            )
        roles.add(value)
    if not roles:
        raise InvalidInput(
            f"{field}: at least one role is needed ({', '.join(ROLES)})", field=field
        )
    return frozenset(roles)
