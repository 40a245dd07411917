"""Opening the graph store a URL names (``TWINFORGE_GRAPH_URL``), or the embedded one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from twinforge.runtime.stores.base import GraphStore
from twinforge.runtime.stores.embedded_falkordb import EmbeddedFalkorDB
from twinforge.runtime.stores.falkordb_store import FalkorDBStore
from twinforge.runtime.stores.neo4j_store import Neo4jStore

__all__ = ["FALKORDB_SCHEMES", "NEO4J_SCHEMES", "open_graph_store"]

FALKORDB_SCHEMES = ("falkordb", "redis")
NEO4J_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def open_graph_store(url: str | None, data_dir: Path, graph_name: str = "twins") -> GraphStore:
    """The graph store ``url`` names.

    * None: the embedded FalkorDB, started as a child process with its data under
      ``data_dir``; closing the store stops it.
    * ``falkordb://[user:password@]host[:port]`` or ``redis://...``: a FalkorDB server
      (port 6379 by default); the graph is the key ``graph_name``.
    * ``bolt://``, ``neo4j://`` (also ``+s``, ``+ssc``) ``[user:password@]host[:port][/db]``:
      Neo4j, or another Bolt server; without user info, no authentication.

    ``ValueError`` for any other scheme; ``GraphStoreError`` if the database cannot be
    reached or started.
    """
    if url is None:
        server = EmbeddedFalkorDB(data_dir).start()
        try:
            return FalkorDBStore(
                graph_name, unix_socket=server.unix_socket, port=server.port, server=server
            )
        except BaseException:
            server.stop()
            raise
    parts = urlsplit(url)
    if parts.scheme in FALKORDB_SCHEMES:
        return FalkorDBStore(
            graph_name,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
    if parts.scheme in NEO4J_SCHEMES:
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
        bare = parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else ""), path="")
        return Neo4jStore(bare.geturl(), auth=auth, database=parts.path.strip("/") or None)
    raise ValueError(
        f"graph URL {_redacted(parts)!r}: the scheme must be one of "
        + ", ".join(f"{scheme}://" for scheme in FALKORDB_SCHEMES + NEO4J_SCHEMES)
        + " (or no URL, for the embedded FalkorDB)"
    )


def _redacted(parts: SplitResult) -> str:
    """The URL without its password, fit for an error message."""
    if parts.password is None:
        return parts.geturl()
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
