"""A device on a real MQTT broker, answering the command topics of its twins: the base of
the tests' scripted machines."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt

from twinforge.connectivity.mqtt.topics import command_topic


class CommandDevice:
    """Subscribes to ``twins/{twin}/commands/+`` for each twin on entering; subclasses
    answer in :meth:`on_command`."""

    def __init__(
        self, broker: tuple[str, int], twins: Sequence[str], protocol: int = mqtt.MQTTv5
    ) -> None:
        self.broker = broker
        self.protocol = protocol
        self._ready = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-device-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        filters = [(command_topic(twin, "+"), 1) for twin in twins]
        self._client.on_connect = lambda c, *_: c.subscribe(filters)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = lambda c, _u, message: self.on_command(c, message)

    def on_command(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._client.connect(*self.broker)
        self._client.loop_start()
        assert self._ready.wait(10), "the device could not subscribe"
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()
