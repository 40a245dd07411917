"""Rules that keep one query from exhausting the server: depth, estimated cost (fields
times page sizes), aliases and tokens, checked before anything executes.

Plug them into the schema with ``strawberry.Schema(..., extensions=security_extensions())``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from graphql import (
    SKIP,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    ValidationRule,
)
from graphql.language import VisitorAction
from graphql.validation import MaxIntrospectionDepthRule
from strawberry.extensions import MaxTokensLimiter, ParserCache, SchemaExtension, ValidationCache

from twinforge.graphql.errors import QUERY_TOO_COMPLEX, QUERY_TOO_DEEP, ErrorCodes
from twinforge.graphql.introspection import IntrospectionGuard
from twinforge.graphql.pagination import DEFAULT_PAGE_SIZE
from twinforge.graphql.query_cost import MAX_NESTING, measure

__all__ = [
    "MAX_ALIASES",
    "MAX_COMPLEXITY",
    "MAX_DEPTH",
    "MAX_TOKENS",
    "QueryLimits",
    "complexity_rule",
    "limits_rule",
    "security_extensions",
]

#: Levels of nested fields in one operation (introspection not counted).
MAX_DEPTH = 10
#: Estimated cost (fields times page sizes): 2 hops of 10 relationships from 100 twins
#: pass; nested full pages (1000 twins x 100 relationships) do not.
MAX_COMPLEXITY = 50_000
#: Aliases let one request repeat a field many times, e.g. to guess keys in bulk.
MAX_ALIASES = 30
#: Tokens of a query document, counted by the parser before anything else runs.
MAX_TOKENS = 5000


def _shown(number: int) -> str:
    return f"{number:.2e}" if number >= 10**12 else str(number)


@dataclass(frozen=True, slots=True)
class _Limits:
    max_depth: int | None = None
    max_complexity: int | None = None
    max_aliases: int | None = None
    default_page_size: int = DEFAULT_PAGE_SIZE

    def errors(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any] | None,
    ) -> list[GraphQLError]:
        """One error per limit each operation of ``document`` goes past."""
        operations = {
            (d.name.value if d.name else "anonymous"): d
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        }
        costs = measure(
            schema, document, variables=variables, default_page_size=self.default_page_size
        )
        found: list[GraphQLError] = []
        for name, cost in costs.items():
            where = [operations[name]]
            if self.max_depth is not None and (cost.truncated or cost.depth > self.max_depth):
                levels = f"more than {MAX_NESTING}" if cost.truncated else str(cost.depth)
                found.append(
                    GraphQLError(
                        f"query too deep: operation '{name}' nests {levels} levels of"
                        f" selections; at most {self.max_depth} allowed",
                        where,
                        extensions={"code": QUERY_TOO_DEEP},
                    )
                )
            if self.max_complexity is not None and cost.complexity > self.max_complexity:
                found.append(
                    GraphQLError(
                        f"query too complex: operation '{name}' would cost about"
                        f" {_shown(cost.complexity)} (1 per field, times the page sizes"
                        f" of the lists around it); at most {self.max_complexity} allowed."
                        " Ask for smaller pages (first/limit) or fewer nested lists",
                        where,
                        extensions={"code": QUERY_TOO_COMPLEX},
                    )
                )
            if self.max_aliases is not None and cost.aliases > self.max_aliases:
                found.append(
                    GraphQLError(
                        f"query too complex: operation '{name}' uses"
                        f" {_shown(cost.aliases)} aliases; at most {self.max_aliases} allowed",
                        where,
                        extensions={"code": QUERY_TOO_COMPLEX},
                    )
                )
        return found


def limits_rule(
    *,
    max_depth: int | None = None,
    max_complexity: int | None = None,
    max_aliases: int | None = None,
    variables: Mapping[str, Any] | None = None,
    default_page_size: int = DEFAULT_PAGE_SIZE,
) -> type[ValidationRule]:
    """A graphql-core validation rule refusing operations past the given limits (None:
    not checked); ``variables`` are the request's, for page sizes passed as variables."""
    limits = _Limits(max_depth, max_complexity, max_aliases, default_page_size)

    class QueryLimitsRule(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> VisitorAction:
            for error in limits.errors(self.context.schema, node, variables):
                self.report_error(error)
            return SKIP  # measured in one go; nothing left to visit

    return QueryLimitsRule


def complexity_rule(
    max_complexity: int = MAX_COMPLEXITY, variables: Mapping[str, Any] | None = None
) -> type[ValidationRule]:
    """A rule refusing operations whose estimated cost exceeds ``max_complexity``."""
    return limits_rule(max_complexity=max_complexity, variables=variables)


class _IntrospectionDepthRule(MaxIntrospectionDepthRule):
    """graphql-core's guard against ``__schema { types { fields { type { fields ...``
    (exponential answers), with our error code."""

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {**(error.extensions or {}), "code": QUERY_TOO_DEEP}
        super().report_error(error)


class QueryLimits(SchemaExtension):
    """Checks depth, cost and aliases of each operation, and swaps in our
    introspection-depth rule.

    Used instead of strawberry's QueryDepthLimiter and MaxAliasesLimiter: they walk every
    path through the fragments (exponential time for fragments spreading each other
    twice) and crash on an unknown fragment name. The check runs beside validation, not
    as a rule, because page sizes passed as variables count: the rules stay the same for
    every request, so ValidationCache can answer for a document seen before.
    """

    def __init__(
        self,
        *,
        max_depth: int = MAX_DEPTH,
        max_complexity: int = MAX_COMPLEXITY,
        max_aliases: int = MAX_ALIASES,
        default_page_size: int = DEFAULT_PAGE_SIZE,
        execution_context: Any = None,
    ) -> None:
        self.limits = _Limits(max_depth, max_complexity, max_aliases, default_page_size)

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        # graphql-core's introspection rule may be there already: swap in ours, once.
        others = tuple(r for r in context.validation_rules if r is not MaxIntrospectionDepthRule)
        context.validation_rules = (*others, _IntrospectionDepthRule)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        variables = context.variables if isinstance(context.variables, Mapping) else None
        found = self.limits.errors(context.schema._schema, context.graphql_document, variables)
        if found:
            # A new list: the one there may be ValidationCache's, shared between requests.
            context.pre_execution_errors = [*(context.pre_execution_errors or ()), *found]
        yield


def security_extensions(
    *,
    max_depth: int = MAX_DEPTH,
    max_complexity: int = MAX_COMPLEXITY,
    max_aliases: int = MAX_ALIASES,
    max_tokens: int = MAX_TOKENS,
    default_page_size: int = DEFAULT_PAGE_SIZE,
    cache_size: int = 1024,
    guard_introspection: bool = False,
) -> list[Callable[[], SchemaExtension]]:
    """Extension factories for ``strawberry.Schema(extensions=...)``, one instance each
    per operation. ErrorCodes comes first so that it sees the errors last; the caches
    parse and validate a query text seen before once (QueryLimits after ValidationCache,
    which would overwrite its errors). ``guard_introspection`` adds
    :class:`IntrospectionGuard`; only then, as every extension costs every request."""
    guard = [IntrospectionGuard] if guard_introspection else []
    return [
        ErrorCodes,
        partial(MaxTokensLimiter, max_token_count=max_tokens),
        partial(ParserCache, maxsize=cache_size),
        partial(ValidationCache, maxsize=cache_size),
        *guard,
        partial(
            QueryLimits,
            max_depth=max_depth,
            max_complexity=max_complexity,
            max_aliases=max_aliases,
            default_page_size=default_page_size,
        ),
    ]
