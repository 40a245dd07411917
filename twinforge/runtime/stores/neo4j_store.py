"""The graph store on Neo4j 5 (or any Bolt server) through the official driver.

Queries run as auto-commit transactions (one query, atomic): FalkorDB's Bolt endpoint,
which the tests use, supports explicit transactions only experimentally. Reads run in READ
access mode, which Neo4j enforces and a cluster routes to followers.

``falkordb_bolt=True`` adapts to FalkorDB's Bolt endpoint (the tests' stand-in for Neo4j),
which has two bugs: it takes the access mode for a graph name, and it pastes string
parameters into Cypher text, so backslashes and single quotes must arrive escaped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import neo4j
from neo4j import READ_ACCESS, WRITE_ACCESS, GraphDatabase
from neo4j.graph import Node, Path, Relationship

from .base import GraphStoreError, check_identifier


class Neo4jStore:
    backend = "neo4j"

    def __init__(
        self,
        uri: str,
        *,
        auth: tuple[str, str] | None = None,
        database: str | None = None,
        falkordb_bolt: bool = False,
    ) -> None:
        self._driver = GraphDatabase.driver(uri, auth=auth)
        self._database = database
        self._falkordb_bolt = falkordb_bolt
        self._read_mode = WRITE_ACCESS if falkordb_bolt else READ_ACCESS

    def read(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(cypher, params, self._read_mode)

    def write(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(cypher, params, WRITE_ACCESS)

    def ensure_index(self, label: str, prop: str) -> None:
        check_identifier(label, "label")
        check_identifier(prop, "property")
        try:
            self.write(f"CREATE INDEX IF NOT EXISTS FOR (n:{label}) ON (n.{prop})")
        except GraphStoreError:
            # Servers that only speak Bolt (FalkorDB) lack IF NOT EXISTS and answer an
            # existing index with an unnamed error, so a second refusal means "exists".
            with contextlib.suppress(GraphStoreError):
                self.write(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})")

    def clear(self) -> None:
        self.write("MATCH (n) DETACH DELETE n")

    def close(self) -> None:
        self._driver.close()

    def _run(
        self, cypher: str, params: Mapping[str, Any] | None, access: str
    ) -> list[dict[str, Any]]:
        try:
            with self._driver.session(
                database=self._database, default_access_mode=access
            ) as session:
                values = dict(params or {})
                if self._falkordb_bolt:
                    values = {k: _escaped(v) for k, v in values.items()}
                records = list(session.run(cypher, values))
        except (
            neo4j.exceptions.Neo4jError,
            neo4j.exceptions.DriverError,
            OSError,
            ValueError,
            TypeError,
        ) as exc:
            raise GraphStoreError(str(exc)) from None
        return [{key: _plain(value) for key, value in record.items()} for record in records]


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("'", "\\'")
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (Node, Relationship)):
        return dict(value.items())
    if isinstance(value, Path):
        return [_plain(n) for n in value.nodes]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
