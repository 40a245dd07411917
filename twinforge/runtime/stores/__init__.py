"""Graph stores: the embedded FalkorDB (default), a FalkorDB server, or Neo4j over Bolt,
behind one interface (:class:`GraphStore`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from .base import GraphStore, GraphStoreError
from .embedded_falkordb import EmbeddedFalkorDB
from .falkordb_store import FalkorDBStore
from .neo4j_store import Neo4jStore

NEO4J_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
FALKORDB_SCHEMES = ("falkordb", "redis")


class EmbeddedFalkorDBStore(FalkorDBStore):
    """A FalkorDBStore that owns its child process: closing it stops the database."""

    def __init__(self, data_dir: Path, *, graph: str = "twins") -> None:
        self.server = EmbeddedFalkorDB(Path(data_dir) / "falkordb").start()
        try:
            super().__init__(graph=graph, unix_socket=self.server.unix_socket)
        except Exception:
            self.server.stop()
            raise

    def close(self) -> None:
        super().close()
        self.server.stop()


def open_graph_store(url: str | None, data_dir: Path, graph: str = "twins") -> GraphStore:
    """The store ``url`` names; None means the embedded FalkorDB under ``data_dir``."""
    if url is None:
        return EmbeddedFalkorDBStore(data_dir, graph=graph)
    parts = urlsplit(url)
    if parts.scheme in FALKORDB_SCHEMES:
        return FalkorDBStore(
            graph=graph,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            password=unquote(parts.password) if parts.password else None,
        )
    if parts.scheme in NEO4J_SCHEMES:
        auth = (
            (unquote(parts.username or ""), unquote(parts.password or ""))
            if parts.username
            else None
        )
        bare = parts._replace(
            netloc=parts.hostname + (f":{parts.port}" if parts.port else "")
            if parts.hostname
            else ""
        )
        database = parts.path.strip("/") or None
        return Neo4jStore(bare._replace(path="").geturl(), auth=auth, database=database)
    raise ValueError(
        f"graph URL {url!r}: the scheme must be one of "
        + ", ".join(f"{s}://" for s in FALKORDB_SCHEMES + NEO4J_SCHEMES)
        + " (or leave TWINFORGE_GRAPH_URL unset for the embedded FalkorDB)"
    )


__all__ = [
    "EmbeddedFalkorDB",
    "EmbeddedFalkorDBStore",
    "FalkorDBStore",
    "GraphStore",
    "GraphStoreError",
    "Neo4jStore",
    "open_graph_store",
]
