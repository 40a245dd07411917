"""The live feed: durable telemetry and alarm changes from a real fleet on Ray, through a
real ingest pipeline, onto the event bus; and the fleet's batched reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.bus_reading import take

from twinforge.actors.alarms import load_alarm_rules
from twinforge.actors.fleet import AssetFleet
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.runtime.events import EventBus, EventKind, Gap, Subscription, TwinEvent
from twinforge.sim.factory import MODELS_DIR
from twinforge.twin_models import PROPERTY, ModelSet, parse_models

REPO = Path(__file__).resolve().parents[2]
PUMP = "dtmi:com:twinforge:factory:Pump;1"
EQUIPMENT = "dtmi:com:twinforge:factory:Equipment;1"
TWINS = {"pump-1": PUMP, "pump-2": PUMP, "pump-3": PUMP}
RULES = [{"name": "overload", "model": EQUIPMENT, "field": "powerKw", "above": 50, "severity": 4}]
TIMEOUT = 60  # seconds


@pytest.fixture(scope="module")
def models() -> ModelSet:
    files = sorted((MODELS_DIR).glob("*.json"))
    return parse_models([f.read_text(encoding="utf-8") for f in files])


@pytest.fixture
def fleet(make_fleet: Callable[..., AssetFleet]) -> AssetFleet:
    # Two twins per host: the three pumps live on two hosts.
    fleet = make_fleet(
        2, alarm_rules=tuple(load_alarm_rules(RULES)), lineage={PUMP: (PUMP, EQUIPMENT)}
    )
    fleet.add(TWINS)
    assert fleet.route("pump-1") != fleet.route("pump-3")
    return fleet


@contextmanager
def live_pipeline(
    fleet: AssetFleet, models: ModelSet, bus: EventBus, tmp_path: Path
) -> Iterator[IngestPipeline]:
    """A real ingest pipeline into ``fleet`` that publishes to ``bus``."""
    validator = TelemetryValidator(TWINS.get, models.interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(validator, fleet, letters, live=bus)
        try:
            yield pipeline
        finally:
            pipeline.close()


async def make_durable(
    pipeline: IngestPipeline, offers: list[tuple[str, dict, float, str]]
) -> None:
    """Offer ``(twin, values, source time, kind)`` messages and wait until every one is
    durable and the pipeline has drained (so the next ones come after)."""
    futures = [
        pipeline.offer(twin, values, source_time=ts, origin="test:", kind=kind)
        for twin, values, ts, kind in offers
    ]
    for future in futures:
        assert await asyncio.wrap_future(future) is True
    await asyncio.to_thread(pipeline.drain)


def test_durable_telemetry_and_alarm_changes_reach_live_subscriptions(
    fleet: AssetFleet, models: ModelSet, tmp_path: Path
) -> None:
    t0 = time.time() - 60
    bus = EventBus()

    async def scenario() -> tuple[list[TwinEvent | Gap], list[TwinEvent | Gap], Subscription]:
        watched = bus.subscribe(subjects=["pump-1"])
        elsewhere = bus.subscribe(subjects=["pump-3"])  # a twin that sends nothing
        alerts = bus.subscribe(kinds=[EventKind.ALARM_RAISED, EventKind.ALARM_CLEARED])
        with live_pipeline(fleet, models, bus, tmp_path) as pipeline:
            # Phases one after the other: each is durable before the next.
            await make_durable(
                pipeline,
                [
                    ("pump-1", {"powerKw": 20.0, "flowRate": 3.0}, t0, "telemetry"),
                    ("pump-2", {"powerKw": 90.0}, t0, "telemetry"),  # raises on pump-2
                    ("pump-1", {"powerKw": 75.0}, t0 + 1, "telemetry"),  # raises
                ],
            )
            await make_durable(
                pipeline,
                [
                    ("pump-1", {"powerKw": 80.0}, t0 + 2, "telemetry"),  # still raised
                    ("pump-1", {"powerKw": 10.0}, t0 + 3, "telemetry"),  # clears
                ],
            )
            await make_durable(pipeline, [("pump-1", {"state": "running"}, t0 + 4, PROPERTY)])
        live = await take(watched, 7, TIMEOUT)
        alarms = await take(alerts, 3, TIMEOUT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(elsewhere), 0.2)
        return live, alarms, elsewhere

    live, alarms, elsewhere = asyncio.run(scenario())

    assert not any(isinstance(item, Gap) for item in live + alarms)
    assert all(event.subject == "pump-1" for event in live)
    assert [(e.kind, e.data.get("sourceTime", e.data.get("time"))) for e in live] == [
        (EventKind.TELEMETRY, t0),
        (EventKind.TELEMETRY, t0 + 1),
        (EventKind.ALARM_RAISED, t0 + 1),
        (EventKind.TELEMETRY, t0 + 2),
        (EventKind.TELEMETRY, t0 + 3),
        (EventKind.ALARM_CLEARED, t0 + 3),
        (EventKind.TELEMETRY, t0 + 4),
    ]
    sequences = [event.sequence for event in live]
    assert sequences == sorted(sequences)
    assert live[0].data == {
        "values": {"powerKw": 20.0, "flowRate": 3.0},
        "sourceTime": t0,
        "kind": "telemetry",
    }
    assert [e.data["values"] for e in live if e.kind is EventKind.TELEMETRY][1:] == [
        {"powerKw": 75.0},
        {"powerKw": 80.0},
        {"powerKw": 10.0},
        {"state": "running"},
    ]
    assert live[-1].data["kind"] == "property"
    assert live[2].data == {
        "name": "overload",
        "severity": 4,
        "since": t0 + 1,
        "field": "powerKw",
        "value": 75.0,
        "time": t0 + 1,
    }
    assert live[5].data == {
        "name": "overload",
        "severity": 4,
        "since": t0 + 1,  # when it was raised
        "field": "powerKw",
        "value": 10.0,  # what cleared it
        "time": t0 + 3,
    }

    # Every subject on the alerts subscription; pump-2's alarm is still active.
    assert sorted((e.subject, e.kind.value) for e in alarms) == [
        ("pump-1", "alarm.cleared"),
        ("pump-1", "alarm.raised"),
        ("pump-2", "alarm.raised"),
    ]
    assert [a.name for a in fleet.active_alarms("pump-2")] == ["overload"]
    assert fleet.active_alarms("pump-1") == []
    assert elsewhere.dropped == 0


def test_a_redelivered_message_reaches_subscribers_once(
    fleet: AssetFleet, models: ModelSet, tmp_path: Path
) -> None:
    t0 = time.time() - 30
    bus = EventBus()

    async def scenario() -> list[TwinEvent | Gap]:
        watched = bus.subscribe(subjects=["pump-1"])
        with live_pipeline(fleet, models, bus, tmp_path) as pipeline:
            # The second is the first again, as a broker redelivers an unacknowledged
            # message after a reconnect.
            for values, ts in [
                ({"powerKw": 1.0}, t0),
                ({"powerKw": 1.0}, t0),
                ({"flowRate": 2.0}, t0 + 1),
            ]:
                await make_durable(pipeline, [("pump-1", values, ts, "telemetry")])
        events = await take(watched, 2, TIMEOUT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(watched), 0.5)
        return events

    events = asyncio.run(scenario())
    assert [(e.kind, e.data["sourceTime"]) for e in events] == [
        (EventKind.TELEMETRY, t0),
        (EventKind.TELEMETRY, t0 + 1),
    ]
    snapshot = fleet.snapshot("pump-1")
    assert snapshot is not None and (snapshot["messages"], snapshot["duplicates"]) == (2, 1)


def test_a_pipeline_without_subscribers_builds_no_events(
    fleet: AssetFleet, models: ModelSet, tmp_path: Path
) -> None:
    bus = EventBus()
    with live_pipeline(fleet, models, bus, tmp_path) as pipeline:
        future = pipeline.offer("pump-1", {"powerKw": 99.0}, origin="test:")
        assert future.result(timeout=TIMEOUT) is True
        pipeline.drain()
    assert bus.published == 0
    assert [a.name for a in fleet.active_alarms("pump-1")] == ["overload"]


def test_batched_reads_answer_like_the_per_twin_ones(fleet: AssetFleet) -> None:
    t0 = time.time()
    for host in {fleet.route(twin) for twin in TWINS}:
        assert host is not None
        entries = [
            (
                twin,
                "telemetry",
                {"powerKw": 10.0 * (i + 1) * k, "flowRate": float(k)},
                t0 + k,
                t0 + k,
            )
            for i, twin in enumerate(sorted(TWINS))
            if fleet.route(twin) == host
            for k in range(1, 4)
        ]
        assert fleet.send(host, entries).result(timeout=TIMEOUT).applied == len(entries)

    asked = ["pump-3", "nope", "pump-1", "pump-2", "pump-1"]
    snapshots = fleet.snapshots(asked)
    assert snapshots == {twin: fleet.snapshot(twin) for twin in TWINS}
    assert snapshots["pump-3"]["last"]["powerKw"]["value"] == 90.0

    alarms = fleet.alarms_of(asked)
    assert alarms == {twin: fleet.active_alarms(twin) for twin in asked}
    assert [len(alarms[twin]) for twin in ("pump-1", "pump-2", "pump-3", "nope")] == [0, 1, 1, 0]

    requests = [
        ("pump-2", "powerKw", None),
        ("nope", "powerKw", None),
        ("pump-1", "flowRate", 2),
        ("pump-3", "no-such-field", None),
        ("pump-3", "powerKw", 1),
    ]
    many = fleet.series_many(requests)
    assert many == [fleet.series(*request) for request in requests]
    assert many[0]["values"] == [20.0, 40.0, 60.0]
    assert many[1] == many[3] == {"times": [], "values": []}
    assert many[2]["times"] == [t0 + 2, t0 + 3]

    assert fleet.snapshots([]) == {} and fleet.alarms_of([]) == {}
    assert fleet.series_many([]) == []
