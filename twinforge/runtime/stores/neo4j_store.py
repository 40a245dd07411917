"""The graph store on Neo4j 5 (or another Bolt server) through the official driver.

Each query runs in its own managed transaction: atomic, retried by the driver on
transient errors, and in READ access mode for reads, which Neo4j enforces and a cluster
routes to followers. A read's text is also checked for writing clauses before it is sent,
and a read that changed anything is rolled back and refused.

FalkorDB's Bolt endpoint, the tests' stand-in for Neo4j, is recognised by its worst bug
(it pastes string parameters into the query text unescaped) and worked around: see
``_falkordb_params.for_bolt`` and :meth:`Neo4jStore.ensure_index`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import neo4j
import neo4j.time
from neo4j import READ_ACCESS, WRITE_ACCESS, GraphDatabase, ManagedTransaction
from neo4j.graph import Node, Path, Relationship

from twinforge.runtime.stores import _falkordb_params
from twinforge.runtime.stores._cypher import writing_clause
from twinforge.runtime.stores.base import GraphStoreError, check_identifier

__all__ = ["Neo4jStore"]

_DRIVER_ERRORS = (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError)
# A string a server must hand back unchanged; one that pastes it between single quotes
# fails on it, and hands it back once escaped.
_PROBE = "'\\"


class Neo4jStore:
    """The graph of ``database`` (None: the server's default) on the Bolt server at
    ``uri`` (``bolt://``, ``neo4j://``, with ``+s``/``+ssc``). Safe to share between
    threads: each call takes its own session from the driver's pool.

    :attr:`falkordb_bolt` tells whether the server is FalkorDB's Bolt endpoint, whose
    bugs the store works around.
    """

    backend = "neo4j"

    def __init__(
        self,
        uri: str,
        *,
        auth: tuple[str, str] | None = None,
        database: str | None = None,
    ) -> None:
        self._database = database
        try:
            self._driver = GraphDatabase.driver(uri, auth=auth)
        except (neo4j.exceptions.ConfigurationError, ValueError) as exc:
            raise ValueError(f"graph URL {uri!r}: {exc}") from exc
        try:
            self._driver.verify_connectivity()
            self.falkordb_bolt = self._pastes_string_parameters()
        except BaseException as exc:
            self._driver.close()
            if isinstance(exc, _DRIVER_ERRORS):
                raise GraphStoreError(f"cannot use the Bolt server at {uri}: {exc}") from exc
            raise

    def read(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        clause = writing_clause(cypher)
        if clause is not None:
            raise GraphStoreError(f"a read cannot {clause}: use write()")
        return self._run(cypher, params, READ_ACCESS)

    def write(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(cypher, params, WRITE_ACCESS)

    def ensure_index(self, label: str, prop: str) -> None:
        check_identifier(label, "label")
        check_identifier(prop, "property")
        if not self.falkordb_bolt:
            self.write(f"CREATE INDEX IF NOT EXISTS FOR (n:{label}) ON (n.{prop})")
            return
        # FalkorDB knows no IF NOT EXISTS, and over Bolt its "already indexed" error
        # arrives as an anonymous one: look first.
        indexes = self.read("CALL db.indexes() YIELD label, properties RETURN label, properties")
        if not any(row["label"] == label and prop in row["properties"] for row in indexes):
            self.write(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})")

    def clear(self) -> None:
        self.write("MATCH (n) DETACH DELETE n")

    def close(self) -> None:
        self._driver.close()

    def _run(
        self, cypher: str, params: Mapping[str, Any] | None, access: str
    ) -> list[dict[str, Any]]:
        if self.falkordb_bolt:
            values = _falkordb_params.for_bolt(_falkordb_params.checked(params))
        else:
            values = dict(params or {})

        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            result = tx.run(cypher, values)
            rows = [{key: _plain(value) for key, value in record.items()} for record in result]
            if access == READ_ACCESS and result.consume().counters.contains_updates:
                # Raising rolls the transaction back (where the server can).
                raise GraphStoreError("a read cannot change the graph: use write()")
            return rows

        try:
            with self._driver.session(database=self._database, default_access_mode=access) as s:
                return s.execute_read(work) if access == READ_ACCESS else s.execute_write(work)
        except _DRIVER_ERRORS as exc:
            raise GraphStoreError(_message(exc)) from exc

    def _pastes_string_parameters(self) -> bool:
        """Whether the server pastes string parameters into the query text unescaped,
        as FalkorDB's Bolt endpoint does; GraphStoreError if it mangles them otherwise."""

        def echo(value: str) -> Any:
            with self._driver.session(database=self._database) as session:
                return session.execute_read(
                    lambda tx: tx.run("RETURN $probe AS probe", probe=value).single(strict=True)[0]
                )

        try:
            if echo(_PROBE) == _PROBE:
                return False
        except neo4j.exceptions.Neo4jError:
            pass  # the pasted quote ended the literal early: a syntax error
        escaped = _PROBE.replace("\\", "\\\\").replace("'", "\\'")
        if echo(escaped) == _PROBE:
            return True
        raise GraphStoreError(
            "the Bolt server changes string parameters: it returned a different string"
        )


def _message(exc: BaseException) -> str:
    if isinstance(exc, neo4j.exceptions.Neo4jError) and exc.message:
        return f"{exc.message} ({exc.code})" if exc.code else exc.message
    return str(exc)


def _plain(value: Any) -> Any:
    """A result value with the driver's graph and time objects made plain."""
    if isinstance(value, (Node, Relationship)):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return {
            "nodes": [_plain(node) for node in value.nodes],
            "relationships": [_plain(rel) for rel in value.relationships],
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (neo4j.time.DateTime, neo4j.time.Date, neo4j.time.Time)):
        return value.to_native()
    return value
