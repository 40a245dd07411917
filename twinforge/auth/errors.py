"""Refusals of the identity layer, each with the stable code a client branches on."""

from __future__ import annotations

from twinforge.errors import ClientError

__all__ = ["AuthError", "Forbidden", "InvalidInput", "Unauthenticated"]


class AuthError(ClientError):
    """A refusal of the identity layer."""


class Unauthenticated(AuthError):
    """No credentials, or credentials that name no one (unknown, revoked, expired)."""

    code = "UNAUTHENTICATED"


class Forbidden(AuthError):
    """The principal is known but lacks the role the act needs."""

    code = "FORBIDDEN"


class InvalidInput(AuthError):
    """A key name, a role list or a token subject that breaks its rule."""

    code = "BAD_USER_INPUT"
