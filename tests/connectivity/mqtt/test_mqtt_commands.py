"""MQTT command transport against the real Mosquitto (127.0.0.1:1883), in MQTT v5 and 3.1.1.

The machine is a paho client written here that follows the wire contract: it reads
``twins/{twinId}/commands/{command}`` and answers on the ResponseTopic with the same
CorrelationData (v5), or on the payload's ``responseTopic`` with its ``correlationId`` in
the reply (3.1.1).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.mqtt_device import CommandDevice

from twinforge.audit import AuditTrail
from twinforge.connectivity.command_reply import CommandReply
from twinforge.connectivity.mqtt.commands import MqttCommandTransport
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.part import audit_ignored_replies
from twinforge.connectivity.mqtt.topics import reply_topic

BROKER = ("127.0.0.1", 1883)
ENDPOINT = MqttEndpoint(*BROKER)


@dataclass
class Received:
    topic: str
    payload: Any
    qos: int
    response_topic: str
    correlation: bytes


# What the machine sends back for one command: a list of (payload bytes, correlation data)
# messages to publish on the response topic; the correlation data goes out as the v5
# property (a 3.1.1 machine has none to send, its script puts it into the payload).
Script = Callable[[Received], list[tuple[bytes, bytes | None]]]


def echo(received: Received) -> list[tuple[bytes, bytes | None]]:
    body = {"status": 200, "response": {"echo": received.payload["request"]}}
    return [(json.dumps(body).encode(), received.correlation)]


def echo_in_payload(received: Received) -> list[tuple[bytes, bytes | None]]:
    body = {
        "status": 200,
        "response": {"echo": received.payload["request"]},
        "correlationId": received.correlation.hex(),
    }
    return [(json.dumps(body).encode(), None)]


class Machine(CommandDevice):
    """A device on MQTT answering every command of its twin with ``script``."""

    def __init__(self, twin: str, script: Script = echo, protocol: int = mqtt.MQTTv5) -> None:
        super().__init__(BROKER, [twin], protocol)
        self.script = script
        self.received: list[Received] = []
        self._v5 = protocol == mqtt.MQTTv5

    def on_command(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        if self._v5:
            route = (message.properties.ResponseTopic, message.properties.CorrelationData)
        else:
            route = (payload["responseTopic"], bytes.fromhex(payload["correlationId"]))
        received = Received(message.topic, payload, message.qos, *route)
        self.received.append(received)
        for body, correlation in self.script(received):
            properties = None
            if self._v5 and correlation is not None:
                properties = Properties(PacketTypes.PUBLISH)
                properties.CorrelationData = correlation
            client.publish(received.response_topic, body, qos=1, properties=properties)


@pytest.fixture
def twin() -> str:
    return f"press-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def transport() -> Iterator[MqttCommandTransport]:
    with MqttCommandTransport(ENDPOINT) as t:
        yield t


def test_round_trip_follows_the_wire_contract(twin: str, transport: MqttCommandTransport) -> None:
    with Machine(twin) as machine:
        reply = asyncio.run(transport.send(twin, "setSpeed", 1.5, timeout=5))
        none = asyncio.run(transport.send(twin, "start", None, timeout=5))

    assert reply == CommandReply(200, {"echo": 1.5})
    assert none == CommandReply(200, {"echo": None})
    first, second = machine.received
    # The reply route is in the payload too, for devices that cannot read v5 properties.
    assert (first.topic, first.payload, first.qos) == (
        f"twins/{twin}/commands/setSpeed",
        {
            "request": 1.5,
            "responseTopic": reply_topic(twin, transport.client_id),
            "correlationId": first.correlation.hex(),
        },
        1,
    )
    assert second.payload["request"] is None
    # Under the twin the command went to, so an ACL can tell who may answer.
    assert first.response_topic == f"twins/{twin}/replies/{transport.client_id}"
    assert transport.reply_subscription == f"twins/+/replies/{transport.client_id}"
    assert len(first.correlation) == 16 and first.correlation != second.correlation
    assert transport.ignored == {}


def test_v5_replies_may_carry_the_correlation_in_the_payload(
    twin: str, transport: MqttCommandTransport
) -> None:
    with Machine(twin, echo_in_payload):
        reply = asyncio.run(transport.send(twin, "setSpeed", 2, timeout=5))
    assert reply == CommandReply(200, {"echo": 2})
    assert transport.ignored == {}


@pytest.fixture
def transport_311() -> Iterator[MqttCommandTransport]:
    with MqttCommandTransport(ENDPOINT, protocol=mqtt.MQTTv311) as t:
        yield t


def test_mqtt_311_round_trips_use_the_payload_form(
    twin: str, transport_311: MqttCommandTransport
) -> None:
    async def many() -> list[CommandReply]:
        return await asyncio.gather(
            *(transport_311.send(twin, "setSpeed", n, timeout=5) for n in range(20))
        )

    with Machine(twin, echo_in_payload, protocol=mqtt.MQTTv311) as machine:
        replies = asyncio.run(many())
    assert [reply.response for reply in replies] == [{"echo": n} for n in range(20)]
    first = machine.received[0]
    assert first.response_topic == reply_topic(twin, transport_311.client_id)
    assert set(first.payload) == {"request", "responseTopic", "correlationId"}
    assert transport_311.ignored == {}


def test_mqtt_311_unusable_replies_are_counted_and_ignored(
    twin: str, transport_311: MqttCommandTransport
) -> None:
    def garbage_first(received: Received) -> list[tuple[bytes, bytes | None]]:
        mine = received.correlation.hex()

        def body(**fields: Any) -> bytes:
            return json.dumps(fields).encode()

        return [
            (b"not json", None),  # whose reply? nobody can tell
            (body(status=200), None),  # no correlationId
            (body(status=200, correlationId="zz"), None),  # not hex
            (body(status=200, correlationId=uuid.uuid4().hex), None),  # somebody else's
            (body(status="200", correlationId=mine), None),
            (body(status=409, error="door open", correlationId=mine), None),
        ]

    with Machine(twin, garbage_first, protocol=mqtt.MQTTv311):
        reply = asyncio.run(transport_311.send(twin, "start", None, timeout=5))
        deadline = time.monotonic() + 5
        while transport_311.ignored.total() < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert (reply.status, reply.error) == (409, "door open")
    assert transport_311.ignored == {"malformed": 3, "noCorrelation": 1, "unknownCorrelation": 1}


def test_error_replies_pass_through(twin: str, transport: MqttCommandTransport) -> None:
    def refuse(received: Received) -> list[tuple[bytes, bytes | None]]:
        return [(b'{"status": 409, "error": "door open"}', received.correlation)]

    with Machine(twin, refuse):
        reply = asyncio.run(transport.send(twin, "start", None, timeout=5))
    assert (reply.status, reply.response, reply.error) == (409, None, "door open")


def test_concurrent_commands_get_their_own_replies(
    twin: str, transport: MqttCommandTransport
) -> None:
    async def many() -> list[CommandReply]:
        return await asyncio.gather(
            *(transport.send(twin, "setSpeed", n, timeout=5) for n in range(50))
        )

    with Machine(twin):
        replies = asyncio.run(many())
    assert [reply.response for reply in replies] == [{"echo": n} for n in range(50)]


def test_timeout_when_nobody_answers(twin: str, transport: MqttCommandTransport) -> None:
    started = time.monotonic()
    reply = asyncio.run(transport.send(twin, "start", None, timeout=0.3))
    elapsed = time.monotonic() - started
    assert (reply.status, reply.error) == (504, "no reply within 0.3 s")
    assert 0.3 <= elapsed < 2


def test_malformed_replies_are_counted_and_ignored(
    twin: str, transport: MqttCommandTransport
) -> None:
    def garbage_first(received: Received) -> list[tuple[bytes, bytes | None]]:
        good = json.dumps({"status": 200, "response": "ok"}).encode()
        return [
            (b"not json", received.correlation),
            (b"[1, 2]", received.correlation),
            (b'{"status": "200"}', received.correlation),
            (b'{"status": 200, "response": NaN}', received.correlation),
            (good, None),  # no correlation data
            (good, uuid.uuid4().bytes),  # somebody else's
            (b"x" * (transport.max_reply_bytes + 1), received.correlation),
            (good, received.correlation),
        ]

    with Machine(twin, garbage_first):
        reply = asyncio.run(transport.send(twin, "start", None, timeout=5))
        deadline = time.monotonic() + 5
        while transport.ignored.total() < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert reply == CommandReply(200, "ok")
    assert transport.ignored == {
        "malformed": 4,
        "noCorrelation": 1,
        "unknownCorrelation": 1,
        "oversize": 1,
    }


def test_only_unusable_replies_end_as_bad_gateway(
    twin: str, transport: MqttCommandTransport
) -> None:
    def shapeless(received: Received) -> list[tuple[bytes, bytes | None]]:
        return [(b'{"response": 1}', received.correlation)]

    with Machine(twin, shapeless):
        reply = asyncio.run(transport.send(twin, "start", None, timeout=0.5))
    assert reply.status == 502
    assert reply.error == "the machine's reply was unusable: status: required"


def test_late_replies_are_ignored(twin: str, transport: MqttCommandTransport) -> None:
    def slow(received: Received) -> list[tuple[bytes, bytes | None]]:
        time.sleep(0.4)
        return echo(received)

    with Machine(twin, slow):
        reply = asyncio.run(transport.send(twin, "start", None, timeout=0.2))
        deadline = time.monotonic() + 5
        while not transport.ignored and time.monotonic() < deadline:
            time.sleep(0.01)
    assert reply.status == 504
    assert transport.ignored == {"unknownCorrelation": 1}


class Forger(Machine):
    """A machine that first answers on another twin's reply topic, as a device that
    does not own the twin would, then on the right one."""

    def __init__(self, twin: str, other_twin: str, protocol: int) -> None:
        super().__init__(twin, echo_in_payload, protocol)
        self.other_twin = other_twin

    def on_command(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        server_id = payload["responseTopic"].rsplit("/", 1)[1]
        forged = {"status": 500, "error": "forged", "correlationId": payload["correlationId"]}
        wrong = reply_topic(self.other_twin, server_id)
        client.publish(wrong, json.dumps(forged), qos=1)  # one client: it arrives first
        super().on_command(client, message)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_a_reply_on_another_twins_topic_is_ignored(twin: str, protocol: int) -> None:
    with (
        MqttCommandTransport(ENDPOINT, protocol=protocol) as transport,
        Forger(twin, f"{twin}-other", protocol),
    ):
        reply = asyncio.run(transport.send(twin, "setSpeed", 3, timeout=5))
    assert reply == CommandReply(200, {"echo": 3})
    assert transport.ignored == {"wrongTwin": 1}


def test_ignored_replies_are_audited(twin: str, tmp_path: Path) -> None:
    with AuditTrail(tmp_path / "audit.sqlite3") as trail:
        audited = audit_ignored_replies(trail)
        with (
            MqttCommandTransport(ENDPOINT, on_ignored=audited) as transport,
            Forger(twin, f"{twin}-other", mqtt.MQTTv5),
        ):
            reply = asyncio.run(transport.send(twin, "setSpeed", 3, timeout=5))
        assert reply.status == 200
        (record,) = [r for r in trail.records() if r.action == "command.reply_dropped"]
        assert record.outcome == "wrongTwin"
        assert record.target == f"twin:{twin}-other"
        assert trail.verify()[1] is None


@pytest.mark.parametrize(
    ("twin_id", "command", "request_value", "message"),
    [
        ("a/b", "start", None, "twin_id: '/' cannot appear"),
        ("twins/#", "start", None, "twin_id: '/', '#' cannot appear"),
        ("+", "start", None, "twin_id: '\\+' cannot appear"),
        ("a\x00", "start", None, "twin_id: '\\\\x00' cannot appear"),
        ("\ud800", "start", None, "twin_id: not valid UTF-8"),
        ("", "start", None, "twin_id: must be a non-empty string"),
        ("x" * 2000, "start", None, "twin_id: longer than"),
        ("cnc-1", "start/#", None, "command: '/', '#' cannot appear"),
        ("cnc-1", "setSpeed", float("nan"), "request: not a JSON value"),
        ("cnc-1", "setSpeed", object(), "request: not a JSON value"),
    ],
)
def test_what_a_topic_or_payload_cannot_carry_is_refused(
    transport: MqttCommandTransport, twin_id: str, command: str, request_value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        asyncio.run(transport.send(twin_id, command, request_value, timeout=1))


def test_bad_timeouts_and_settings_are_refused(transport: MqttCommandTransport) -> None:
    for timeout in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="timeout: must be"):
            asyncio.run(transport.send("cnc-1", "start", None, timeout=timeout))
    with pytest.raises(ValueError, match="client_id: '#' cannot appear"):
        MqttCommandTransport(ENDPOINT, client_id="a#")
    with pytest.raises(ValueError, match="protocol: must be paho"):
        MqttCommandTransport(ENDPOINT, protocol=mqtt.MQTTv31)


def test_unconnected_transport_answers_unavailable() -> None:
    idle = MqttCommandTransport(ENDPOINT)
    reply = asyncio.run(idle.send("cnc-1", "start", None, timeout=1))
    assert reply.status == 503
    assert reply.error == "not connected to the MQTT broker mqtt://127.0.0.1:1883"
    with pytest.raises(ConnectionError, match="not reachable"):
        MqttCommandTransport(MqttEndpoint("127.0.0.1", 1)).start(timeout=0.5)
