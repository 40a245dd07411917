"""paho-mqtt clients the way twinforge runs them: started alike, holding their
subscriptions alike, and one for heavy intake.

paho reads a socket a few bytes at a time (a packet's first byte, each byte of its
length, then its body: three or four ``recv`` calls and one ``select`` per message) and
writes each acknowledgement as its own packet, woken through its socket pair. Every one of
those system calls lets go of the GIL, and a busy ingest process then makes paho's thread
wait to get it back, so a bare paho subscriber took 9,000 msgs/s at most here.
:class:`BufferedClient` reads what the socket has in one call and sends many
acknowledgements in one write; and it decodes a plain PUBLISH (QoS 0 or 1, no MQTT 5
properties) itself, where paho builds a properties object, copies the packet four times
and matches the topic against per-topic callbacks for every message.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read: a few hundred telemetry messages.
READ_SIZE = 1 << 18


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


class Subscriptions:
    """The connection callbacks of a client that must hold subscriptions: it subscribes
    to ``filters()`` on every (re)connect, sets :attr:`ready` once the broker has answered
    (also when it refused some filters, unless ``all_needed``) and clears it when the
    connection drops; paho reconnects by itself."""

    def __init__(
        self,
        client: mqtt.Client,
        host: str,
        port: int,
        filters: Callable[[], list[str]],
        *,
        all_needed: bool,
    ) -> None:
        self.ready = threading.Event()
        self._where = f"{host}:{port}"
        self._filters = filters
        self._all_needed = all_needed
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s refused: %s", self._where, reason)
            return
        client.subscribe([(topic, 1) for topic in dict.fromkeys(self._filters())])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            log.warning("MQTT broker %s refused subscriptions: %s", self._where, refused)
            if self._all_needed:
                return
        # Ready means subscribed: a message published after start() returns arrives.
        self.ready.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self.ready.clear()
        if reason.is_failure:
            log.warning("MQTT connection to %s lost (%s); reconnecting", self._where, reason)


class BufferedClient(mqtt.Client):
    """A paho client that reads its socket in large chunks, decodes plain PUBLISH
    packets in short and acknowledges QoS 1 messages in bulk (:meth:`ack_many`).

    It hooks paho's own socket read (``_sock_recv``, which paho's TLS and WebSocket
    paths also go through) and keeps reading while bytes are buffered, as paho's loop
    does for a TLS socket's pending bytes. PUBLISH packets with MQTT 5 properties, QoS 2,
    malformed ones, and every packet once a per-topic callback is added go through paho's
    own handling; the others reach ``on_message`` with ``properties`` None. Tested
    against paho 2.2 on a real broker.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_from: object = None  # the socket the buffer came from
        self._buffer = b""
        self._at = 0
        self._topic_callbacks = False

    def message_callback_add(self, sub: str, callback: Callable[..., None]) -> None:
        self._topic_callbacks = True  # paho matches topics for these: its own path
        super().message_callback_add(sub, callback)

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        on_message = self.on_message
        if qos > 1 or self._topic_callbacks or on_message is None:
            return super()._handle_publish()
        try:
            end = 2 + (packet[0] << 8 | packet[1])
            topic = bytes(packet[2:end])
            mid = 0
            if qos:
                mid = packet[end] << 8 | packet[end + 1]
                end += 2
            if self._protocol == mqtt.MQTTv5:
                if packet[end]:  # a properties length: paho reads them
                    return super()._handle_publish()
                end += 1
            elif end == 2 or end > len(packet):  # an empty topic (MQTT 3) or too short
                return super()._handle_publish()  # paho reports what is wrong
        except IndexError:
            return super()._handle_publish()
        message = mqtt.MQTTMessage(mid, topic)
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[end:])
        message.timestamp = time.monotonic()  # as paho does
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as error:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", error)
                if not self.suppress_exceptions:
                    raise
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return mqtt.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_from is not self._sock:  # reconnected: what was buffered is void
            self._read_from, self._buffer, self._at = self._sock, b"", 0
        if self._at >= len(self._buffer):
            data = super()._sock_recv(READ_SIZE)  # BlockingIOError when nothing is there
            if not data:
                return data  # the connection is closed
            self._buffer, self._at = data, 0
        start = self._at
        self._at = min(start + bufsize, len(self._buffer))
        return self._buffer[start : self._at]

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # paho reads one packet per select(); buffered packets would wait for more bytes
        # to arrive, so go on until the buffer is used up (or an error).
        while True:
            rc = super().loop_read(max_packets)
            if rc != mqtt.MQTT_ERR_SUCCESS or self._at >= len(self._buffer):
                return rc

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages (``manual_ack``) in one write: PUBACK packets, in
        MQTT 3.1.1's form, which MQTT 5 reads as reason code 0 (success)."""
        packets = b"".join(struct.pack("!BBH", PUBACK, 2, mid) for mid in mids)
        if packets:
            # paho's queue takes any bytes as one packet; a PUBACK needs no bookkeeping.
            self._packet_queue(PUBACK, packets, 0, 0)
