"""Topology views: the twin graph's relationships of some names, as a networkx graph.

A view answers the questions factory engineers ask of material, energy or signal flow:
what is downstream of this pump, what stops if this conveyor goes down, are there loops.
It is loaded once from the graph store and kept fresh by the event bus::

    view = TopologyView({"feeds"}, edges)
    bus.add_listener(view.apply)

Nodes are the twins that take part in at least one relationship of the view.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import networkx as nx

from twinforge.runtime.events import EventKind, TwinEvent

__all__ = ["Edge", "Impact", "TopologySnapshot", "TopologyView"]


@dataclass(frozen=True, slots=True)
class Edge:
    """One relationship between two twins."""

    relationship_id: str
    source: str
    target: str
    name: str

    @classmethod
    def from_relationship(cls, document: Mapping[str, Any]) -> Self:
        """Read an edge from a relationship document (``$relationshipId``, ``$sourceId``...)."""
        return cls(
            relationship_id=document["$relationshipId"],
            source=document["$sourceId"],
            target=document["$targetId"],
            name=document["$relationshipName"],
        )


@dataclass(frozen=True, slots=True)
class Impact:
    """What a twin going down means downstream.

    ``affected`` lose all their supply: every path to them from a supply (see
    :meth:`TopologyView.impact`) runs through the twin. ``downstream`` is everything the
    twin reaches, including assets still fed another way. Both are in BFS order.
    """

    twin_id: str
    affected: tuple[str, ...]
    downstream: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopologySnapshot:
    """Size of a view."""

    nodes: int
    edges: int


class TopologyView:
    """A live, thread-safe networkx view of the relationships with the given names.

    ``relationship_names`` None means every name. Parallel relationships between the same
    twins are kept apart (a multigraph keyed by source and relationship id: relationship
    ids are unique per source twin, as in Azure Digital Twins).
    """

    def __init__(
        self,
        relationship_names: Collection[str] | None = None,
        edges: Iterable[Edge] = (),
    ) -> None:
        self.relationship_names = (
            None if relationship_names is None else frozenset(relationship_names)
        )
        # Queries run networkx algorithms on the graph, so they hold the lock too.
        self._lock = threading.Lock()
        self._graph = nx.MultiDiGraph()
        # (source, relationship id) -> target: deletes name only the source and the id.
        self._targets: dict[tuple[str, str], str] = {}
        for edge in edges:
            self._add(edge)

    def apply(self, event: TwinEvent) -> None:
        """Update the view for one change event; meant for :meth:`EventBus.add_listener`."""
        with self._lock:
            match event.kind:
                case EventKind.RELATIONSHIP_CREATED | EventKind.RELATIONSHIP_REPLACED:
                    edge = Edge.from_relationship(event.data)
                    self._remove((edge.source, edge.relationship_id))
                    self._add(edge)
                case EventKind.RELATIONSHIP_DELETED:
                    self._remove((event.data["$sourceId"], event.data["$relationshipId"]))
                # The guard matters: networkx would read a missing node's id as an iterable.
                case EventKind.TWIN_DELETED if event.subject in self._graph:
                    touching = {key for *_, key in self._graph.in_edges(event.subject, keys=True)}
                    touching.update(
                        key for *_, key in self._graph.out_edges(event.subject, keys=True)
                    )
                    for key in touching:  # the twin goes with its last edge
                        self._remove(key)

    def downstream(self, twin_id: str, *, max_depth: int | None = None) -> list[str]:
        """Twins reachable from ``twin_id`` along the relationships, nearest first."""
        with self._lock:
            return self._reach(twin_id, max_depth=max_depth, reverse=False)

    def upstream(self, twin_id: str, *, max_depth: int | None = None) -> list[str]:
        """Twins from which ``twin_id`` is reachable, nearest first."""
        with self._lock:
            return self._reach(twin_id, max_depth=max_depth, reverse=True)

    def impact(self, twin_id: str) -> Impact:
        """What loses all supply if ``twin_id`` goes down, and what lies downstream of it.

        Supplies are the twins nothing feeds (in-degree 0). An asset downstream of
        ``twin_id`` is affected when, with ``twin_id`` removed, no supply reaches it any
        more (for assets a supply reaches, that is: ``twin_id`` dominates them from a virtual
        root above all supplies). A loop that nothing feeds has no supply in the view, so
        there everything downstream counts as affected, erring on the side of a warning:
        model the plant's inlets as twins to get precise answers.
        """
        with self._lock:
            downstream = self._reach(twin_id, max_depth=None, reverse=False)
            if not downstream:
                return Impact(twin_id, (), ())
            supplies = [
                node for node, degree in self._graph.in_degree() if degree == 0 and node != twin_id
            ]
            without = nx.restricted_view(self._graph, [twin_id], [])
            still_fed = set(itertools.chain.from_iterable(nx.bfs_layers(without, supplies)))
            affected = tuple(node for node in downstream if node not in still_fed)
            return Impact(twin_id, affected, tuple(downstream))

    def cycles(self, limit: int = 100) -> list[list[str]]:
        """Up to ``limit`` simple cycles (loops in the flow), each as a list of twins."""
        with self._lock:
            return list(itertools.islice(nx.simple_cycles(self._graph), limit))

    def path(self, source: str, target: str) -> list[str] | None:
        """A shortest path of twins from ``source`` to ``target``, or None if there is none."""
        with self._lock:
            try:
                return nx.shortest_path(self._graph, source, target)
            except (nx.NodeNotFound, nx.NetworkXNoPath):
                return None

    def snapshot(self) -> TopologySnapshot:
        """How many twins and relationships the view holds."""
        with self._lock:
            return TopologySnapshot(self._graph.number_of_nodes(), self._graph.number_of_edges())

    def _reach(self, twin_id: str, *, max_depth: int | None, reverse: bool) -> list[str]:
        if twin_id not in self._graph:
            return []
        edges = nx.bfs_edges(self._graph, twin_id, reverse=reverse, depth_limit=max_depth)
        return [reached for _, reached in edges]

    def _add(self, edge: Edge) -> None:
        if self.relationship_names is not None and edge.name not in self.relationship_names:
            return
        key = (edge.source, edge.relationship_id)
        self._graph.add_edge(edge.source, edge.target, key=key, name=edge.name)
        self._targets[key] = edge.target

    def _remove(self, key: tuple[str, str]) -> None:
        target = self._targets.pop(key, None)
        if target is None:
            return
        source = key[0]
        self._graph.remove_edge(source, target, key=key)
        # Keep nodes = twins with a relationship in the view, so supplies stay meaningful.
        for node in {source, target}:
            if self._graph.degree(node) == 0:
                self._graph.remove_node(node)
