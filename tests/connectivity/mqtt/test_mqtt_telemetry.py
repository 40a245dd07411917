"""MQTT ingest through the real Mosquitto on 127.0.0.1:1883: topics, payloads, mappings,
acknowledgement only once durable, and the persistent session across a restart."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from support.ingest_parts import CNC, PUMP, LocalHosts, example_models, wait_for

from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.telemetry import (
    MqttIngest,
    TopicMapping,
    load_topic_mappings,
    parse_source_time,
)
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator

BROKER = ("127.0.0.1", 1883)
ENDPOINT = MqttEndpoint(*BROKER)
RUN = uuid.uuid4().hex[:8]
PREFIX = f"test-{RUN}/"  # topics of this run only: the broker is shared
PUMP_1, PUMP_2, CNC_1 = f"pump-{RUN}-1", f"pump-{RUN}-2", f"cnc-{RUN}-1"
TWINS = {PUMP_1: PUMP, PUMP_2: PUMP, CNC_1: CNC}
MAPPING = TopicMapping(
    topic=f"legacy/{RUN}/+/data",
    twin="pump-" + RUN + "-{1}",
    fields={"flowRate": "readings.flow", "pressure": "readings.p.0"},
    timestamp="time",
)


@pytest.fixture(scope="module")
def models():
    return example_models()


@pytest.fixture
def parts(models, tmp_path: Path) -> Iterator[tuple[IngestPipeline, LocalHosts]]:
    hosts = LocalHosts(tmp_path, TWINS)
    validator = TelemetryValidator(TWINS.get, models.interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(validator, hosts, letters)
        yield pipeline, hosts
        pipeline.close()
    hosts.close()


def ingest(pipeline: IngestPipeline, client_id: str | None = None) -> MqttIngest:
    # A short session expiry: the shared broker forgets this test's session soon after.
    return MqttIngest(
        pipeline,
        ENDPOINT,
        client_id=client_id or f"test-ingest-{uuid.uuid4().hex[:8]}",
        mappings=[MAPPING],
        session_expiry_s=30,
        prefix=PREFIX,
    ).start()


@pytest.fixture
def publisher() -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(*BROKER)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, topic: str, payload: object) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client.publish(topic, data, qos=1).wait_for_publish(10)


def test_convention_topics_reach_the_asset(parts, publisher: mqtt.Client) -> None:
    pipeline, hosts = parts
    with ingest(pipeline) as sub:
        now = time.time()
        for i in range(30):
            publish(
                publisher,
                f"{PREFIX}twins/{PUMP_1}/telemetry",
                {"$ts": now + i, "flowRate": float(i)},
            )
        iso = datetime.fromtimestamp(int(now) - 60, UTC).isoformat()
        publish(publisher, f"{PREFIX}twins/{CNC_1}/telemetry", {"$ts": iso, "vibration": 1.5})
        publish(publisher, f"{PREFIX}twins/{PUMP_2}/properties", {"state": "stopped"})
        wait_for(lambda: sub.acknowledged == 32)
    pump = hosts.snapshot(PUMP_1)
    assert pump is not None and pump["messages"] == 30
    assert pump["last"]["flowRate"] == {
        "value": 29.0,
        "sourceTime": now + 29,
        "receivedTime": pytest.approx(time.time(), abs=30),
    }
    cnc = hosts.snapshot(CNC_1)
    assert cnc is not None and cnc["last"]["vibration"]["sourceTime"] == int(now) - 60
    assert pipeline.accepted == 32 and pipeline.rejected == 0


def test_topic_mappings_read_other_shapes(parts, publisher: mqtt.Client) -> None:
    pipeline, hosts = parts
    with ingest(pipeline) as sub:
        publish(
            publisher,
            f"legacy/{RUN}/2/data",
            {"time": 1795000000.5, "readings": {"flow": 4.5, "p": [7.25]}},
        )
        wait_for(lambda: sub.acknowledged == 1)
    pump = hosts.snapshot(PUMP_2)
    assert pump is not None
    assert pump["last"]["flowRate"]["value"] == 4.5 and pump["last"]["pressure"]["value"] == 7.25
    assert pump["last"]["pressure"]["sourceTime"] == 1795000000.5


def test_hostile_payloads_are_dead_lettered_and_acknowledged(parts, publisher: mqtt.Client) -> None:
    pipeline, hosts = parts
    topic = f"{PREFIX}twins/{PUMP_1}/telemetry"
    hostile = [
        (topic, b"{not json", "notJson"),
        (topic, b"\xff\xfe\x00", "notJson"),
        (topic, b"[1, 2, 3]", "notAnObject"),
        (topic, b"[" * 100_000, "notJson"),  # deep nesting
        (topic, b'{"flowRate": NaN}', "notJson"),  # not JSON, though Python's json takes it
        (topic, b'{"flowRate": 1e999}', "notJson"),  # a number no double holds
        (topic, json.dumps({"flowRate": "x" * 300_000}).encode(), "oversize"),
        (topic, json.dumps({"$ts": "yesterday", "flowRate": 1.0}).encode(), "badTimestamp"),
        (topic, json.dumps({"$ts": 1.7e12, "flowRate": 1.0}).encode(), "badTimestamp"),
        (topic, json.dumps({"flowRate": {"$gt": ""}}).encode(), "wrongType"),
        (topic, json.dumps({"flowRate": 1.0, "bogus": 2}).encode(), "unknownField"),
        (
            f"{PREFIX}twins/{RUN}-ghost/telemetry",
            json.dumps({"flowRate": 1.0}).encode(),
            "unknownTwin",
        ),
        (
            f"{PREFIX}twins/{PUMP_1}/telemetry/motor",
            json.dumps({"flowRate": 1.0}).encode(),
            "unknownComponent",
        ),
    ]
    with ingest(pipeline) as sub:
        for t, payload, _ in hostile:
            publish(publisher, t, payload)
        publish(publisher, topic, {"flowRate": 1.0})  # a good one after all that
        wait_for(lambda: sub.acknowledged == len(hostile) + 1)
    letters = sorted(pipeline.dead_letters.list(limit=100), key=lambda letter: letter.id)
    assert [letter.reason for letter in letters] == [reason for _, _, reason in hostile]
    assert letters[6].payload_size > 300_000 and letters[6].payload_truncated
    pump = hosts.snapshot(PUMP_1)
    assert pump is not None and pump["messages"] == 1


def test_messages_are_acknowledged_only_once_durable(parts, publisher: mqtt.Client) -> None:
    pipeline, hosts = parts
    hosts.hold.clear()
    with ingest(pipeline) as sub:
        publish(publisher, f"{PREFIX}twins/{PUMP_1}/telemetry", {"flowRate": 1.0})
        wait_for(lambda: sub.received == 1)
        time.sleep(0.3)
        assert sub.acknowledged == 0
        hosts.hold.set()
        wait_for(lambda: sub.acknowledged == 1)


def test_the_session_keeps_messages_while_ingest_is_down(parts, publisher: mqtt.Client) -> None:
    pipeline, hosts = parts
    client_id = f"test-ingest-{uuid.uuid4().hex[:8]}"
    ingest(pipeline, client_id).stop()  # subscribe once, then go away
    for i in range(40):
        publish(publisher, f"{PREFIX}twins/{PUMP_2}/telemetry", {"pressure": float(i)})
    with ingest(pipeline, client_id) as again:
        wait_for(lambda: again.acknowledged == 40)
    pump = hosts.snapshot(PUMP_2)
    assert pump is not None and pump["messages"] == 40


def test_mapping_files_are_checked() -> None:
    good = load_topic_mappings('[{"topic": "a/+/b", "twin": "t-{1}", "fields": {"x": "v"}}]')
    assert good[0].match("a/7/b") == ["7"] and good[0].match("a/7/c") is None
    with pytest.raises(ValueError, match="kind"):
        load_topic_mappings('[{"topic": "a", "twin": "t", "kind": "commands"}]')
    with pytest.raises(ValueError, match="twin"):
        load_topic_mappings('[{"topic": "a"}]')


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), (1795000000, 1795000000.0), ("2026-11-21T10:00:00Z", 1795255200.0)],
)
def test_source_times(raw, expected) -> None:
    assert parse_source_time(raw) == expected


@pytest.mark.parametrize("raw", [-1, 1e13, "2026-11-21T10:00:00", "soon", True, [1]])
def test_bad_source_times_name_the_field(raw) -> None:
    with pytest.raises(ValueError, match=r"\$ts"):
        parse_source_time(raw)
