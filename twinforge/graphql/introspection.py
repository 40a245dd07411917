"""Introspection for authenticated callers only, when the server is set so
(``TWINFORGE_API_INTROSPECTION=authenticated``): the schema names every twin type, its
properties and commands, a map of the plant that an anonymous caller need not have."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import BREAK, DocumentNode, FieldNode, GraphQLError, Visitor, visit
from strawberry.extensions import SchemaExtension

from twinforge.graphql.errors import UNAUTHENTICATED

__all__ = ["AUTHENTICATED", "EVERYONE", "IntrospectionGuard", "asks_schema"]

EVERYONE = "everyone"
AUTHENTICATED = "authenticated"
_INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


class _Finder(Visitor):
    found = False

    def enter_field(self, node: FieldNode, *_args: Any) -> Any:
        if node.name.value in _INTROSPECTION_FIELDS:
            self.found = True
            return BREAK
        return None


def asks_schema(document: DocumentNode) -> bool:
    """Whether ``document`` selects ``__schema`` or ``__type`` anywhere (``__typename``
    is not introspection of the schema and stays allowed)."""
    finder = _Finder()
    visit(document, finder)
    return finder.found


class IntrospectionGuard(SchemaExtension):
    """Refuses introspection to a caller without credentials where the context says
    introspection is for ``authenticated`` callers. Beside validation, not a rule, so
    ValidationCache's answers stay the same for everyone."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        api = context.context
        services = getattr(api, "services", None)
        restricted = getattr(services, "introspection", EVERYONE) == AUTHENTICATED
        document = context.graphql_document
        anonymous = not getattr(api, "authenticated", False)
        if restricted and anonymous and document is not None and asks_schema(document):
            error = GraphQLError(
                "introspection is for authenticated callers here: send Authorization:"
                " Bearer <token or API key>",
                extensions={"code": UNAUTHENTICATED},
            )
            context.pre_execution_errors = [*(context.pre_execution_errors or ()), error]
        yield
