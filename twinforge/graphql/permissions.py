"""Per-field role checks: ``permission_classes=[Engineer]`` on a field lets engineers and
admins resolve it; anyone else gets FORBIDDEN, a request without credentials
UNAUTHENTICATED."""

from __future__ import annotations

from typing import Any, ClassVar

import strawberry
from strawberry.permission import BasePermission

from twinforge.auth.roles import require_role
from twinforge.runtime.commands import ADMIN, ENGINEER, OPERATOR, VIEWER


class _RequiresRole(BasePermission):
    role: ClassVar[str]

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        # Raising (not returning False) keeps each error's own code and message.
        require_role(info.context.principal, self.role)
        return True


class Viewer(_RequiresRole):
    role = VIEWER


class Operator(_RequiresRole):
    role = OPERATOR


class Engineer(_RequiresRole):
    role = ENGINEER


class Admin(_RequiresRole):
    role = ADMIN
