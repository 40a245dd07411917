"""The graph store on FalkorDB (embedded child process or a server), through its client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from falkordb import FalkorDB
from falkordb.edge import Edge
from falkordb.node import Node
from falkordb.path import Path as GraphPath

from .base import GraphStoreError, check_identifier


class FalkorDBStore:
    backend = "falkordb"

    def __init__(
        self,
        *,
        graph: str = "twins",
        host: str = "127.0.0.1",
        port: int = 6379,
        unix_socket: str | None = None,
        password: str | None = None,
    ) -> None:
        where = unix_socket or f"{host}:{port}"
        try:
            self._db = FalkorDB(
                host=host, port=port, unix_socket_path=unix_socket, password=password
            )
            self._graph = self._db.select_graph(graph)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise GraphStoreError(f"cannot reach FalkorDB at {where}: {exc}") from None

    def read(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        # GRAPH.RO_QUERY: the server refuses any query that would write.
        return self._run(self._graph.ro_query, cypher, params)

    def write(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(self._graph.query, cypher, params)

    def ensure_index(self, label: str, prop: str) -> None:
        check_identifier(label, "label")
        check_identifier(prop, "property")
        try:
            self._graph.query(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})")
        except redis.exceptions.ResponseError as exc:
            if "already indexed" not in str(exc):
                raise GraphStoreError(str(exc)) from None

    def clear(self) -> None:
        self.write("MATCH (n) DETACH DELETE n")

    def close(self) -> None:
        self._db.connection.close()

    def _run(
        self, method: Any, cypher: str, params: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]:
        try:
            result = method(cypher, dict(params) if params else None)
        except (redis.exceptions.RedisError, OSError, ValueError, TypeError) as exc:
            if params and "\\x00" in repr(params):
                # The client sends parameters as Cypher text, which ends at a NUL.
                raise GraphStoreError("FalkorDB parameters cannot hold NUL characters") from None
            raise GraphStoreError(str(exc)) from None
        columns = [_column(h) for h in result.header or ()]
        return [dict(zip(columns, map(_plain, row), strict=True)) for row in result.result_set]


def _column(header: Any) -> str:
    # The client gives [type, name] pairs for the compact result format.
    return header[1] if isinstance(header, (list, tuple)) else header


def _plain(value: Any) -> Any:
    if isinstance(value, (Node, Edge)):
        return dict(value.properties)
    if isinstance(value, GraphPath):
        return [_plain(n) for n in value.nodes()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
