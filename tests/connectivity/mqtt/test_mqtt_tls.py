"""twinforge's MQTT clients against a real Mosquitto that wants TLS and a login: the
test's own broker with a password file, an ACL file and certificates made here (a CA,
server and client certificates, and the bad ones: expired, another host's, an unknown
CA's). Failures show at start-up with their cause; a restart of the broker loses nothing
acknowledged; the password shows nowhere."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from support.certificates import TlsFiles, make_certificates
from support.ingest_parts import CNC, PUMP, LocalHosts, example_models, wait_for
from support.mosquitto import Mosquitto, TlsListener

from twinforge.config import Settings
from twinforge.connectivity.command_reply import CommandReply
from twinforge.connectivity.mqtt.commands import MqttCommandTransport
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.endpoint_settings import endpoint_from_settings
from twinforge.connectivity.mqtt.part import start_mqtt
from twinforge.connectivity.mqtt.telemetry import MqttIngest
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.sim.layout import sample_plant
from twinforge.sim.simulator import PlantSimulator

HOST = "127.0.0.1"
SERVER_USER, SERVER_PASSWORD = "twinforge", "s3rver-" + uuid.uuid4().hex
PLANT_USER, PLANT_PASSWORD = "plant", "pl4nt-" + uuid.uuid4().hex
PUMP_1, CNC_1 = "pump-1", "cnc-1"
CLIENT_CN = "plant-client"  # the client certificate's identity, a twin it may write
TWINS = {PUMP_1: PUMP, CNC_1: CNC, CLIENT_CN: PUMP}
# Only the server reads telemetry and publishes commands; a device writes its own twin's
# telemetry and replies and reads its own command topics (the user name is the twin id).
ACL = f"""user {SERVER_USER}
topic read twins/+/telemetry
topic read twins/+/properties
topic write twins/+/commands/+
topic read twins/+/replies/#

user {PLANT_USER}
topic read twins/+/commands/+
topic write twins/+/telemetry
topic write twins/+/replies/#

pattern write twins/%u/telemetry
pattern write twins/%u/properties
pattern read twins/%u/commands/+
pattern write twins/%u/replies/#
"""


@dataclass
class Broker:
    mosquitto: Mosquitto
    certs: TlsFiles

    def port(self, listener: str) -> int:
        return self.mosquitto.tls_ports[LISTENERS.index(listener)]

    def endpoint(self, listener: str = "good", **login: object) -> MqttEndpoint:
        return MqttEndpoint(HOST, self.port(listener), tls=True, ca_file=self.certs.ca, **login)  # type: ignore[arg-type]

    def server(self, listener: str = "good") -> MqttEndpoint:
        return self.endpoint(listener, username=SERVER_USER, password=SERVER_PASSWORD)


LISTENERS = ["good", "expired", "wrong_host", "unknown", "client_cert"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    workdir = Path(tmp_path_factory.mktemp("mosquitto-tls"))
    certs = make_certificates(workdir / "certs", CLIENT_CN)
    listeners = [
        TlsListener(certs.server, certs.ca),
        TlsListener(certs.expired, certs.ca),
        TlsListener(certs.wrong_host, certs.ca),
        TlsListener(certs.unknown, certs.ca),
        TlsListener(certs.server, certs.ca, require_certificate=True),
    ]
    mosquitto = Mosquitto(
        workdir,
        passwords={SERVER_USER: SERVER_PASSWORD, PLANT_USER: PLANT_PASSWORD, PUMP_1: "pump-pw"},
        acl=ACL,
        tls=listeners,
    )
    mosquitto.start()
    yield Broker(mosquitto, certs)
    mosquitto.stop()


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[IngestPipeline, LocalHosts]]:
    hosts = LocalHosts(tmp_path, TWINS)
    validator = TelemetryValidator(TWINS.get, example_models().interface)
    with DeadLetterStore(tmp_path / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(validator, hosts, letters)
        yield pipeline, hosts
        pipeline.close()
    hosts.close()


def device(endpoint: MqttEndpoint) -> mqtt.Client:
    """A connected MQTT v5 client of a device at ``endpoint``."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"device-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    endpoint.apply(client)
    connected = []
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.append(reason)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    wait_for(lambda: connected, timeout=10)
    assert not connected[0].is_failure, connected[0]
    return client


def publish_readings(client: mqtt.Client, twin: str, first: int, count: int) -> None:
    for i in range(first, first + count):
        payload = f'{{"$ts": {time.time()}, "flowRate": {float(i)}}}'
        info = client.publish(f"twins/{twin}/telemetry", payload, qos=1)
        info.wait_for_publish(10)


def stop(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def test_ingest_over_mqtts_with_a_password_reaches_the_asset(broker: Broker, parts) -> None:
    pipeline, hosts = parts
    pump = device(broker.endpoint(username=PUMP_1, password="pump-pw"))
    try:
        with MqttIngest(pipeline, broker.server(), session_expiry_s=30) as ingest:
            publish_readings(pump, PUMP_1, 0, 20)
            wait_for(lambda: ingest.acknowledged == 20)
            assert ingest.endpoint.url == f"mqtts://127.0.0.1:{broker.port('good')}"
    finally:
        stop(pump)
    snapshot = hosts.snapshot(PUMP_1)
    assert snapshot is not None and snapshot["messages"] == 20
    assert snapshot["last"]["flowRate"]["value"] == 19.0
    assert pipeline.accepted == 20 and pipeline.rejected == 0


def test_commands_over_tls_reach_the_simulated_plant_and_come_back(broker: Broker) -> None:
    layout = sample_plant(4)
    plant = broker.endpoint(username=PLANT_USER, password=PLANT_PASSWORD)
    with (
        PlantSimulator(layout, mqtt_endpoint=plant, opcua_port=None, rate_hz=0) as sim,
        MqttCommandTransport(broker.server(), client_id=f"{SERVER_USER}-commands") as transport,
    ):
        reply = asyncio.run(transport.send("cnc-01", "setSpindleSpeed", 6000, timeout=10))
        assert reply == CommandReply(200)
        assert sim.physics.state("cnc-01")["spindleSetpoint"] == 6000


def test_the_server_part_connects_with_the_settings_and_shows_mqtts(
    broker: Broker, parts, tmp_path: Path
) -> None:
    pipeline, _hosts = parts
    password_file = _write(tmp_path / "password", SERVER_PASSWORD + "\n")
    url = f"mqtts://127.0.0.1:{broker.port('good')}"
    settings = Settings(
        mqtt_url=url,
        mqtt_username=SERVER_USER,
        mqtt_password_file=password_file,
        mqtt_ca_file=broker.certs.ca,
        data_dir=tmp_path,
    )
    part = start_mqtt(settings, pipeline)
    try:
        assert part.endpoints == {"MQTT broker": url} and part.broker is None
        assert part.ingest.connected.is_set() and part.commands.connected
    finally:
        part.stop()


def test_a_client_certificate_is_the_identity(broker: Broker, parts) -> None:
    pipeline, hosts = parts
    certificate = broker.endpoint(
        "client_cert", cert_file=broker.certs.client.cert, key_file=broker.certs.client.key
    )
    identified = device(certificate)
    try:
        with MqttIngest(pipeline, broker.server(), session_expiry_s=30) as ingest:
            publish_readings(identified, CLIENT_CN, 0, 3)
            # The ACL's pattern for user "plant-client" does not cover another twin:
            # Mosquitto answers "not authorized" (and may drop the connection).
            identified.publish(f"twins/{PUMP_1}/telemetry", '{"flowRate": 100.0}', qos=1)
            wait_for(lambda: ingest.acknowledged >= 3)
            time.sleep(0.5)  # let a wrongly allowed message arrive too
            assert ingest.received == 3
    finally:
        stop(identified)
    assert hosts.snapshot(PUMP_1)["messages"] == 0
    snapshot = hosts.snapshot(CLIENT_CN)
    assert snapshot is not None and snapshot["messages"] == 3
    with pytest.raises(
        ConnectionError, match=r"closed the connection before answering .*want a client certificate"
    ):
        # Without a certificate this listener lets nobody in, password or not.
        MqttIngest(pipeline, broker.server("client_cert")).start(timeout=10)


@pytest.mark.parametrize(
    ("listener", "login", "cause"),
    [
        ("good", {"password": "wrong"}, "Not authorized|Bad user name or password"),
        ("good", {"username": "nobody", "password": "x"}, "Not authorized|Bad user name"),
        ("unknown", {}, "TLS certificate not accepted: unable to get local issuer certificate"),
        ("expired", {}, "TLS certificate not accepted: certificate has expired"),
        ("wrong_host", {}, "TLS certificate not accepted: IP address mismatch"),
    ],
)
def test_a_refused_connection_fails_start_up_with_its_cause(
    broker: Broker, parts, caplog: pytest.LogCaptureFixture, listener: str, login, cause: str
) -> None:
    pipeline, _hosts = parts
    endpoint = broker.endpoint(
        listener, **{"username": SERVER_USER, "password": SERVER_PASSWORD, **login}
    )
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    for client in (
        MqttIngest(pipeline, endpoint),
        MqttCommandTransport(endpoint),
    ):
        with pytest.raises(ConnectionError, match=cause) as error:
            client.start(timeout=30)
        assert endpoint.url in str(error.value)
        assert endpoint.password not in str(error.value)
    assert time.monotonic() - started < 5, "a refusal must not wait for the timeout"
    assert endpoint.password not in caplog.text


def test_the_simulator_reports_a_bad_certificate(broker: Broker) -> None:
    sim = PlantSimulator(
        sample_plant(2), mqtt_endpoint=broker.endpoint("expired"), opcua_port=None, rate_hz=0
    )
    with pytest.raises(ConnectionError, match="certificate has expired"):
        sim.start_background(timeout=20)


def test_a_broker_restart_keeps_the_session_and_loses_nothing(broker: Broker, parts) -> None:
    pipeline, hosts = parts
    pump = broker.endpoint(username=PUMP_1, password="pump-pw")
    client_id = f"{SERVER_USER}-ingest-{uuid.uuid4().hex[:6]}"
    ingest = MqttIngest(pipeline, broker.server(), client_id=client_id, session_expiry_s=300)
    with ingest:
        before = device(pump)
        publish_readings(before, PUMP_1, 0, 10)
        stop(before)
        wait_for(lambda: ingest.acknowledged == 10)
        broker.mosquitto.stop()
        wait_for(lambda: not ingest.connected.is_set(), timeout=10)
        time.sleep(2)  # paho's reconnect delay grows past a second meanwhile
        broker.mosquitto.start()
        after = device(pump)
        publish_readings(after, PUMP_1, 10, 20)  # acknowledged by the broker...
        stop(after)
        away = not ingest.connected.is_set()
        # ...while the server's client was away; it comes back to its session.
        wait_for(lambda: ingest.connected.is_set(), timeout=20)
        wait_for(lambda: ingest.acknowledged >= 30, timeout=20)
    assert away, "the ingest had reconnected before the messages were published"
    snapshot = hosts.snapshot(PUMP_1)
    assert snapshot is not None and snapshot["messages"] == 30
    assert snapshot["last"]["flowRate"]["value"] == 29.0


def test_the_password_never_shows(tmp_path: Path, parts, caplog: pytest.LogCaptureFixture) -> None:
    pipeline, _hosts = parts
    secret = "hunter2-" + uuid.uuid4().hex
    password_file = _write(tmp_path / "mqtt-password", secret + "\n")
    settings = Settings(
        mqtt_url="mqtts://broker.plant.local",
        mqtt_username="twinforge",
        mqtt_password_file=password_file,
        mqtt_ca_file=_write(tmp_path / "ca.pem"),
    )
    endpoint = endpoint_from_settings(settings)
    assert endpoint.password == secret and endpoint.port == 8883 and endpoint.tls
    assert secret not in repr(endpoint) and "password=<set>" in repr(endpoint)
    assert secret not in repr(settings) and secret not in str(endpoint)
    caplog.set_level(logging.DEBUG)
    nowhere = MqttEndpoint(HOST, 1, username="twinforge", password=secret)
    with pytest.raises(ConnectionError, match="not reachable") as error:
        MqttIngest(pipeline, nowhere).start(timeout=5)
    assert secret not in str(error.value) and secret not in caplog.text


def _write(path: Path, text: str = "x") -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("settings", "rule"),
    [
        (
            {"mqtt_url": "mqtt://b", "mqtt_ca_file": "ca.pem"},
            "TWINFORGE_MQTT_CA_FILE: TLS files need an mqtts:// TWINFORGE_MQTT_URL",
        ),
        ({"mqtt_url": "mqtts://b", "mqtt_ca_file": "missing.pem"}, "TWINFORGE_MQTT_CA_FILE: "),
        (
            {"mqtt_url": "mqtts://b", "mqtt_cert_file": "ca.pem"},
            "TWINFORGE_MQTT_CERT_FILE and TWINFORGE_MQTT_KEY_FILE: a client certificate needs",
        ),
        (
            {"mqtt_url": "mqtt://b", "mqtt_password": "p", "mqtt_password_file": "pw"},
            "TWINFORGE_MQTT_PASSWORD and TWINFORGE_MQTT_PASSWORD_FILE: set one, not both",
        ),
        ({"mqtt_url": "mqtt://b", "mqtt_password": "p"}, "TWINFORGE_MQTT_USERNAME: must be set"),
        (
            {"mqtt_url": "mqtt://b", "mqtt_username": "u", "mqtt_password_file": "empty"},
            "TWINFORGE_MQTT_PASSWORD_FILE: .* is empty",
        ),
    ],
)
def test_bad_client_settings_name_the_variable(tmp_path: Path, settings, rule: str) -> None:
    _write(tmp_path / "ca.pem")
    _write(tmp_path / "pw", "p")
    _write(tmp_path / "empty", "\n")
    values = {
        key: (tmp_path / value if key.endswith("_file") else value)
        for key, value in settings.items()
    }
    with pytest.raises(ValueError, match=rule) as error:
        endpoint_from_settings(Settings(**values))
    assert "missing.pem" in str(error.value) or "missing" not in str(settings)
