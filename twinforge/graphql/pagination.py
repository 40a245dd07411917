"""Relay-style connections: ``edges { cursor node }``, ``pageInfo``, opaque cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import strawberry

from twinforge.graphql.errors import BadInput

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


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


T = TypeVar("T")
Item = TypeVar("Item")


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @strawberry.field(description="The nodes of the edges, for clients that skip cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def encode_cursor(kind: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode("ascii")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    """The key inside ``cursor``; BadInput naming ``after`` when it is not one of ours."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    prefix = f"{kind}:"
    if not text.startswith(prefix):
        raise BadInput(f"after: not a {kind} cursor from this API")
    return text[len(prefix) :]


def connection(
    nodes: Sequence[T], keys: Sequence[str], kind: str, has_next_page: bool
) -> Connection[T]:
    """A connection over one page of ``nodes``, whose cursors encode ``keys``."""
    edges = [Edge(cursor=encode_cursor(kind, k), node=n) for n, k in zip(nodes, keys, strict=True)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next_page, end_cursor=edges[-1].cursor if edges else None
        ),
    )


def slice_page(
    items: Sequence[Item],
    key: Callable[[Item], str],
    kind: str,
    first: int | None,
    after: str | None,
) -> tuple[list[Item], list[str], bool]:
    """One page of an in-memory list sorted by ``key``: the items, their keys, and
    whether more follow."""
    size = page_size(first)
    start_after = decode_cursor(kind, after)
    keys = [key(item) for item in items]
    start = 0
    if start_after is not None:
        # The first key past the cursor, so a page survives its last item being deleted.
        start = next((i for i, k in enumerate(keys) if k > start_after), len(keys))
    end = start + size
    return list(items[start:end]), keys[start:end], end < len(items)
