"""BufferedClient against a real Mosquitto: bursts are read in few socket reads and
arrive whole and in order (a payload larger than one read included), and ack_many
acknowledges exactly the messages it names (the broker redelivers the others)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.mosquitto import Mosquitto

from twinforge.connectivity.mqtt.client import READ_SIZE, BufferedClient

COUNT = 1000
BIG = 500  # this message's payload is larger than one socket read


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    # No in-flight cap: the whole backlog comes in one burst, as under load.
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"), "max_inflight_messages 0\n")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


class Subscriber:
    """A BufferedClient with a persistent session that records what reaches it."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.messages: list[tuple[int, bytes, bool]] = []  # (mid, payload, dup)
        self.subscribed = threading.Event()
        self.client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.mid, m.payload, m.dup))
        self.client.on_subscribe = lambda *_: self.subscribed.set()

    def connect(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 60
        properties.ReceiveMaximum = 65535
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        self.client.subscribe("load/#", qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.subscribed.clear()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.messages) >= count, f"{len(self.messages)} of {count} arrived"


def payload(n: int) -> bytes:
    size = READ_SIZE * 2 + 7 if n == BIG else (n % 97) * 13
    return json.dumps({"n": n, "pad": "x" * size}).encode()


def publish_backlog(port: int, count: int) -> None:
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    infos = [publisher.publish(f"load/{n % 10}", payload(n), qos=1) for n in range(count)]
    for info in infos:
        info.wait_for_publish(30)
    publisher.disconnect()
    publisher.loop_stop()


def test_a_backlog_arrives_whole_in_order_in_few_reads(broker: Mosquitto, monkeypatch) -> None:
    subscriber = Subscriber(broker.port, "buffered-burst")
    subscriber.connect()
    subscriber.disconnect()  # the session stays: the broker queues the backlog for it
    publish_backlog(broker.port, COUNT)

    reads = 0
    plain_read = mqtt.Client._sock_recv

    def counted(client: mqtt.Client, size: int) -> bytes:
        nonlocal reads
        if client is subscriber.client:
            reads += 1
        return plain_read(client, size)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counted)
    subscriber.connect()
    subscriber.wait_for(COUNT)
    subscriber.client.ack_many(mid for mid, _, _ in subscriber.messages)
    time.sleep(0.5)
    subscriber.disconnect()

    assert [p for _, p, _ in subscriber.messages] == [payload(n) for n in range(COUNT)]
    # paho alone reads each packet in three or four calls: over 3,000 here.
    assert reads < COUNT / 4, f"{reads} socket reads for {COUNT} messages"


def test_ack_many_acknowledges_exactly_the_messages_it_names(broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.port, "buffered-acks")
    subscriber.connect()
    subscriber.disconnect()
    publish_backlog(broker.port, 200)
    subscriber.connect()
    subscriber.wait_for(200)
    first = list(subscriber.messages)
    subscriber.client.ack_many(mid for mid, data, _ in first if json.loads(data)["n"] % 2 == 0)
    time.sleep(0.5)  # the acknowledgements reach the broker before we leave
    subscriber.disconnect()

    subscriber.messages.clear()
    subscriber.connect()
    subscriber.wait_for(100)
    time.sleep(0.5)  # anything beyond the 100 would arrive by now
    again = list(subscriber.messages)
    subscriber.client.ack_many(mid for mid, _, _ in again)
    time.sleep(0.5)
    subscriber.disconnect()

    assert sorted(json.loads(data)["n"] for _, data, _ in again) == list(range(1, 200, 2))
    assert all(dup for _, _, dup in again)  # redeliveries, flagged as such


def test_properties_qos_0_and_retain_arrive_as_paho_gives_them(broker: Mosquitto) -> None:
    received: list[mqtt.MQTTMessage] = []
    subscriber = Subscriber(broker.port, "buffered-kinds")
    subscriber.client.on_message = lambda _c, _u, m: received.append(m)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    publisher.publish("load/kept", b"retained", qos=1, retain=True).wait_for_publish(10)
    subscriber.connect()  # the retained message comes with the subscription
    described = Properties(PacketTypes.PUBLISH)
    described.ContentType = "application/json"
    described.UserProperty = ("site", "a")
    publisher.publish("load/1", b"plain", qos=1).wait_for_publish(10)
    publisher.publish("load/2", b"described", qos=1, properties=described).wait_for_publish(10)
    publisher.publish("load/3", b"fire and forget", qos=0).wait_for_publish(10)
    publisher.publish("load/kept", b"", qos=1, retain=True).wait_for_publish(10)  # clear it
    deadline = time.monotonic() + 10
    while len(received) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    subscriber.client.ack_many(m.mid for m in received if m.qos)
    subscriber.disconnect()
    publisher.disconnect()
    publisher.loop_stop()

    kept, plain, with_properties, qos_0 = received[:4]
    assert (kept.topic, kept.payload, kept.retain, kept.qos) == ("load/kept", b"retained", True, 1)
    assert (plain.topic, plain.payload, plain.retain, plain.properties) == (
        "load/1",
        b"plain",
        False,
        None,  # none sent: the short path leaves them out
    )
    assert with_properties.payload == b"described"
    assert with_properties.properties.ContentType == "application/json"
    assert with_properties.properties.UserProperty == [("site", "a")]
    assert (qos_0.topic, qos_0.payload, qos_0.qos, qos_0.mid) == (
        "load/3",
        b"fire and forget",
        0,
        0,
    )
