"""MQTT's part of a running server: the broker (embedded unless ``TWINFORGE_MQTT_URL``
names one), telemetry and property ingest, and the command transport."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinforge.config import Settings
from twinforge.connectivity.mqtt.broker import EmbeddedBroker, mqtt_endpoint
from twinforge.connectivity.mqtt.commands import MqttCommandTransport
from twinforge.connectivity.mqtt.telemetry import MqttIngest, load_topic_mappings
from twinforge.connectivity.mqtt.topics import MQTT_3_1_1, MQTT_5
from twinforge.ingest.messages import Intake
from twinforge.lifecycle import stop_each

__all__ = ["MQTT_CLIENT_ID", "MqttPart", "start_mqtt"]

#: Client id of the server's MQTT session: fixed, so a restarted server resumes the
#: persistent session and receives what the broker kept while it was down.
MQTT_CLIENT_ID = "twinforge-ingest"


@dataclass
class MqttPart:
    host: str
    port: int
    #: The paho protocol version spoken to this broker.
    protocol: int
    broker: EmbeddedBroker | None
    ingest: MqttIngest
    commands: MqttCommandTransport

    @property
    def endpoints(self) -> dict[str, str]:
        return {"MQTT broker": f"mqtt://{self.host}:{self.port}"}

    def stop(self) -> None:
        stop_each((self.ingest.stop, self.commands.stop, self.broker and self.broker.stop))


def start_mqtt(settings: Settings, intake: Intake) -> MqttPart:
    """Connect ingest (into ``intake``) and the command transport to the broker."""
    mappings = (
        load_topic_mappings(Path(settings.mqtt_mappings).read_text(encoding="utf-8"))
        if settings.mqtt_mappings
        else []
    )
    host, port, broker = mqtt_endpoint(settings)
    # The embedded broker (amqtt) speaks MQTT 3.1.1 only; real brokers get MQTT 5.
    protocol = MQTT_3_1_1 if broker is not None else MQTT_5
    ingest = None
    try:
        ingest = MqttIngest(
            intake, host, port, client_id=MQTT_CLIENT_ID, mappings=mappings, protocol=protocol
        ).start()
        commands = MqttCommandTransport(host, port, protocol=protocol).start()
    except BaseException:
        stop_each((ingest and ingest.stop, broker and broker.stop))
        raise
    return MqttPart(host, port, protocol, broker, ingest, commands)
