"""The graph store on FalkorDB (the embedded child process or a server), through its client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import redis
from falkordb import FalkorDB
from falkordb.edge import Edge
from falkordb.node import Node
from falkordb.path import Path as GraphPath
from falkordb.query_result import QueryResult

from twinforge.runtime.stores import _falkordb_params
from twinforge.runtime.stores.base import GraphStoreError, check_identifier
from twinforge.runtime.stores.embedded_falkordb import EmbeddedFalkorDB, RunningFalkorDB

__all__ = ["FalkorDBStore"]

_Query = Callable[[str, dict[str, Any] | None], QueryResult]


class FalkorDBStore:
    """One graph (a redis key, ``graph_name``) on a FalkorDB server, reached by
    ``unix_socket`` when given, else by ``host`` and ``port``.

    ``server`` is an embedded server this store owns: :meth:`close` stops it too.
    ``shared`` is set when the store uses another process's embedded server instead
    (``open_graph_store(..., share_running=True)``); :meth:`close` leaves that running. The
    store is safe to share between threads (the client keeps a connection pool).
    """

    backend = "falkordb"

    def __init__(
        self,
        graph_name: str = "twins",
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        unix_socket: str | None = None,
        username: str | None = None,
        password: str | None = None,
        server: EmbeddedFalkorDB | None = None,
        shared: RunningFalkorDB | None = None,
    ) -> None:
        self.server = server
        self.shared = shared
        where = unix_socket or f"{host}:{port}"
        try:
            self._db = FalkorDB(
                host=host,
                port=port,
                unix_socket_path=unix_socket,
                username=username,
                password=password,
                socket_connect_timeout=10,
            )
            self._graph = self._db.select_graph(graph_name)
            # GRAPH.RO_QUERY refuses a graph that does not exist yet, and any GRAPH.QUERY
            # creates it.
            self._graph.query("RETURN 0")
        except (redis.exceptions.RedisError, OSError) as exc:
            raise GraphStoreError(f"cannot use FalkorDB at {where}: {exc}") from exc

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
                raise GraphStoreError(str(exc)) from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise GraphStoreError(str(exc)) from exc

    def clear(self) -> None:
        self.write("MATCH (n) DETACH DELETE n")

    def close(self) -> None:
        self._db.connection.close()
        if self.server is not None:
            self.server.stop()

    def _run(
        self, query: _Query, cypher: str, params: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]:
        values = _falkordb_params.checked(params)
        try:
            result = query(cypher, values or None)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise GraphStoreError(str(exc)) from exc
        # The header holds a [column type, column name] pair per column.
        columns = [name for _, name in result.header]
        return [dict(zip(columns, map(_plain, row), strict=True)) for row in result.result_set]


def _plain(value: Any) -> Any:
    """A result value with the client's node, edge and path objects made plain."""
    if isinstance(value, (Node, Edge)):
        return {key: _plain(item) for key, item in value.properties.items()}
    if isinstance(value, GraphPath):
        return {
            "nodes": [_plain(node) for node in value.nodes()],
            "relationships": [_plain(edge) for edge in value.edges()],
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):  # the client's maps are OrderedDicts
        return {key: _plain(item) for key, item in value.items()}
    return value
