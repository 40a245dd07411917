"""The runtime's parts of a running server: the twin graph and the live feed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import FalkorDBStore, GraphStore, open_graph_store
from twinforge.runtime.twin_service import NotFound, TwinService
from twinforge.twin_models.elements import Interface

__all__ = ["GraphPart", "LiveFeed", "start_graph", "start_live_feed"]


@dataclass
class GraphPart:
    """The graph store and the twin service over it."""

    store: GraphStore
    twins: TwinService
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.store.close()

    def url_for_other_processes(self, configured: str | None) -> str | None:
        """The URL another process (an asset host) reaches this graph at: the configured
        one, or the embedded FalkorDB's own address with its password (a secret: never
        log or show it)."""
        if configured:
            return configured
        if isinstance(self.store, FalkorDBStore) and self.store.server is not None:
            return self.store.server.client_url
        return None

    def interface_of_model(self, model_id: str) -> Interface | None:
        """The parsed interface of ``model_id``, or None when no such model is stored."""
        try:
            return self.twins.models.interface(model_id)
        except NotFound:
            return None


def start_graph(graph_url: str | None, data_dir: Path) -> GraphPart:
    """Open the graph at ``graph_url``, or the embedded FalkorDB kept in ``data_dir``."""
    store = open_graph_store(graph_url, data_dir)
    return GraphPart(store, TwinService(store))


@dataclass
class LiveFeed:
    """Telemetry and alarm events of the asset actors, for GraphQL subscriptions."""

    bus: EventBus = field(default_factory=EventBus)
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.bus.close()


def start_live_feed() -> LiveFeed:
    return LiveFeed()
