"""Starting a paho-mqtt client the way every twinforge MQTT client does."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt


def start_client(
    client: mqtt.Client,
    host: str,
    port: int,
    ready: threading.Event,
    timeout: float,
    **connect: Any,
) -> None:
    """Connect in the background (paho retries on its own) and wait for ``ready``, which
    the client's callbacks set once it can work (connected and subscribed).

    Raises ConnectionError, with the client stopped, when that takes over ``timeout`` s.
    """
    client.connect_async(host, port, **connect)
    client.loop_start()
    if not ready.wait(timeout):
        client.disconnect()
        client.loop_stop()
        raise ConnectionError(f"MQTT broker {host}:{port} not reachable in {timeout:g} s")
