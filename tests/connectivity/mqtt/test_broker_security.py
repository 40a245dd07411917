"""The embedded broker as an attacker on this machine meets it: its real child process
(guard, ACL plugin, device store in the data dir) against raw paho MQTT 3.1.1 clients."""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from argon2 import PasswordHasher
from support.certificates import make_certificates

from twinforge.auth.devices import DeviceStore, IssuedCredential, server_credential
from twinforge.connectivity.mqtt.broker import EmbeddedBroker, TlsListener
from twinforge.connectivity.mqtt.broker_guard import Limits
from twinforge.connectivity.mqtt.topics import command_topic, reply_topic, telemetry_topic

HOST = "127.0.0.1"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
RATE = 50.0
MAX_PACKET = 64 * 1024
#: How long a message that will be delivered takes at most, on a loaded 2-core machine.
DELIVERY_S = 5.0
#: How long to wait for a message that must not come, once a later one has come.
QUIET_S = 0.3


class Peer:
    """One raw paho 3.1.1 client: what it connected with, what it got, whether it was cut."""

    def __init__(self, client_id: str, username: str | None = None, password: str | None = None):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[mqtt.ReasonCode] = queue.Queue()
        self.suback: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
        self.dropped = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, reasons, _p: self.suback.put(reasons)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_disconnect = lambda *_args: self.dropped.set()

    def connect(self, port: int) -> mqtt.ReasonCode:
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        return self.connack.get(timeout=DELIVERY_S)

    def subscribe(self, topic: str) -> list[mqtt.ReasonCode]:
        self.client.subscribe(topic, qos=1)
        return self.suback.get(timeout=DELIVERY_S)

    def topics(self, until: str) -> list[str]:
        """Topics received up to and including ``until`` (AssertionError if it never comes)."""
        seen: list[str] = []
        deadline = time.monotonic() + DELIVERY_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic = self.messages.get(timeout=left).topic
            except queue.Empty:
                break
            seen.append(topic)
            if topic == until:
                return seen
        raise AssertionError(f"{until!r} never arrived; got {seen}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("broker-security"))


@pytest.fixture(scope="module")
def broker(data_dir: Path) -> Iterator[EmbeddedBroker]:
    limits = Limits(
        max_packet_bytes=MAX_PACKET, publish_rate=RATE, publish_burst=RATE, recheck_s=0.5
    )
    with EmbeddedBroker(data_dir=data_dir, limits=limits, log_file=data_dir / "b.log") as b:
        yield b


@pytest.fixture(scope="module")
def store(data_dir: Path, broker: EmbeddedBroker) -> Iterator[DeviceStore]:
    with DeviceStore.in_data_dir(data_dir, hasher=CHEAP) as devices:
        yield devices


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.close()


_made = iter(range(1_000_000))


def device(store: DeviceStore, *twins: str) -> IssuedCredential:
    return store.create(f"device-{next(_made)}", twins)


def connected(peers: list[Peer], port: int, issued: IssuedCredential, suffix: str = "") -> Peer:
    user = issued.credential.id
    peer = Peer(user + suffix, user, issued.password)
    peers.append(peer)
    assert not peer.connect(port).is_failure
    return peer


@pytest.fixture
def server(broker: EmbeddedBroker, data_dir: Path, peers: list[Peer]) -> Peer:
    """The server's own client, subscribed as twinforge's ingest and command clients are."""
    username, password = server_credential(data_dir)
    peer = Peer(f"{username}-commands", username, password)
    peers.append(peer)
    assert not peer.connect(broker.port).is_failure
    for topic in (
        "twins/+/telemetry",
        "twins/+/properties",
        f"twins/+/replies/{username}-commands",
    ):
        assert not peer.subscribe(topic)[0].is_failure
    return peer


def test_anonymous_and_wrong_passwords_are_refused(
    broker: EmbeddedBroker, store: DeviceStore, peers: list[Peer]
) -> None:
    issued = device(store, "press-1")
    attempts = [
        Peer("anyone"),
        Peer(issued.credential.id, issued.credential.id, "not-the-password"),
        Peer(issued.credential.id, issued.credential.id, None),
        Peer("device-0123456789abcdef", "device-0123456789abcdef", issued.password),
    ]
    peers.extend(attempts)
    for peer in attempts:
        reason = peer.connect(broker.port)
        assert reason.is_failure and str(reason) == "Bad user name or password"
    # A good password with a client id not bound to the credential: not authorized.
    stranger = Peer("press-1", issued.credential.id, issued.password)
    peers.append(stranger)
    assert str(stranger.connect(broker.port)) == "Not authorized"
    connected(peers, broker.port, issued, "-sensor")


def test_nobody_subscribes_to_everything(
    broker: EmbeddedBroker, store: DeviceStore, server: Peer, peers: list[Peer]
) -> None:
    press = connected(peers, broker.port, device(store, "press-2"))
    for peer in (server, press):
        for topic in ("#", "twins/#", "$SYS/#", "twins/+/+/+"):
            assert peer.subscribe(topic)[0].is_failure, topic
    # Devices read command topics only; the server does not read commands.
    assert press.subscribe("twins/+/telemetry")[0].is_failure
    assert server.subscribe("twins/+/commands/+")[0].is_failure
    press.client.publish(telemetry_topic("press-2"), b"{}", qos=1)
    assert server.topics(until=telemetry_topic("press-2")) == [telemetry_topic("press-2")]
    assert press.messages.empty()


def test_only_the_server_publishes_commands_and_a_device_hears_only_its_own(
    broker: EmbeddedBroker, store: DeviceStore, server: Peer, peers: list[Peer]
) -> None:
    target = connected(peers, broker.port, device(store, "mill-1"))
    other = connected(peers, broker.port, device(store, "mill-2"))
    attacker = connected(peers, broker.port, device(store, "mill-3"))
    assert not target.subscribe("twins/mill-1/commands/+")[0].is_failure
    # A wildcard twin level is granted, but only the device's own twins' commands arrive.
    assert not other.subscribe("twins/+/commands/+")[0].is_failure
    attacker.client.publish(command_topic("mill-1", "setSpeed"), b'{"request": 9999}', qos=1)
    server.client.publish(command_topic("mill-1", "stop"), b'{"request": null}', qos=1)
    assert target.topics(until=command_topic("mill-1", "stop")) == [command_topic("mill-1", "stop")]
    server.client.publish(command_topic("mill-2", "stop"), b"{}", qos=1)
    assert other.topics(until=command_topic("mill-2", "stop")) == [command_topic("mill-2", "stop")]
    time.sleep(QUIET_S)
    assert target.messages.empty() and other.messages.empty()


def test_a_device_reports_and_replies_only_for_its_own_twins(
    broker: EmbeddedBroker, store: DeviceStore, data_dir: Path, server: Peer, peers: list[Peer]
) -> None:
    server_client_id = f"{server_credential(data_dir)[0]}-commands"
    attacker = connected(peers, broker.port, device(store, "oven-1"))
    forged = [
        telemetry_topic("oven-2"),
        telemetry_topic("oven-2", "heater"),
        "twins/oven-2/properties",
        reply_topic("oven-2", server_client_id),
    ]
    for topic in forged:
        attacker.client.publish(topic, b'{"status": 500, "correlationId": "00"}', qos=1)
    own = [telemetry_topic("oven-1"), reply_topic("oven-1", server_client_id)]
    for topic in own:
        attacker.client.publish(topic, b'{"status": 200, "correlationId": "00"}', qos=1)
    # Publications of one connection arrive in order: the forged ones would have come first.
    assert server.topics(until=own[-1]) == own


def test_a_will_may_go_only_where_the_device_may_publish(
    broker: EmbeddedBroker, store: DeviceStore, peers: list[Peer]
) -> None:
    # amqtt publishes a will without asking the ACL, so the guard checks it at CONNECT.
    issued = device(store, "robot-1")
    user = issued.credential.id
    for topic in (command_topic("robot-2", "stop"), telemetry_topic("robot-2"), "twins/+/x"):
        sneaky = Peer(user, user, issued.password)
        sneaky.client.will_set(topic, b"{}", qos=1)
        peers.append(sneaky)
        assert str(sneaky.connect(broker.port)) == "Not authorized", topic
    honest = Peer(user, user, issued.password)
    honest.client.will_set(telemetry_topic("robot-1"), b'{"online": false}', qos=1)
    peers.append(honest)
    assert not honest.connect(broker.port).is_failure


def test_a_refused_client_with_the_servers_client_id_leaves_its_session_alone(
    broker: EmbeddedBroker, store: DeviceStore, data_dir: Path, server: Peer, peers: list[Peer]
) -> None:
    username, _ = server_credential(data_dir)
    press = device(store, "press-9")
    intruders = [
        Peer(f"{username}-commands"),  # anonymous
        Peer(f"{username}-commands", username, "guessed"),
        Peer(f"{username}-commands", press.credential.id, press.password),  # a real device
    ]
    peers.extend(intruders)
    for intruder in intruders:
        assert intruder.connect(broker.port).is_failure
    sender = connected(peers, broker.port, press)
    sender.client.publish(telemetry_topic("press-9"), b"{}", qos=1)
    assert server.topics(until=telemetry_topic("press-9"))[-1] == telemetry_topic("press-9")
    assert not server.dropped.is_set()


def test_a_revoked_device_is_cut_off_and_cannot_come_back(
    broker: EmbeddedBroker, store: DeviceStore, peers: list[Peer]
) -> None:
    issued = device(store, "lathe-1")
    peer = connected(peers, broker.port, issued)
    assert store.revoke(issued.credential.id)
    revoked_at = time.monotonic()
    assert peer.dropped.wait(DELIVERY_S)
    assert time.monotonic() - revoked_at < 3.0
    peer.client.loop_stop()
    again = Peer(issued.credential.id, issued.credential.id, issued.password)
    peers.append(again)
    assert str(again.connect(broker.port)) == "Bad user name or password"


def test_an_oversize_packet_closes_only_its_own_connection(
    broker: EmbeddedBroker, store: DeviceStore, server: Peer, peers: list[Peer]
) -> None:
    big = connected(peers, broker.port, device(store, "pump-1"))
    small = connected(peers, broker.port, device(store, "pump-2"))
    big.client.publish(telemetry_topic("pump-1"), b"x" * (MAX_PACKET + 1), qos=1)
    assert big.dropped.wait(DELIVERY_S)
    small.client.publish(telemetry_topic("pump-2"), b"x" * (MAX_PACKET // 2), qos=1)
    assert server.topics(until=telemetry_topic("pump-2")) == [telemetry_topic("pump-2")]
    assert not small.dropped.is_set() and not server.dropped.is_set()


def test_a_flooding_client_is_slowed_while_others_flow(
    broker: EmbeddedBroker, store: DeviceStore, server: Peer, peers: list[Peer]
) -> None:
    flooder = connected(peers, broker.port, device(store, "fan-1"))
    calm = connected(peers, broker.port, device(store, "fan-2"))
    started = time.monotonic()
    for _ in range(2000):
        flooder.client.publish(telemetry_topic("fan-1"), b"{}", qos=0)
    time.sleep(0.5)
    calm.client.publish(telemetry_topic("fan-2"), b"{}", qos=1)
    seen = server.topics(until=telemetry_topic("fan-2"))
    calm_after = time.monotonic() - started
    time.sleep(1.0)
    while not server.messages.empty():
        seen.append(server.messages.get().topic)
    elapsed = time.monotonic() - started
    flood = seen.count(telemetry_topic("fan-1"))
    # The bucket: a burst of RATE, then RATE a second; nothing is dropped, only delayed.
    assert 0 < flood <= RATE + RATE * elapsed + 10, (flood, elapsed)
    assert calm_after < 0.5 + DELIVERY_S / 2
    assert not flooder.dropped.is_set()


def test_a_tls_listener_serves_credentialed_clients(tmp_path: Path, peers: list[Peer]) -> None:
    tls_files = make_certificates(tmp_path)
    cert_file, key_file, ca_file = tls_files.server.cert, tls_files.server.key, tls_files.ca
    tls = TlsListener(cert_file, key_file, port=0, host=HOST)
    with EmbeddedBroker(data_dir=tmp_path, tls=tls) as broker:
        assert broker.tls_port not in (None, broker.port)
        username, password = server_credential(tmp_path)
        secure = Peer(f"{username}-tls", username, password)
        secure.client.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        anonymous = Peer("anyone")
        anonymous.client.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        peers.extend([secure, anonymous])
        assert broker.tls_port is not None
        assert not secure.connect(broker.tls_port).is_failure
        assert str(anonymous.connect(broker.tls_port)) == "Bad user name or password"
