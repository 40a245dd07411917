"""Limits that keep one client from exhausting the server: page sizes, query depth, cost,
aliases and tokens, request rate per principal, and request body size.

Plug the query limits into the schema with ``strawberry.Schema(...,
extensions=security_extensions())`` and the body limit around the ASGI app with
``app.add_middleware(BodySizeLimit)``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
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

from .errors import (
    PAYLOAD_TOO_LARGE,
    QUERY_TOO_COMPLEX,
    QUERY_TOO_DEEP,
    BadInput,
    ErrorCodes,
    RateLimited,
)
from .query_cost import MAX_NESTING, measure

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_ALIASES",
    "MAX_BODY_BYTES",
    "MAX_COMPLEXITY",
    "MAX_DEPTH",
    "MAX_PAGE_SIZE",
    "MAX_TOKENS",
    "BodySizeLimit",
    "QueryLimits",
    "RateLimiter",
    "complexity_rule",
    "limits_rule",
    "page_size",
    "security_extensions",
]

#: Levels of nested fields in one operation (introspection not counted).
MAX_DEPTH = 10
#: Estimated cost (fields times page sizes): 2 hops of 10 relationships from 100 twins
#: pass; nested full pages (1000 twins x 100 relationships) do not.
MAX_COMPLEXITY = 50_000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
#: A refused body is still read (and dropped) up to this size and time, so that clients
#: which send the whole body before reading (urllib, requests) see the 413, not a reset.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 10.0
MAX_BODY_BYTES = 1024 * 1024
#: Aliases let one request repeat a field many times, e.g. to guess keys in bulk.
MAX_ALIASES = 30
#: Tokens of a query document, counted by the parser before anything else runs.
MAX_TOKENS = 5000


def page_size(
    first: int | None,
    *,
    field: str = "first",
    default: int = DEFAULT_PAGE_SIZE,
    maximum: int = MAX_PAGE_SIZE,
) -> int:
    """The number of items to return for a page argument ``first`` (or ``field``)."""
    if first is None:
        return default
    if isinstance(first, bool) or not isinstance(first, int):
        raise BadInput(f"{field}: expected a whole number, not {type(first).__name__}", field=field)
    if first < 0:
        raise BadInput(f"{field}: must be 0 or more, not {first}", field=field)
    if first > maximum:
        raise BadInput(f"{field}: at most {maximum} per page, not {first}", field=field)
    return first


# -- query limits -------------------------------------------------------------------------


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
) -> list[Callable[[], SchemaExtension]]:
    """Extension factories for ``strawberry.Schema(extensions=...)``, one instance each
    per operation. ErrorCodes comes first so that it sees the errors last; the caches
    parse and validate a query text seen before once (QueryLimits after ValidationCache,
    which would overwrite its errors)."""
    return [
        ErrorCodes,
        partial(MaxTokensLimiter, max_token_count=max_tokens),
        partial(ParserCache, maxsize=cache_size),
        partial(ValidationCache, maxsize=cache_size),
        partial(
            QueryLimits,
            max_depth=max_depth,
            max_complexity=max_complexity,
            max_aliases=max_aliases,
            default_page_size=default_page_size,
        ),
    ]


# -- request rate -------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per principal: ``burst`` requests at once, refilled at
    ``rate_per_s``. Thread-safe; holds at most ``max_buckets`` buckets, dropping idle
    (refilled) ones first, so memory follows the active principals."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s: must be positive, not {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst: at least 1, not {burst}")
        if max_buckets < 1:
            raise ValueError(f"max_buckets: at least 1, not {max_buckets}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_buckets = max_buckets
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently used first, so the idle buckets sit at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, principal_name: str, cost: float = 1.0) -> None:
        """Take ``cost`` from the principal's bucket, or raise :class:`RateLimited`."""
        if not 0 < cost <= self.burst:
            raise ValueError(f"cost: between 0 and the burst {self.burst}, not {cost}")
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(principal_name)
            if bucket is None:
                self._make_room(now)
                bucket = self._buckets[principal_name] = _Bucket(float(self.burst), now)
            else:
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
                bucket.updated = now
                self._buckets.move_to_end(principal_name)
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return
            wait = (cost - bucket.tokens) / self.rate_per_s
        raise RateLimited(
            f"rate limited: {principal_name} may send {self.burst} requests at once and"
            f" {self.rate_per_s:g} per second after that; retry in {wait:.2f} s",
            retry_after=wait,
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def _make_room(self, now: float) -> None:
        """Drop refilled buckets (the same as new ones) from the least recently used end,
        and past the bound the least recently used ones even if not refilled."""
        while self._buckets:
            name, oldest = next(iter(self._buckets.items()))
            refilled = oldest.tokens + (now - oldest.updated) * self.rate_per_s >= self.burst
            if not refilled and len(self._buckets) < self._max_buckets:
                break
            del self._buckets[name]


# -- request body size --------------------------------------------------------------------


class _TooLarge(Exception):
    """Raised from ``receive`` when the body streams past the limit."""


async def _drain(receive: Any, received: int) -> None:
    """Read and drop the rest of a request body, within DRAIN_BYTES and DRAIN_SECONDS."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while received <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


class BodySizeLimit:
    """ASGI middleware refusing HTTP request bodies over ``max_bytes`` with 413 and a
    GraphQL-style JSON error, whether Content-Length says so up front or the streamed
    body only grows past it. Websockets and lifespan pass through untouched."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name.lower() != b"content-length":
                continue
            # A malformed length is the server's to refuse; the streamed count still holds.
            declared = value.strip()
            if declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_bytes):
                if len(declared) <= 18 and int(declared) <= DRAIN_BYTES:
                    await _drain(receive, 0)
                await self._refuse(send)
                return
        received = 0
        started = refused = False

        async def limited_receive() -> Any:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not started and not refused:
                        # Answer now: error middleware inside the app would turn the
                        # exception below into a 500 before it reached us.
                        refused = True
                        if message.get("more_body", False):
                            await _drain(receive, received)
                        await self._refuse(send)
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if refused:
                return  # the 413 is out; whatever the app says after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not refused:
                raise  # too late for a 413: the server closes the connection

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {
                "errors": [
                    {
                        "message": f"payload too large: at most {self.max_bytes} bytes",
                        "extensions": {"code": PAYLOAD_TOO_LARGE},
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body was never read; don't reuse the connection.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
