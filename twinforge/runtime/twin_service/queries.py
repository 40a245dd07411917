"""Twin queries: structured filters compiled to parameterized Cypher, and the read-only
guard for the admins' Cypher passthrough."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from twinforge.runtime.twin_service import documents as docs
from twinforge.runtime.twin_service.errors import QueryRejected, invalid

MAX_HOPS = 10
MAX_LIMIT = 1000
MAX_CYPHER_LENGTH = 10_000


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IN = "in"
    STARTS_WITH = "startsWith"
    CONTAINS = "contains"
    EXISTS = "exists"


_CYPHER_OPS = {
    Op.EQ: "=",
    Op.NE: "<>",
    Op.LT: "<",
    Op.LTE: "<=",
    Op.GT: ">",
    Op.GTE: ">=",
    Op.IN: "IN",
    Op.STARTS_WITH: "STARTS WITH",
    Op.CONTAINS: "CONTAINS",
}


@dataclass(frozen=True, slots=True)
class Predicate:
    """``property`` (``temperature``, or ``component.property``) ``op`` ``value``."""

    property: str
    op: Op
    value: Any = None


@dataclass(frozen=True, slots=True)
class Traversal:
    """Twins reached from ``start`` along ``relationships`` (any name when empty) within
    ``min_hops``..``max_hops`` steps."""

    start: str
    relationships: tuple[str, ...] = ()
    direction: Literal["out", "in", "both"] = "out"
    min_hops: int = 1
    max_hops: int = 1


@dataclass(frozen=True, slots=True)
class TwinQuery:
    model: str | None = None
    include_submodels: bool = True
    where: tuple[Predicate, ...] = ()
    traversal: Traversal | None = None
    limit: int = 100
    #: Resume after this twin id (results come ordered by id).
    after: str | None = None


def compile_query(query: TwinQuery) -> tuple[str, dict[str, Any]]:
    """Cypher and parameters returning ``id`` and ``doc`` of each matching twin."""
    params: dict[str, Any] = {}
    conditions: list[str] = []
    match = "MATCH (t:Twin)"
    if query.traversal is not None:
        match = _traversal(query.traversal, params)
    if query.model is not None:
        params["model"] = query.model
        conditions.append("$model IN t.models" if query.include_submodels else "t.model = $model")
    for index, predicate in enumerate(query.where):
        conditions.append(_condition(predicate, index, params))
    if query.after is not None:
        params["after"] = query.after
        conditions.append("t.twin_id > $after")
    if not isinstance(query.limit, int) or not 1 <= query.limit <= MAX_LIMIT:
        raise invalid("limit", "range", f"limit must be 1..{MAX_LIMIT}")
    params["limit"] = query.limit
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    cypher = (
        f"{match}{where} RETURN DISTINCT t.twin_id AS id, t.doc AS doc ORDER BY id LIMIT $limit"
    )
    return cypher, params


def _traversal(traversal: Traversal, params: dict[str, Any]) -> str:
    docs.check_id(traversal.start, "traversal.start")
    names = [docs.check_name(n, "traversal.relationships") for n in traversal.relationships]
    low, high = traversal.min_hops, traversal.max_hops
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= MAX_HOPS):
        raise invalid(
            "traversal.maxHops", "range", f"hops must satisfy 0 <= min <= max <= {MAX_HOPS}"
        )
    params["start"] = traversal.start
    # Cypher takes no parameters in a pattern: names are checked DTDL names, hops ints.
    types = ":" + "|".join(names) if names else ""
    step = f"[{types}*{low}..{high}]"
    left, right = {"out": ("-", "->"), "in": ("<-", "-"), "both": ("-", "-")}[traversal.direction]
    return f"MATCH (s:Twin {{twin_id: $start}}){left}{step}{right}(t:Twin)"


def _condition(predicate: Predicate, index: int, params: dict[str, Any]) -> str:
    parts = predicate.property.split(".") if isinstance(predicate.property, str) else [None]
    if len(parts) > 2:
        raise invalid("where.property", "pattern", "a property is name or component.name")
    names = [docs.check_name(p, "where.property") for p in parts]
    column = "t.p_" + "__".join(names)
    try:
        op = Op(predicate.op)
    except ValueError:
        raise invalid("where.op", "enum", f"op must be one of {', '.join(Op)}") from None
    if op is Op.EXISTS:
        return f"{column} IS NOT NULL" if predicate.value in (None, True) else f"{column} IS NULL"
    value = predicate.value
    scalar = (str, int, float, bool)
    if op is Op.IN:
        if not isinstance(value, list) or not all(isinstance(v, scalar) for v in value):
            raise invalid("where.value", "type", "in takes a list of strings, numbers or booleans")
    elif not isinstance(value, scalar):
        raise invalid("where.value", "type", f"{op} takes a string, number or boolean")
    if op in (Op.STARTS_WITH, Op.CONTAINS) and not isinstance(value, str):
        raise invalid("where.value", "type", f"{op} takes a string")
    key = f"v{index}"
    params[key] = value
    return f"{column} {_CYPHER_OPS[op]} ${key}"


# Clauses and procedures that write or reach outside the graph.
_WRITING = re.compile(
    r"\b(CREATE|MERGE|DELETE|DETACH|SET|REMOVE|DROP|FOREACH|LOAD|CALL|ALTER|GRANT|DENY|REVOKE|START|STOP|TERMINATE)\b",
    re.IGNORECASE,
)
_STRINGS_AND_COMMENTS = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/", re.DOTALL
)


def check_read_only(cypher: Any) -> str:
    """Refuse Cypher that could change anything; the store also runs it read-only."""
    if not isinstance(cypher, str) or not cypher.strip():
        raise invalid("cypher", "required", "the query is an empty string")
    if len(cypher) > MAX_CYPHER_LENGTH:
        raise invalid(
            "cypher", "maxLength", f"the query is longer than {MAX_CYPHER_LENGTH} characters"
        )
    bare = _STRINGS_AND_COMMENTS.sub(" ", cypher)
    found = _WRITING.search(bare)
    if found:
        raise QueryRejected(f"read-only queries only: {found.group(1).upper()} is not allowed")
    return cypher
