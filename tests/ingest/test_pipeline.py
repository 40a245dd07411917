"""The ingest pipeline: DTDL validation, dead letters, batching, durability, retries."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.ingest_parts import CNC, PUMP, LocalHosts, example_models

from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.messages import Rejection
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.metrics import ServerMetrics
from twinforge.runtime.events import EventBus, EventKind, TwinEvent
from twinforge.twin_models import PROPERTY

TWINS = {"pump-1": PUMP, "pump-2": PUMP, "cnc-1": CNC}
NOW = time.time()


@pytest.fixture(scope="module")
def models():
    return example_models()


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[LocalHosts]:
    local = LocalHosts(tmp_path, TWINS)
    yield local
    local.close()


@pytest.fixture
def pipeline(models, hosts: LocalHosts, tmp_path: Path) -> Iterator[IngestPipeline]:
    validator = TelemetryValidator(TWINS.get, models.interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipe = IngestPipeline(validator, hosts, letters, ServerMetrics(), out_of_order_s=60)
        yield pipe
        pipe.close()


def test_valid_telemetry_becomes_durable_state(pipeline: IngestPipeline, hosts: LocalHosts) -> None:
    futures = [
        pipeline.offer(
            "pump-1", {"flowRate": 10.0 + i, "pressure": 2}, source_time=NOW + i, origin="mqtt:t"
        )
        for i in range(50)
    ]
    futures.append(
        pipeline.offer("cnc-1", {"spindleSpeed": 12000.0}, source_time=NOW, origin="opcua:n")
    )
    assert all(f.result(timeout=10) is True for f in futures)
    snapshot = hosts.snapshot("pump-1")
    assert snapshot is not None and snapshot["messages"] == 50
    assert snapshot["last"]["flowRate"]["value"] == 59.0
    assert snapshot["last"]["pressure"]["value"] == 2  # an integer is a valid double
    assert pipeline.accepted == 51 and pipeline.rejected == 0
    assert hosts.sends < 51  # batched
    metrics = pipeline.metrics.exposition().decode()
    assert 'twinforge_ingest_accepted_total{transport="mqtt"} 50.0' in metrics
    assert 'twinforge_ingest_accepted_total{transport="opcua"} 1.0' in metrics


def test_messages_within_the_batch_delay_go_out_in_one_send(
    models, hosts: LocalHosts, tmp_path: Path
) -> None:
    validator = TelemetryValidator(TWINS.get, models.interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipe = IngestPipeline(validator, hosts, letters, ServerMetrics(), max_delay_s=2.0)
        futures = []
        for i in range(20):  # over about 0.2 s, as sensors send
            futures.append(pipe.offer("pump-1", {"flowRate": float(i)}, source_time=NOW + i))
            time.sleep(0.01)
        assert all(f.result(timeout=10) is True for f in futures)
        pipe.close()
    assert hosts.sends == 1  # each message used to wake the sender: a send for each


@pytest.mark.parametrize(
    ("twin", "values", "kwargs", "reason", "field"),
    [
        ("nobody", {"flowRate": 1.0}, {}, "unknownTwin", None),
        ("pump-1", {"spindleSpeed": 1.0}, {}, "unknownField", "spindleSpeed"),
        ("pump-1", {"state": "running"}, {}, "unknownField", "state"),  # a property, not telemetry
        ("pump-1", {"flowRate": "fast"}, {}, "wrongType", "flowRate"),
        ("pump-1", {"flowRate": math.nan}, {}, "wrongType", "flowRate"),
        ("pump-1", {"flowRate": math.inf}, {}, "wrongType", "flowRate"),
        ("pump-1", {"flowRate": True}, {}, "wrongType", "flowRate"),
        ("pump-1", {"flowRate": [1.0] * 10}, {}, "wrongType", "flowRate"),
        ("pump-1", {"flowRate": 10**400}, {}, "wrongType", "flowRate"),
        ("pump-1", {}, {}, "unknownField", None),
        ("pump-1", {"flowRate": 1.0}, {"component": "motor"}, "unknownComponent", "motor"),
        ("pump-1", {"flowRate": 1.0}, {"source_time": NOW + 3600}, "badTimestamp", "$ts"),
        ("pump-1", {"state": "exploded"}, {"kind": PROPERTY}, "wrongType", "state"),
        ("pump-1", {"'; MATCH (n) DETACH DELETE n //": 1.0}, {}, "unknownField", None),
    ],
)
def test_bad_messages_are_dead_lettered_with_their_reason(
    pipeline: IngestPipeline, hosts: LocalHosts, twin, values, kwargs, reason, field
) -> None:
    kwargs.setdefault("source_time", NOW)
    future = pipeline.offer(twin, values, origin="mqtt:x", payload=b"raw bytes", **kwargs)
    assert future.result(timeout=10) is False
    (letter,) = pipeline.dead_letters.list()
    assert letter.reason == reason
    if field is not None:
        assert letter.field == field
    assert letter.payload == b"raw bytes" and letter.origin == "mqtt:x"
    assert letter.message  # a readable explanation
    assert hosts.sends == 0


def test_out_of_order_beyond_the_window_is_refused(pipeline: IngestPipeline) -> None:
    assert pipeline.offer("pump-1", {"flowRate": 1.0}, source_time=NOW).result(10)
    assert pipeline.offer("pump-1", {"flowRate": 1.0}, source_time=NOW - 30).result(10)  # inside
    assert not pipeline.offer("pump-1", {"flowRate": 1.0}, source_time=NOW - 61).result(10)
    assert pipeline.dead_letters.list()[0].reason == "outOfOrder"
    assert pipeline.offer("pump-2", {"flowRate": 1.0}, source_time=NOW - 61).result(10)  # per twin


def test_reported_properties_are_checked_against_properties(
    pipeline: IngestPipeline, hosts: LocalHosts
) -> None:
    assert pipeline.offer("pump-1", {"state": "running"}, kind=PROPERTY, source_time=NOW).result(10)
    host = hosts.hosts[hosts.route("pump-1")]
    assert host._pending_properties == {"pump-1": {"state": "running"}}


def test_failed_sends_are_retried_until_durable(
    pipeline: IngestPipeline, hosts: LocalHosts
) -> None:
    hosts.fail_next = 3
    futures = [
        pipeline.offer("pump-2", {"pressure": float(i)}, source_time=NOW + i) for i in range(20)
    ]
    assert all(f.result(timeout=30) for f in futures)
    snapshot = hosts.snapshot("pump-2")
    assert snapshot is not None and snapshot["messages"] == 20
    assert hosts.fail_next == 0


def test_futures_wait_for_durability(pipeline: IngestPipeline, hosts: LocalHosts) -> None:
    hosts.hold.clear()
    future = pipeline.offer("pump-1", {"flowRate": 3.0}, source_time=NOW)
    time.sleep(0.2)
    assert not future.done()
    hosts.hold.set()
    assert future.result(timeout=10) is True


def test_transport_rejections_are_stored(pipeline: IngestPipeline) -> None:
    rejection = Rejection(
        "notJson", "payload is not JSON", "mqtt:twins/a/telemetry", NOW, b"\xff\x00"
    )
    assert pipeline.reject(rejection).result(timeout=10) is False
    assert pipeline.dead_letters.list()[0].payload == b"\xff\x00"
    pipeline.drain()
    assert pipeline.rejected == 1


def test_durable_messages_are_published_once_even_after_failed_sends(
    models, hosts: LocalHosts, tmp_path: Path
) -> None:
    bus = EventBus()
    seen: list[TwinEvent] = []
    bus.add_listener(seen.append)
    validator = TelemetryValidator(TWINS.get, models.interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(validator, hosts, letters, live=bus)
        hosts.fail_next = 2  # the first sends fail and are retried: published once, when durable
        futures = [
            pipeline.offer("pump-2", {"pressure": float(i)}, source_time=NOW + i) for i in range(5)
        ]
        futures.append(pipeline.offer("nobody", {"pressure": 1.0}))  # dead-lettered: not live
        pipeline.close()
    assert [f.result() for f in futures] == [True] * 5 + [False]
    assert [(e.kind, e.subject, e.data["values"], e.data["sourceTime"]) for e in seen] == [
        (EventKind.TELEMETRY, "pump-2", {"pressure": float(i)}, NOW + i) for i in range(5)
    ]
    assert hosts.fail_next == 0


class _BrokenBus(EventBus):
    """A bus whose publishing fails: the pipeline must carry on regardless."""

    def publish_many(self, *args: Any, **kwargs: Any) -> int:
        raise RuntimeError("bus broken")


def test_a_failing_live_bus_never_stops_ingest(
    models, hosts: LocalHosts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = _BrokenBus()
    bus.add_listener(lambda event: None)  # a consumer, so the pipeline publishes
    validator = TelemetryValidator(TWINS.get, models.interface)
    with (
        caplog.at_level(logging.ERROR, logger="twinforge.ingest.pipeline"),
        DeadLetterStore(tmp_path / "dead.sqlite3") as letters,
    ):
        pipeline = IngestPipeline(validator, hosts, letters, live=bus)
        try:
            futures = [
                pipeline.offer("pump-1", {"flowRate": float(i)}, source_time=NOW + i)
                for i in range(3)
            ]
            assert all(f.result(timeout=10) for f in futures)
            pipeline.drain()
        finally:
            pipeline.close()
    assert pipeline.accepted == 3
    snapshot = hosts.snapshot("pump-1")
    assert snapshot is not None and snapshot["messages"] == 3
    assert "were not published" in caplog.text
