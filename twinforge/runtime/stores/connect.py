"""Opening the graph store a URL names (``TWINFORGE_GRAPH_URL``), or the embedded one."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from twinforge.runtime.stores.base import GraphStore, GraphStoreError
from twinforge.runtime.stores.embedded_falkordb import DataDirInUse, EmbeddedFalkorDB, find_running
from twinforge.runtime.stores.falkordb_store import FalkorDBStore
from twinforge.runtime.stores.neo4j_store import Neo4jStore

__all__ = ["FALKORDB_SCHEMES", "NEO4J_SCHEMES", "open_graph_store"]

FALKORDB_SCHEMES = ("falkordb", "redis")
NEO4J_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
_SHARE_ATTEMPTS = 5  # the data dir changing hands (a server stopping as another starts)


def open_graph_store(
    url: str | None, data_dir: Path, graph_name: str = "twins", *, share_running: bool = False
) -> GraphStore:
    """The graph store ``url`` names.

    * None: the embedded FalkorDB, started as a child process with its data under
      ``data_dir``; closing the store stops it. When another process's embedded FalkorDB
      holds ``data_dir`` (a running ``twinforge serve``), ``share_running`` connects to
      that one instead (closing the store leaves it running); without it, that is a
      ``GraphStoreError``.
    * ``falkordb://[user:password@]host[:port]`` or ``redis://...``: a FalkorDB server
      (port 6379 by default); the graph is the key ``graph_name``.
    * ``bolt://``, ``neo4j://`` (also ``+s``, ``+ssc``) ``[user:password@]host[:port][/db]``:
      Neo4j, or another Bolt server; without user info, no authentication.

    ``ValueError`` for any other scheme; ``GraphStoreError`` if the database cannot be
    reached or started.
    """
    if url is None:
        return _embedded(data_dir, graph_name, share_running)
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


def _embedded(data_dir: Path, graph_name: str, share_running: bool) -> FalkorDBStore:
    for _ in range(_SHARE_ATTEMPTS):
        try:
            server = EmbeddedFalkorDB(data_dir).start()
        except DataDirInUse:
            if not share_running:
                raise
            running = find_running(data_dir)
            if running is None:  # it stopped meanwhile: the data dir may be free now
                time.sleep(0.2)
                continue
            try:
                return FalkorDBStore(
                    graph_name,
                    unix_socket=running.unix_socket,
                    port=running.port,
                    password=running.password,
                    shared=running,
                )
            except GraphStoreError as exc:
                where = running.unix_socket or f"127.0.0.1:{running.port}"
                raise GraphStoreError(
                    f"the graph data in {data_dir} is held by process {running.pid}, but its "
                    f"FalkorDB at {where} does not answer ({_first_line(exc)}); "
                    "check that process, or stop it"
                ) from exc
        try:
            return FalkorDBStore(
                graph_name,
                unix_socket=server.unix_socket,
                port=server.port,
                password=server.password,
                server=server,
            )
        except BaseException:
            server.stop()
            raise
    raise GraphStoreError(
        f"the graph data in {data_dir} keeps changing hands between processes; try again"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _redacted(parts: SplitResult) -> str:
    """The URL without its password, fit for an error message."""
    if parts.password is None:
        return parts.geturl()
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
