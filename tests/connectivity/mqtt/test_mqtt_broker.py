"""The embedded MQTT broker as a real child process, driven by real paho-mqtt clients
logged in with credentials of its data dir (its security: test_broker_security.py)."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from twinforge.auth.devices import DeviceStore, server_credential
from twinforge.config import Settings
from twinforge.connectivity.mqtt.broker import EmbeddedBroker, mqtt_endpoint
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint, parse_mqtt_url


def client(username: str, password: str, suffix: str) -> mqtt.Client:
    made = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"{username}-{suffix}"
    )
    made.username_pw_set(username, password)
    return made


def port_is_listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_qos1_message_passes_from_publisher_to_subscriber(tmp_path: Path) -> None:
    endpoint, broker = mqtt_endpoint(Settings(mqtt_url=None, data_dir=tmp_path))
    assert broker is not None
    # The server logs in with its own generated credential.
    username, password = server_credential(tmp_path)
    assert endpoint == MqttEndpoint("127.0.0.1", broker.port, username=username, password=password)
    host, port = endpoint.host, endpoint.port
    assert broker.url == f"mqtt://127.0.0.1:{port}" and port > 0
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    with DeviceStore.in_data_dir(tmp_path) as store:
        pump = store.create("pump-1", ["pump-1"])
    subscriber = client(*server_credential(tmp_path), "sub")
    publisher = client(pump.credential.id, pump.password, "pub")
    subscriber.on_subscribe = lambda *_args: subscribed.set()
    subscriber.on_message = lambda _c, _u, message: received.put(message)
    try:
        subscriber.connect(host, port)
        subscriber.loop_start()
        subscriber.subscribe("twins/+/telemetry", qos=1)
        assert subscribed.wait(5)
        publisher.connect(host, port)
        publisher.loop_start()
        payload = b'{"bearingTemp": 71.5}\x00\xff'
        info = publisher.publish("twins/pump-1/telemetry", payload, qos=1)
        info.wait_for_publish(5)  # PUBACK from the broker
        assert info.is_published()
        message = received.get(timeout=5)
        assert (message.topic, message.payload, message.qos) == (
            "twins/pump-1/telemetry",
            payload,
            1,
        )
    finally:
        for c in (publisher, subscriber):
            c.disconnect()
            c.loop_stop()
        broker.stop()
    assert (tmp_path / "embedded_broker.log").exists()


def test_stop_frees_the_port_and_restart_keeps_it(tmp_path: Path) -> None:
    broker = EmbeddedBroker(data_dir=tmp_path).start()
    port, first_pid = broker.port, broker.pid
    with pytest.raises(RuntimeError, match="already started"):
        broker.start()
    broker.stop()
    broker.stop()  # idempotent
    assert broker.pid is None and not port_is_listening(port)
    with socket.socket() as server:  # what any server would do with the freed port
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
    with broker:
        assert broker.port == port and broker.pid not in (None, first_pid)
        assert port_is_listening(port)
    assert not port_is_listening(port)


def test_a_taken_port_fails_with_the_childs_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(taken.getsockname()[1], data_dir=tmp_path)
        with pytest.raises(
            RuntimeError, match=r"failed to start on .*: cannot listen on .*address already in use"
        ):
            broker.start()
    assert broker.pid is None


def test_the_broker_exits_when_its_parent_dies(tmp_path: Path) -> None:
    # A parent that starts a broker and dies without stopping it, as a crash would.
    script = textwrap.dedent(
        """
        import os, sys
        from twinforge.connectivity.mqtt.broker import EmbeddedBroker
        broker = EmbeddedBroker(data_dir=sys.argv[1]).start()
        print(broker.pid, broker.port, flush=True)
        os._exit(0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, port = (int(word) for word in out.stdout.split())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid) and not port_is_listening(port)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent is gone, so init reaps it soon.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.plant.local", MqttEndpoint("broker.plant.local", 1883)),
        ("mqtt://10.0.0.5:8883", MqttEndpoint("10.0.0.5", 8883)),
        ("mqtt://[::1]:1884/", MqttEndpoint("::1", 1884)),
        ("mqtts://broker.plant.local", MqttEndpoint("broker.plant.local", 8883, tls=True)),
        ("mqtts://10.0.0.5:9883", MqttEndpoint("10.0.0.5", 9883, tls=True)),
    ],
)
def test_mqtt_url_is_parsed(url: str, expected: MqttEndpoint) -> None:
    assert parse_mqtt_url(url) == expected
    assert mqtt_endpoint(Settings(mqtt_url=url)) == (expected, None)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("", "is empty; unset it to use the embedded broker"),
        ("localhost:1883", "must use the mqtt:// or mqtts:// scheme"),
        ("http://broker:1883", "must use the mqtt:// or mqtts:// scheme"),
        ("mqtt://:1883", "must name a host"),
        ("mqtt://broker:99999", "port from 1 to 65535"),
        ("mqtt://broker:abc", "port from 1 to 65535"),
        ("mqtt://broker:0", "port must be from 1 to 65535"),
        ("mqtt://user:secret@broker", "must not carry credentials"),
        ("mqtts://user:secret@broker:8883", "set TWINFORGE_MQTT_USERNAME"),
        ("mqtt://broker/plant?x=1", "must have no path, query or fragment"),
    ],
)
def test_bad_mqtt_url_names_the_setting_and_the_rule(url: str, rule: str) -> None:
    with pytest.raises(ValueError, match="TWINFORGE_MQTT_URL") as error:
        mqtt_endpoint(Settings(mqtt_url=url))
    assert rule in str(error.value)
    assert "secret" not in str(error.value)


def test_bad_port_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        EmbeddedBroker(-1, data_dir=tmp_path)


def test_tls_settings_come_in_pairs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mqtt_tls_cert_file=tmp_path / "cert.pem")
    with pytest.raises(ValueError, match="TWINFORGE_MQTT_TLS_CERT_FILE and TWINFORGE_MQTT_TLS_KEY"):
        EmbeddedBroker.from_settings(settings)
