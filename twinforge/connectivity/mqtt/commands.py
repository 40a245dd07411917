"""Sending DTDL commands to machines over MQTT request/response (paho-mqtt).

Topics and payloads follow :mod:`twinforge.connectivity.mqtt.topics`: the response topic
of a command for twin X is ``twins/X/replies/{client_id}`` and the correlation 16 random
bytes, in hex. A reply counts only on the topic of the twin its command went to: where a
broker ACL lets only that twin's device publish there (the embedded broker's does), a
reply is known to come from the device that owns the twin. Under
MQTT v5 the request also carries a MessageExpiryInterval; 3.1.1 (all the embedded broker
speaks) has no message expiry, so there a command may reach a machine that reconnects
late to a persistent session.

Failures come back as replies (see :mod:`twinforge.connectivity.command_reply`): 503 when the
broker is not reachable, 504 when no reply came in time, 502 when only unusable replies
came. Unusable replies (not JSON, wrong shape, unknown or missing correlation, another
twin's topic) are counted
in :attr:`MqttCommandTransport.ignored` and otherwise ignored, so a later good reply still
counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twinforge.connectivity.command_reply import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    UNAVAILABLE,
    CommandReply,
    InvalidCommandReply,
)
from twinforge.connectivity.mqtt.client import Subscriptions, start_client
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.topics import (
    CORRELATION_KEY,
    REQUEST_KEY,
    RESPONSE_TOPIC_KEY,
    check_protocol,
    command_topic,
    reply_subscription,
    reply_topic,
)
from twinforge.lifecycle import Running

__all__ = ["MqttCommandTransport"]

log = logging.getLogger(__name__)

#: Replies larger than this are ignored unread.
MAX_REPLY_BYTES = 1024 * 1024
#: Longest twin id or command name put into a topic.
MAX_TOPIC_LEVEL_CHARS = 1024
_TOPIC_UNSAFE = ("/", "+", "#", "\x00")
#: Payload keys of the reply route, the only route MQTT 3.1.1 can carry.

# Ignored-reply reasons, the keys of MqttCommandTransport.ignored.
UNEXPECTED_TOPIC = "unexpectedTopic"
WRONG_TWIN = "wrongTwin"
OVERSIZE = "oversize"
NO_CORRELATION = "noCorrelation"
UNKNOWN_CORRELATION = "unknownCorrelation"
MALFORMED = "malformed"


class MqttCommandTransport(Running):
    """A :class:`~twinforge.runtime.commands.CommandTransport` over one MQTT connection.

    Call :meth:`start` (or use ``with``) before sending; :meth:`send` may then be awaited
    from any event loop, concurrently. The connection is re-established in the background
    when it drops; commands sent meanwhile get a 503 reply rather than being queued, as a
    command delivered late could start a machine nobody expects to move.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str | None = None,
        *,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        protocol: int = mqtt.MQTTv5,
        on_ignored: Callable[[str, str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        #: Called (network thread) with the reason and topic of each ignored reply: the
        #: server audits them, as a forged reply is an attack on the audit log itself.
        self.on_ignored = on_ignored
        self.protocol = check_protocol(protocol)
        self.client_id = client_id or f"twinforge-commands-{uuid.uuid4().hex[:12]}"
        _check_topic_text("client_id", self.client_id, allow_slash=False)
        #: Where the replies to this transport's commands arrive, for every twin.
        self.reply_subscription = reply_subscription(self.client_id)
        self.max_reply_bytes = max_reply_bytes
        #: Replies ignored so far, by reason (``malformed``, ``unknownCorrelation``, ...).
        self.ignored: Counter[str] = Counter()
        self._lock = threading.Lock()
        # Correlation data → (loop, future, last unusable-reply reason) of a waiting send.
        self._waiting: dict[bytes, _Waiter] = {}
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol
        )
        # Without its response topic the transport could send but never hear back.
        self._subscriptions = Subscriptions(
            self._client, endpoint.url, lambda: [self.reply_subscription], all_needed=True
        )
        self._ready = self._subscriptions.ready
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=5)
        endpoint.apply(self._client)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and return once replies can arrive; ConnectionError with the cause
        when the broker cannot be reached or refuses."""
        # A clean session each time: replies to commands of an earlier session are of no
        # use, their senders have already been told 504. (3.1.1 clients are clean by default.)
        session = {"clean_start": True} if self.protocol == mqtt.MQTTv5 else {}
        start_client(self._client, self.endpoint, self._subscriptions, timeout, **session)
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._ready.clear()

    @property
    def connected(self) -> bool:
        """Whether the transport is connected and subscribed to its response topic."""
        return self._ready.is_set()

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self, twin_id: str, command: str, request: Any, *, timeout: float
    ) -> CommandReply:
        """Publish one command and wait up to ``timeout`` seconds for its reply.

        Raises ``ValueError`` for a twin id or command name a topic cannot carry, or a
        request that is not JSON; every other failure is a reply (502, 503, 504).
        """
        _check_topic_text("twin_id", twin_id, allow_slash=False)
        _check_topic_text("command", command, allow_slash=False)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ValueError(f"timeout: must be a number of seconds, not {timeout!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout: must be positive and finite, not {timeout!r}")
        correlation = secrets.token_bytes(16)
        response_topic = reply_topic(twin_id, self.client_id)
        body = {
            REQUEST_KEY: request,
            RESPONSE_TOPIC_KEY: response_topic,
            CORRELATION_KEY: correlation.hex(),
        }
        try:
            payload = json.dumps(body, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"request: not a JSON value ({error})") from None
        if not self._ready.is_set():
            return CommandReply(
                UNAVAILABLE, error=f"not connected to the MQTT broker {self.endpoint.url}"
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, loop.create_future(), response_topic)
        properties = None
        if self.protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = response_topic
            properties.CorrelationData = correlation
            # The broker drops it once nobody waits for its reply any more.
            properties.MessageExpiryInterval = max(1, math.ceil(timeout))
        topic = command_topic(twin_id, command)
        with self._lock:
            self._waiting[correlation] = waiter
        try:
            info = self._client.publish(topic, payload, qos=1, properties=properties)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return CommandReply(
                    UNAVAILABLE, error=f"publish failed: {mqtt.error_string(info.rc)}"
                )
            try:
                return await asyncio.wait_for(waiter.future, timeout)
            except TimeoutError:
                if waiter.unusable is not None:
                    return CommandReply(
                        BAD_GATEWAY, error=f"the machine's reply was unusable: {waiter.unusable}"
                    )
                return CommandReply(GATEWAY_TIMEOUT, error=f"no reply within {timeout:g} s")
        finally:
            with self._lock:
                self._waiting.pop(correlation, None)

    # -- paho callbacks (its network thread) ------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._take_reply(message)
        except Exception:  # one bad reply must never stop the network thread
            log.exception("handling a command reply on %r failed", message.topic)
            self._ignore(MALFORMED, message.topic)

    def _take_reply(self, message: mqtt.MQTTMessage) -> None:
        levels = message.topic.split("/")
        if len(levels) != 4 or reply_topic(levels[1], self.client_id) != message.topic:
            self._ignore(UNEXPECTED_TOPIC, message.topic)
            return
        if len(message.payload) > self.max_reply_bytes:
            self._ignore(OVERSIZE, message.topic)
            return
        correlation = getattr(getattr(message, "properties", None), "CorrelationData", None)
        if not correlation:
            correlation = self._payload_correlation(message.payload, message.topic)
            if correlation is None:
                return
        with self._lock:
            waiter = self._waiting.get(bytes(correlation))
        if waiter is None:  # a late reply, or one meant for somebody else
            self._ignore(UNKNOWN_CORRELATION, message.topic)
            return
        if message.topic != waiter.reply_topic:
            # Whoever may publish under another twin is not the device that got the command.
            self._ignore(WRONG_TWIN, message.topic)
            log.warning("ignored a command reply on another twin's topic %r", message.topic)
            return
        try:
            reply = CommandReply.from_json(message.payload)
        except (InvalidCommandReply, RecursionError) as error:
            self._ignore(MALFORMED, message.topic)
            waiter.unusable = str(error)[:300]
            log.warning("ignored an unusable command reply: %s", waiter.unusable)
            return
        # RuntimeError: the sender's loop has closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            waiter.loop.call_soon_threadsafe(_resolve, waiter.future, reply)

    def _payload_correlation(self, payload: bytes, topic: str) -> bytes | None:
        """The reply's ``correlationId`` field as bytes; None (counted) when it has none."""
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            self._ignore(MALFORMED, topic)  # not JSON: nobody can tell whose reply it is
            return None
        value = doc.get(CORRELATION_KEY) if isinstance(doc, dict) else None
        if not value:
            self._ignore(NO_CORRELATION, topic)
            return None
        try:
            return bytes.fromhex(value)
        except (TypeError, ValueError):
            self._ignore(MALFORMED, topic)
            return None

    def _ignore(self, reason: str, topic: str) -> None:
        with self._lock:
            self.ignored[reason] += 1
        if self.on_ignored is not None:
            try:
                self.on_ignored(reason, topic)
            except Exception:  # the record is lost, the network thread is not
                log.exception("recording an ignored command reply failed")


class _Waiter:
    __slots__ = ("future", "loop", "reply_topic", "unusable")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[CommandReply],
        reply_topic: str,
    ) -> None:
        self.loop = loop
        self.future = future
        self.reply_topic = reply_topic
        self.unusable: str | None = None


def _resolve(future: asyncio.Future[CommandReply], reply: CommandReply) -> None:
    if not future.done():  # it may have timed out meanwhile
        future.set_result(reply)


def _check_topic_text(name: str, value: Any, *, allow_slash: bool) -> None:
    """Refuse text that would change the topic it is put into."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string")
    if len(value) > MAX_TOPIC_LEVEL_CHARS:
        raise ValueError(f"{name}: longer than {MAX_TOPIC_LEVEL_CHARS} characters")
    unsafe = [c for c in _TOPIC_UNSAFE if c in value and (c != "/" or not allow_slash)]
    if unsafe:
        raise ValueError(f"{name}: {', '.join(map(repr, unsafe))} cannot appear in an MQTT topic")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: not valid UTF-8 text") from None
