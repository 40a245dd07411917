"""Stopping MQTT ingest with messages in flight, through the real Mosquitto on
127.0.0.1:1883 and a real pipeline into asset hosts: what was not yet durable is never
acknowledged, is counted as left for redelivery, and comes back on the session's next
start (same client id)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from support.ingest_parts import PUMP, LocalHosts, example_models, wait_for

from twinforge.cli import _stop_line
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.telemetry import MqttIngest
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator

BROKER = ("127.0.0.1", 1883)
ENDPOINT = MqttEndpoint(*BROKER)
RUN = uuid.uuid4().hex[:8]
PREFIX = f"test-stop-{RUN}/"  # topics of this run only: the broker is shared
PUMP_1 = f"pump-{RUN}-1"
TWINS = {PUMP_1: PUMP}


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[IngestPipeline, LocalHosts]]:
    hosts = LocalHosts(tmp_path, TWINS, hosts=1)
    validator = TelemetryValidator(TWINS.get, example_models().interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(validator, hosts, letters)
        yield pipeline, hosts
        hosts.hold.set()
        pipeline.close()
    hosts.close()


def _ingest(pipeline: IngestPipeline, client_id: str) -> MqttIngest:
    # A short session expiry: the shared broker forgets this test's session soon after.
    return MqttIngest(
        pipeline, ENDPOINT, client_id=client_id, session_expiry_s=30, prefix=PREFIX
    ).start()


def _publish(first: int, n: int) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(*BROKER)
    client.loop_start()
    try:
        now = time.time()
        for i in range(first, first + n):
            payload = json.dumps({"$ts": now + i * 1e-3, "flowRate": float(i)}).encode()
            topic = f"{PREFIX}twins/{PUMP_1}/telemetry"
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_messages_in_flight_at_stop_are_redelivered_on_the_next_start(parts) -> None:
    pipeline, hosts = parts
    client_id = f"test-stop-{RUN}"
    first = _ingest(pipeline, client_id)
    _publish(0, 20)
    wait_for(lambda: first.acknowledged == 20)
    hosts.hold.clear()  # a host that stalls: the next messages stay in flight
    _publish(20, 3)
    wait_for(lambda: first.received == 23)
    first.stop()
    assert (first.received, first.acknowledged, first.left_for_redelivery) == (23, 20, 3)
    assert pipeline.accepted == 20 and pipeline.rejected == 0
    hosts.hold.set()  # they become durable now, after the disconnect: still not acked
    wait_for(lambda: pipeline.accepted == 23)
    time.sleep(0.3)
    assert first.acknowledged == 20  # no acknowledgement went out after stop

    second = _ingest(pipeline, client_id)  # the same persistent session
    try:
        wait_for(lambda: second.acknowledged == 3, timeout=20)
        assert second.received == 3  # exactly the three left, sent again
    finally:
        second.stop()
    assert second.left_for_redelivery == 0
    snapshot = hosts.snapshot(PUMP_1)
    assert snapshot is not None and snapshot["last"]["flowRate"]["value"] == 22.0


def test_the_stop_line_accounts_for_every_message() -> None:
    status = {
        "assets": 40,
        "received": 2904,
        "accepted": 2901,
        "rejected": 0,
        "left_for_redelivery": 3,
        "dead_letters_dropped": 0,
    }
    assert _stop_line(status) == (
        "received 2904, accepted 2901, rejected 0, left for redelivery 3, dead letters dropped 0"
    )
