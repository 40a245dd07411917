"""MQTT's part of a running server: the broker (embedded unless ``TWINFORGE_MQTT_URL``
names one), telemetry and property ingest, and the command transport."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twinforge.audit.chain import LocalActor
from twinforge.audit.log import AuditTrail
from twinforge.config import Settings
from twinforge.connectivity.mqtt.broker import EmbeddedBroker, mqtt_endpoint
from twinforge.connectivity.mqtt.commands import MqttCommandTransport
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.telemetry import MqttIngest, load_topic_mappings
from twinforge.connectivity.mqtt.topics import MQTT_3_1_1, MQTT_5
from twinforge.ingest.messages import Intake
from twinforge.lifecycle import stop_each

__all__ = ["MqttPart", "audit_ignored_replies", "start_mqtt"]


@dataclass
class MqttPart:
    #: The broker and how the server logs in there.
    endpoint: MqttEndpoint
    #: The paho protocol version spoken to this broker.
    protocol: int
    broker: EmbeddedBroker | None
    ingest: MqttIngest
    commands: MqttCommandTransport

    @property
    def endpoints(self) -> dict[str, str]:
        return {"MQTT broker": self.endpoint.url}

    def stop(self) -> None:
        stop_each((self.ingest.stop, self.commands.stop, self.broker and self.broker.stop))


def start_mqtt(settings: Settings, intake: Intake, trail: AuditTrail | None = None) -> MqttPart:
    """Connect ingest (into ``intake``) and the command transport to the broker; command
    replies the transport ignores are recorded in ``trail``."""
    mappings = (
        load_topic_mappings(Path(settings.mqtt_mappings).read_text(encoding="utf-8"))
        if settings.mqtt_mappings
        else []
    )
    endpoint, broker = mqtt_endpoint(settings)
    # The embedded broker (amqtt) speaks MQTT 3.1.1 only; real brokers get MQTT 5.
    protocol = MQTT_3_1_1 if broker is not None else MQTT_5
    # The ingest client id is fixed, so a restarted server resumes its persistent session
    # and receives what the broker kept while it was down; the embedded broker binds
    # client ids to the credential (`{username}-...`), so there it follows the username.
    prefix = "twinforge" if broker is None else endpoint.username
    ingest = None
    try:
        ingest = MqttIngest(
            intake, endpoint, client_id=f"{prefix}-ingest", mappings=mappings, protocol=protocol
        ).start()
        commands = MqttCommandTransport(
            endpoint,
            client_id=f"{prefix}-commands-{secrets.token_hex(6)}",
            protocol=protocol,
            on_ignored=None if trail is None else audit_ignored_replies(trail),
        ).start()
    except BaseException:
        stop_each((ingest and ingest.stop, broker and broker.stop))
        raise
    return MqttPart(endpoint, protocol, broker, ingest, commands)


def audit_ignored_replies(trail: AuditTrail) -> Callable[[str, str], None]:
    """A transport's ``on_ignored`` that records each ignored reply in ``trail``. MQTT
    does not say who published: the topic (its twin, where the ACL holds) does."""

    def record(reason: str, topic: str) -> None:
        levels = topic.split("/")
        twin = levels[1] if len(levels) > 1 and levels[0] == "twins" else ""
        trail.record(
            LocalActor(f"mqtt:{topic}"),
            "command.reply_dropped",
            f"twin:{twin}",
            reason,
            {"topic": topic},
        )

    return record
