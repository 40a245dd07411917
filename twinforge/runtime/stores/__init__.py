"""Graph stores: the embedded FalkorDB (default), a FalkorDB server, or Neo4j over Bolt,
behind one interface (:class:`GraphStore`), opened by URL with :func:`open_graph_store`."""

from twinforge.runtime.stores.base import GraphStore, GraphStoreError
from twinforge.runtime.stores.connect import open_graph_store
from twinforge.runtime.stores.embedded_falkordb import (
    DataDirInUse,
    EmbeddedFalkorDB,
    RunningFalkorDB,
    find_running,
)
from twinforge.runtime.stores.falkordb_store import FalkorDBStore
from twinforge.runtime.stores.neo4j_store import Neo4jStore

__all__ = [
    "DataDirInUse",
    "EmbeddedFalkorDB",
    "FalkorDBStore",
    "GraphStore",
    "GraphStoreError",
    "Neo4jStore",
    "RunningFalkorDB",
    "find_running",
    "open_graph_store",
]
