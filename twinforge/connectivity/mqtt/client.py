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
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK

from twinforge.connectivity.mqtt.endpoint import MqttEndpoint

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read: a few hundred telemetry messages.
READ_SIZE = 1 << 18
#: CONNACK reasons of a refused login: bad user name or password, not authorized.
_LOGIN_REFUSED = (134, 135)
_CLOSED = "it closed the connection before answering"


def start_client(
    client: mqtt.Client,
    endpoint: MqttEndpoint,
    subscriptions: Subscriptions,
    timeout: float,
    **connect: Any,
) -> None:
    """Connect ``client`` to ``endpoint`` and wait until ``subscriptions`` says it can
    work (connected and subscribed); paho reconnects by itself afterwards. The caller has
    set the client up with :meth:`MqttEndpoint.apply` once (paho takes TLS settings only
    once per client, and a stopped client may be started again).

    The first connect is made here, not in paho's thread, so that what stops it fails
    start-up with its reason: ConnectionError (the client stopped) naming the broker and
    why: unreachable, a TLS certificate refused (the ssl error: unknown CA, expired,
    host name mismatch), the login refused (the CONNACK's reason), or no answer in
    ``timeout`` s.
    """
    if subscriptions.ready.is_set():
        return  # already running (``with x.start()`` starts twice)
    subscriptions.answered.clear()
    subscriptions.refused = None
    where = endpoint.url
    # A TLS 1.3 server that refuses our certificate says so after the handshake: the
    # socket error then reaches only paho's log.
    socket_errors: list[str] = []
    client.on_log = lambda _c, _u, level, text: (
        level == mqtt.MQTT_LOG_ERR and socket_errors.append(text)
    )
    try:
        client.connect(endpoint.host, endpoint.port, **connect)
    except ssl.SSLCertVerificationError as error:
        raise ConnectionError(
            f"MQTT broker {where}: TLS certificate not accepted: {error.verify_message}"
        ) from None
    except ssl.SSLError as error:
        raise ConnectionError(f"MQTT broker {where}: TLS handshake failed: {error}") from None
    except OSError as error:
        raise ConnectionError(f"MQTT broker {where} not reachable: {error}") from None
    client.loop_start()
    answered = subscriptions.answered.wait(timeout)
    client.on_log = None
    if answered and subscriptions.refused is None:
        return
    client.disconnect()
    client.loop_stop()
    if not answered:
        raise ConnectionError(
            f"MQTT broker {where}: not ready (no CONNACK/SUBACK) in {timeout:g} s"
        )
    refused = subscriptions.refused or ""
    detail = f" ({socket_errors[0]})" if socket_errors else ""
    if refused.startswith(_CLOSED) and endpoint.tls and not endpoint.cert_file:
        detail += "; does it want a client certificate (TWINFORGE_MQTT_CERT_FILE)?"
    raise ConnectionError(f"MQTT broker {where} refused the connection: {refused}{detail}")


class Subscriptions:
    """The connection callbacks of a client that must hold subscriptions: it subscribes
    to ``filters()`` on every (re)connect, sets :attr:`ready` once the broker has answered
    (also when it refused some filters, unless ``all_needed``) and clears it when the
    connection drops; paho reconnects by itself. :attr:`answered` is set by the first
    answer, good or bad; :attr:`refused` then says why the broker said no, if it did."""

    def __init__(
        self,
        client: mqtt.Client,
        where: str,
        filters: Callable[[], list[str]],
        *,
        all_needed: bool,
    ) -> None:
        self.ready = threading.Event()
        self.answered = threading.Event()
        self.refused: str | None = None
        self._where = where
        self._filters = filters
        self._all_needed = all_needed
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect

    def _refuse(self, why: str) -> None:
        if not self.answered.is_set():
            self.refused = why
            self.answered.set()

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s refused: %s", self._where, reason)
            login = reason.value in _LOGIN_REFUSED
            self._refuse(f"{reason}{' (check the MQTT username and password)' if login else ''}")
            return
        client.subscribe([(topic, 1) for topic in dict.fromkeys(self._filters())])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            log.warning("MQTT broker %s refused subscriptions: %s", self._where, refused)
            if self._all_needed:
                self._refuse(f"subscriptions refused: {', '.join(map(str, refused))}")
                return
        # Ready means subscribed: a message published after start() returns arrives.
        self.ready.set()
        self.answered.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self.ready.clear()
        self._refuse(f"{_CLOSED} ({reason})")
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
            if isinstance(self._sock, ssl.SSLSocket):
                data = self._more_records(data)
            self._buffer, self._at = data, 0
        start = self._at
        self._at = min(start + bufsize, len(self._buffer))
        return self._buffer[start : self._at]

    def _more_records(self, data: bytes) -> bytes:
        # A TLS read returns one record, and brokers write a record per packet: without
        # this, every message would cost a select() and a pass through paho's loop again.
        chunks = [data]
        size = len(data)
        while size < READ_SIZE:
            try:
                chunk = super()._sock_recv(READ_SIZE - size)
            except BlockingIOError:
                break
            if not chunk:
                break  # closed: the next read reports it
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

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
