"""Page sizes, and the depth, cost, alias and token limits on a real strawberry schema."""

from __future__ import annotations

import time

import pytest
import strawberry
from graphql import get_introspection_query, parse
from strawberry.extensions import QueryDepthLimiter

from twinforge.graphql.errors import BadInput, ErrorCodes
from twinforge.graphql.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size
from twinforge.graphql.query_cost import MAX_NESTING, QueryCost, measure
from twinforge.graphql.query_rules import MAX_COMPLEXITY, complexity_rule, security_extensions

# -- page sizes ---------------------------------------------------------------------------


def test_page_size() -> None:
    assert page_size(None) == DEFAULT_PAGE_SIZE == 100
    assert page_size(0) == 0
    assert page_size(MAX_PAGE_SIZE) == 1000

    with pytest.raises(BadInput) as caught:
        page_size(5000)
    assert caught.value.message == "first: at most 1000 per page, not 5000"
    assert caught.value.extensions == {"code": "BAD_USER_INPUT", "field": "first"}
    with pytest.raises(BadInput, match=r"^first: must be 0 or more, not -1$"):
        page_size(-1)
    with pytest.raises(BadInput, match=r"^last: at most 1000 per page, not 1001$"):
        page_size(1001, field="last")
    with pytest.raises(BadInput, match=r"^first: expected a whole number, not bool$"):
        page_size(True)  # type: ignore[arg-type]


# -- a small schema: twins with related twins, paged ---------------------------------------


@strawberry.type
class Twin:
    id: str
    name: str

    @strawberry.field
    def related(self, first: int | None = None) -> list[Twin]:
        return [Twin(id=f"{self.id}.{i}", name="r") for i in range(page_size(first))]

    @strawberry.field
    def readings(self, limit: int = 10) -> list[float]:
        return [0.0] * page_size(limit, field="limit")


@strawberry.type
class Query:
    @strawberry.field
    def twins(self, first: int | None = None) -> list[Twin]:
        return [Twin(id=str(i), name=f"twin {i}") for i in range(page_size(first))]

    @strawberry.field
    def twin(self, id: str) -> Twin:
        return Twin(id=id, name="one")


SCHEMA = strawberry.Schema(Query, extensions=security_extensions())
GRAPHQL_SCHEMA = SCHEMA._schema


def _cost(query: str, **variables: object) -> QueryCost:
    [cost] = measure(GRAPHQL_SCHEMA, parse(query), variables=variables).values()
    return cost


def _codes(query: str, **variables: object) -> list[str]:
    result = SCHEMA.execute_sync(query, variable_values=variables or None)
    return [e.formatted["extensions"]["code"] for e in result.errors or ()]


def test_cost_is_fields_times_page_sizes() -> None:
    assert _cost("{ twins(first: 10) { id name } }").complexity == 1 + 10 * 2
    assert _cost("{ twins { id } }").complexity == 1 + DEFAULT_PAGE_SIZE  # the default page
    assert _cost('{ twin(id: "a") { id name } }').complexity == 3  # not a list
    # A paged list of scalars: each item counts, the declared default page is used.
    assert _cost('{ twin(id: "a") { readings } }').complexity == 1 + 1 + 10
    nested = "{ twins(first: 10) { id related(first: 5) { id name } } }"
    assert _cost(nested).complexity == 1 + 10 * (1 + 1 + 5 * 2)
    assert _cost(nested) == QueryCost(depth=3, complexity=121, aliases=0)


def test_page_sizes_from_variables_and_their_defaults() -> None:
    query = "query($n: Int = 7) { twins(first: $n) { id } }"
    assert _cost(query).complexity == 1 + 7
    assert _cost(query, n=50).complexity == 1 + 50
    assert _cost("query($n: Int) { twins(first: $n) { id } }").complexity == 1 + 100


def test_fragments_are_followed() -> None:
    query = """
      { twins(first: 10) { ...parts ... on Twin { related(first: 2) { id } } } }
      fragment parts on Twin { id name }
    """
    assert _cost(query).complexity == 1 + 10 * (2 + 1 + 2)


def test_a_normal_query_runs() -> None:
    result = SCHEMA.execute_sync("{ twins(first: 3) { id related(first: 2) { name } } }")
    assert result.errors is None
    assert len(result.data["twins"]) == 3  # type: ignore[index]


def test_nested_pages_past_the_limit_are_refused() -> None:
    query = "{ twins(first: 1000) { id related(first: 100) { id name } } }"
    result = SCHEMA.execute_sync(query)

    assert result.data is None
    [error] = result.errors or []
    assert error.formatted["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert (
        "would cost about 202001" in error.message
        and f"at most {MAX_COMPLEXITY} allowed" in error.message
    )


def test_page_sizes_in_variables_count() -> None:
    query = "query($n: Int) { twins(first: $n) { related(first: $n) { id } } }"
    assert _codes(query, n=10) == []
    assert _codes(query, n=500) == ["QUERY_TOO_COMPLEX"]
    # The text is cached, parsed and validated, by now: the refusal must not stick to it.
    assert _codes(query, n=10) == []
    assert _codes("query($n: Int = 500) { twins(first: $n) { related(first: $n) { id } } }") == [
        "QUERY_TOO_COMPLEX"
    ]


def test_complexity_rule_works_as_a_plain_validation_rule() -> None:
    from graphql import validate

    rule = complexity_rule(50)
    assert validate(GRAPHQL_SCHEMA, parse("{ twins(first: 5) { id } }"), [rule]) == []
    [error] = validate(GRAPHQL_SCHEMA, parse("{ twins(first: 500) { id } }"), [rule])
    assert error.extensions == {"code": "QUERY_TOO_COMPLEX"}


def test_fragment_cycles_do_not_hang() -> None:
    query = """
      { twins(first: 1) { ...a } }
      fragment a on Twin { id ...b }
      fragment b on Twin { name ...a }
    """
    started = time.perf_counter()
    codes = _codes(query)
    assert time.perf_counter() - started < 1
    assert codes and set(codes) == {"GRAPHQL_VALIDATION_FAILED"}


def test_fragments_spreading_each_other_cost_linear_time() -> None:
    # Each fragment spreads the next twice: 2**40 paths, which strawberry's own depth and
    # alias limiters walk one by one.
    levels = 40
    fragments = "\n".join(
        f"fragment f{i} on Twin {{ ...f{i + 1} ...f{i + 1} }}" for i in range(levels)
    )
    query = f'{{ twin(id: "a") {{ ...f0 }} }}\n{fragments}\nfragment f{levels} on Twin {{ id }}'

    started = time.perf_counter()
    codes = _codes(query)
    assert time.perf_counter() - started < 2
    # Counted as written, the query asks for 2**40 ids (and would be answered with one).
    assert _cost(query).complexity == 1 + 2**40
    assert codes == ["QUERY_TOO_COMPLEX"]


def test_unknown_fragments_are_a_validation_error_not_a_crash() -> None:
    assert set(_codes("{ twins { ...missing } }")) == {"GRAPHQL_VALIDATION_FAILED"}


def test_an_exception_in_validation_is_hidden() -> None:
    # strawberry's own depth limiter raises KeyError on an unknown fragment; whatever
    # raises, ErrorCodes still labels it and keeps the text to the log.
    schema = strawberry.Schema(Query, extensions=[ErrorCodes, lambda: QueryDepthLimiter(5)])
    result = schema.execute_sync("{ twins { ...missing } }")
    [error] = result.errors or []
    assert error.formatted["message"] == "internal error"
    assert error.formatted["extensions"] == {"code": "INTERNAL_ERROR"}


def _nested(levels: int) -> str:
    query = "id"
    for _ in range(levels - 1):
        query = f"related(first: 1) {{ {query} }}"
    return f'{{ twin(id: "a") {{ {query} }} }}'


def test_depth_limit() -> None:
    assert _cost(_nested(10)).depth == 11
    assert _codes(_nested(9)) == []  # twin + 9 levels = 10
    result = SCHEMA.execute_sync(_nested(10))
    [error] = result.errors or []
    assert error.formatted["extensions"] == {"code": "QUERY_TOO_DEEP"}
    assert "nests 11 levels" in error.message and "at most 10 allowed" in error.message


def test_endless_fragment_chains_are_too_deep_not_a_recursion_error() -> None:
    levels = MAX_NESTING + 50
    fragments = "\n".join(f"fragment f{i} on Twin {{ ...f{i + 1} }}" for i in range(levels))
    query = f'{{ twin(id: "a") {{ ...f0 }} }}\n{fragments}\nfragment f{levels} on Twin {{ id }}'

    assert _cost(query).truncated
    assert "QUERY_TOO_DEEP" in _codes(query)


def test_introspection_passes_but_not_nested_introspection() -> None:
    # GraphiQL's own introspection query nests a dozen levels: it must pass.
    result = SCHEMA.execute_sync(get_introspection_query(descriptions=True))
    assert result.errors is None
    deep = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    assert _codes(deep) == ["QUERY_TOO_DEEP"]


def test_too_many_aliases() -> None:
    def aliased(count: int) -> str:
        return "{ " + " ".join(f'a{i}: twin(id: "{i}") {{ id }}' for i in range(count)) + " }"

    assert _codes(aliased(30)) == []
    result = SCHEMA.execute_sync(aliased(31))
    [error] = result.errors or []
    assert error.formatted["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert "uses 31 aliases; at most 30 allowed" in error.message


def test_too_many_tokens() -> None:
    query = "{ " + " ".join("__typename" for _ in range(6000)) + " }"
    result = SCHEMA.execute_sync(query)
    [error] = result.errors or []
    assert error.formatted["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert "more than 5000 tokens" in error.message


def test_limits_are_settable() -> None:
    strict = strawberry.Schema(Query, extensions=security_extensions(max_complexity=10))
    result = strict.execute_sync("{ twins(first: 20) { id } }")
    assert [e.formatted["extensions"]["code"] for e in result.errors or ()] == ["QUERY_TOO_COMPLEX"]
