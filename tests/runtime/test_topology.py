"""Topology views over a small plant, kept fresh by real events on a real bus."""

from __future__ import annotations

import threading

from twinforge.runtime.events import EventBus, EventKind
from twinforge.runtime.topology import Edge, Impact, TopologySnapshot, TopologyView

# tank ─feeds─▶ pump-a ─┐                ┌─▶ line-1
#      └feeds─▶ pump-b ─┴─feeds─▶ header ┴─▶ line-2
# meter ─suppliesPowerTo─▶ pump-a, pump-b
PLANT = [
    Edge("r1", "tank", "pump-a", "feeds"),
    Edge("r2", "tank", "pump-b", "feeds"),
    Edge("r3", "pump-a", "header", "feeds"),
    Edge("r4", "pump-b", "header", "feeds"),
    Edge("r5", "header", "line-1", "feeds"),
    Edge("r6", "header", "line-2", "feeds"),
    Edge("p1", "meter", "pump-a", "suppliesPowerTo"),
    Edge("p2", "meter", "pump-b", "suppliesPowerTo"),
]


def relationship(relationship_id: str, source: str, target: str, name: str) -> dict[str, str]:
    return {
        "$relationshipId": relationship_id,
        "$sourceId": source,
        "$targetId": target,
        "$relationshipName": name,
    }


def flow_view() -> TopologyView:
    return TopologyView({"feeds"}, PLANT)


def test_downstream_and_upstream_in_bfs_order() -> None:
    view = flow_view()

    assert view.downstream("tank") == ["pump-a", "pump-b", "header", "line-1", "line-2"]
    assert view.downstream("tank", max_depth=1) == ["pump-a", "pump-b"]
    assert view.downstream("header") == ["line-1", "line-2"]
    assert view.downstream("line-1") == []
    assert view.upstream("line-1") == ["header", "pump-a", "pump-b", "tank"]
    assert view.upstream("line-1", max_depth=2) == ["header", "pump-a", "pump-b"]
    assert view.downstream("no-such-twin") == []
    assert view.upstream("no-such-twin") == []


def test_a_redundant_pump_affects_nothing_but_the_header_stops_both_lines() -> None:
    view = flow_view()

    assert view.impact("pump-a") == Impact(
        "pump-a", affected=(), downstream=("header", "line-1", "line-2")
    )
    assert view.impact("header") == Impact(
        "header", affected=("line-1", "line-2"), downstream=("line-1", "line-2")
    )
    assert view.impact("tank").affected == ("pump-a", "pump-b", "header", "line-1", "line-2")
    assert view.impact("line-2") == Impact("line-2", (), ())
    assert view.impact("no-such-twin") == Impact("no-such-twin", (), ())


def test_relationship_names_select_what_the_view_holds() -> None:
    power = TopologyView({"suppliesPowerTo"}, PLANT)
    everything = TopologyView(None, PLANT)

    assert power.downstream("meter") == ["pump-a", "pump-b"]
    assert power.downstream("tank") == []
    assert power.snapshot() == TopologySnapshot(nodes=3, edges=2)
    assert flow_view().upstream("pump-a") == ["tank"]
    assert everything.upstream("pump-a") == ["tank", "meter"]
    assert everything.snapshot() == TopologySnapshot(nodes=7, edges=8)
    # With power in the picture the pumps have a second supply, so losing the tank
    # stops nothing outright.
    assert everything.impact("tank").affected == ()


def test_events_keep_the_view_fresh() -> None:
    bus = EventBus()
    view = flow_view()
    bus.add_listener(view.apply)

    bus.publish(
        EventKind.RELATIONSHIP_CREATED,
        "line-2",
        relationship("r7", "line-2", "packer", "feeds"),
    )
    bus.publish(
        EventKind.RELATIONSHIP_CREATED,
        "meter",
        relationship("p3", "meter", "packer", "suppliesPowerTo"),  # not this view's name
    )
    assert view.downstream("header") == ["line-1", "line-2", "packer"]
    assert view.upstream("packer") == ["line-2", "header", "pump-a", "pump-b", "tank"]

    bus.publish(
        EventKind.RELATIONSHIP_REPLACED,
        "line-2",
        relationship("r7", "line-2", "line-1", "feeds"),  # line 2 now passes to line 1
    )
    assert view.upstream("line-1", max_depth=1) == ["header", "line-2"]
    assert view.snapshot() == TopologySnapshot(nodes=6, edges=7)  # the packer left

    # Relationship ids are unique per source only: r7 of another twin is another edge.
    bus.publish(EventKind.RELATIONSHIP_DELETED, "line-1", relationship("r7", "line-1", "", "feeds"))
    assert view.snapshot() == TopologySnapshot(nodes=6, edges=7)
    bus.publish(EventKind.RELATIONSHIP_DELETED, "line-2", relationship("r7", "line-2", "", "feeds"))
    assert view.upstream("line-1") == ["header", "pump-a", "pump-b", "tank"]
    assert view.snapshot() == TopologySnapshot(nodes=6, edges=6)

    bus.publish(EventKind.TWIN_DELETED, "pump-a", {"$dtId": "pump-a"})
    assert view.downstream("tank") == ["pump-b", "header", "line-1", "line-2"]
    assert view.snapshot() == TopologySnapshot(nodes=5, edges=4)
    # Without its partner, pump B is now a single point of failure.
    assert view.impact("pump-b").affected == ("header", "line-1", "line-2")

    # Events the view does not care about, or about twins it does not hold, change nothing.
    bus.publish(EventKind.TWIN_DELETED, "no-such-twin", {})
    bus.publish(EventKind.TWIN_PATCHED, "tank", {"patch": [], "twin": {}})
    bus.publish(EventKind.RELATIONSHIP_DELETED, "tank", relationship("zz", "", "", "feeds"))
    assert view.snapshot() == TopologySnapshot(nodes=5, edges=4)


def test_cycles_and_the_impact_of_recirculation() -> None:
    # An inlet feeds the tank; line 1 recirculates rejects back into the tank.
    loop = [
        Edge("i1", "inlet", "tank", "feeds"),
        *PLANT,
        Edge("r9", "line-1", "tank", "feeds"),
    ]
    view = TopologyView({"feeds"}, loop)

    cycles = view.cycles()  # one loop through each pump
    assert sorted(sorted(cycle) for cycle in cycles) == [
        ["header", "line-1", "pump-a", "tank"],
        ["header", "line-1", "pump-b", "tank"],
    ]
    assert len(view.cycles(limit=1)) == 1
    assert flow_view().cycles() == []
    # The loop back to the tank does not count as supply: the inlet is the supply.
    assert view.impact("header").affected == ("line-1", "line-2")
    assert view.impact("pump-a").affected == ()


def test_a_loop_nothing_feeds_reports_its_whole_downstream() -> None:
    view = TopologyView(None, [Edge("a", "x", "y", "feeds"), Edge("b", "y", "x", "feeds")])

    assert view.impact("x") == Impact("x", affected=("y",), downstream=("y",))


def test_path_is_a_shortest_path_or_none() -> None:
    view = flow_view()

    assert view.path("tank", "line-2") in (
        ["tank", "pump-a", "header", "line-2"],
        ["tank", "pump-b", "header", "line-2"],
    )
    assert view.path("line-2", "tank") is None
    assert view.path("tank", "no-such-twin") is None


def test_edges_read_from_relationship_documents() -> None:
    document = relationship("r1", "tank", "pump-a", "feeds") | {"flowRate": 3.5}

    assert Edge.from_relationship(document) == PLANT[0]


def test_concurrent_events_and_queries() -> None:
    bus = EventBus()
    view = flow_view()
    bus.add_listener(view.apply)
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn(worker: int) -> None:
        for index in range(200):
            relationship_id = f"w{worker}-{index}"
            line = f"line-1-{worker}-{index}"
            bus.publish(
                EventKind.RELATIONSHIP_CREATED,
                "line-1",
                relationship(relationship_id, "line-1", line, "feeds"),
            )
            if index % 2:
                bus.publish(EventKind.TWIN_DELETED, line, {"$dtId": line})
            else:
                bus.publish(
                    EventKind.RELATIONSHIP_DELETED,
                    "line-1",
                    relationship(relationship_id, "line-1", line, "feeds"),
                )

    def query() -> None:
        try:
            while not stop.is_set():
                assert view.upstream("line-2") == ["header", "pump-a", "pump-b", "tank"]
                assert view.impact("header").affected[:2] == ("line-1", "line-2")
                view.cycles()
                view.snapshot()
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=query) for _ in range(3)]
    writers = [threading.Thread(target=churn, args=(worker,)) for worker in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()

    assert errors == []
    assert view.snapshot() == TopologySnapshot(nodes=6, edges=6)
    assert view.downstream("tank") == ["pump-a", "pump-b", "header", "line-1", "line-2"]
