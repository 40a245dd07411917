"""How deep, how costly and how aliased each operation of a GraphQL document is.

Cost estimates the work of answering: each field costs 1, times the page sizes of the
list fields around it (their ``first``/``last``/``limit`` argument, or the server's
default page when the field takes one and the query leaves it out). A paged field's
items cost at least 1 each, so a long list of scalars is not free.

Each fragment is measured once per operation and reused, so a document whose fragments
spread each other twice, twenty levels down, costs linear time here, not 2^20; a
fragment that spreads itself counts nothing more (graphql-core reports the cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    VariableNode,
    get_named_type,
)

__all__ = ["MAX_NESTING", "PAGE_ARGUMENTS", "QueryCost", "measure"]

#: Arguments that say how many items a list field returns.
PAGE_ARGUMENTS = ("first", "last", "limit")
#: Selections (fields and fragment hops) followed before a walk gives up; a real query
#: is far shallower, and the bound keeps the walk within Python's recursion limit.
MAX_NESTING = 100


@dataclass(frozen=True, slots=True)
class QueryCost:
    """One operation's measures; ``truncated`` when it nests past :data:`MAX_NESTING`
    (then the others are lower bounds)."""

    depth: int = 0
    complexity: int = 0
    aliases: int = 0
    truncated: bool = False

    def __add__(self, other: QueryCost) -> QueryCost:
        return QueryCost(
            max(self.depth, other.depth),
            self.complexity + other.complexity,
            self.aliases + other.aliases,
            self.truncated or other.truncated,
        )


_NOTHING = QueryCost()


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    *,
    variables: Mapping[str, Any] | None = None,
    default_page_size: int = 100,
) -> dict[str, QueryCost]:
    """The measures of each operation in ``document``, by name (``"anonymous"`` for one
    without). Unknown fields and fragments count as leaves: other rules report them."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    results: dict[str, QueryCost] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk = _Walk(schema, fragments, definition, variables or {}, default_page_size)
            name = definition.name.value if definition.name else "anonymous"
            results[name] = walk.run()
    return results


class _Walk:
    """One operation's walk; fragments are memoized per operation because variable
    defaults, and so page sizes, belong to the operation."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
        default_page_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.operation = operation
        self.variables = variables
        self.default_page_size = default_page_size
        self.defaults = {
            v.variable.name.value: v.default_value for v in operation.variable_definitions or ()
        }
        self.memo: dict[str, QueryCost] = {}
        self.in_progress: set[str] = set()

    def run(self) -> QueryCost:
        root = self.schema.get_root_type(self.operation.operation)
        return self.selections(self.operation.selection_set, root, 0)

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None, nesting: int
    ) -> QueryCost:
        if nesting >= MAX_NESTING:
            return QueryCost(truncated=True)
        total = _NOTHING
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, nesting)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                scope = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, scope, nesting + 1)
            elif isinstance(selection, FragmentSpreadNode):
                # Fragment hops count toward the nesting bound but not the depth.
                total += self.fragment(selection.name.value, nesting)
        return total

    def fragment(self, name: str, nesting: int) -> QueryCost:
        if name in self.memo:
            return self.memo[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.in_progress:
            return _NOTHING
        self.in_progress.add(name)
        try:
            scope = self.schema.get_type(definition.type_condition.name.value)
            cost = self.selections(definition.selection_set, scope, nesting + 1)
        finally:
            self.in_progress.discard(name)
        if not cost.truncated:
            # A truncated measure depends on where the walk entered; don't reuse it.
            self.memo[name] = cost
        return cost

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, nesting: int) -> QueryCost:
        aliases = 1 if node.alias else 0
        name = node.name.value
        definition = getattr(parent, "fields", {}).get(name) if parent is not None else None
        child_type = get_named_type(definition.type) if definition is not None else None
        inner = (
            self.selections(node.selection_set, child_type, nesting + 1)
            if node.selection_set
            else _NOTHING
        )
        page = self.page_size(node, definition)
        items = inner.complexity if page is None else page * max(inner.complexity, 1)
        # Introspection (__schema, __type) is left out of the depth, as strawberry's
        # depth limiter does: GraphiQL's own query nests a dozen levels.
        depth = 0 if name.startswith("__") else 1 + inner.depth
        return QueryCost(depth, 1 + items, aliases + inner.aliases, inner.truncated)

    def page_size(self, node: FieldNode, definition: Any) -> int | None:
        """Items the field returns per the query, or None for a field that isn't paged."""
        given = [a for a in node.arguments or () if a.name.value in PAGE_ARGUMENTS]
        if given:
            return max(self.int_value(argument.value) for argument in given)
        declared = getattr(definition, "args", None) or {}
        pages = [declared[name] for name in PAGE_ARGUMENTS if name in declared]
        if not pages:
            return None
        defaults = [a.default_value for a in pages]
        ints = [d for d in defaults if isinstance(d, int) and not isinstance(d, bool)]
        return max(0, max(ints)) if ints else self.default_page_size

    def int_value(self, value: Any) -> int:
        if isinstance(value, VariableNode):
            name = value.name.value
            given = self.variables.get(name, Undefined)
            if isinstance(given, int) and not isinstance(given, bool):
                return max(0, given)
            value = self.defaults.get(name)
        if isinstance(value, IntValueNode):
            try:
                return max(0, int(value.value))
            except ValueError:
                pass
        return self.default_page_size
