"""The embedded broker's door: every connection passes this guard before amqtt sees it.

amqtt deletes a clean-session client's old session, and takes a client id over, before it
looks at what its auth plugins said; so a refused client connecting with the server's
client id would still end the server's session. The guard therefore reads the CONNECT
packet itself, checks the credential (:class:`~twinforge.auth.devices.DeviceStore`) and
that the client id is bound to it, and answers a refusal with a CONNACK and a closed
socket: amqtt never hears of it. An admitted connection's bytes, the CONNECT first, are
then served to amqtt through :class:`GuardedReader`, which keeps framing every packet to
enforce the packet-size limit and the per-client PUBLISH rate.

Over the rate the guard stops reading (back-pressure) rather than disconnecting: nothing
a device sent is dropped, TCP flow control makes the flooder wait at its own end, and a
device catching up after an outage is slowed, not thrown off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from amqtt.adapters import ReaderAdapter
from amqtt.contexts import Action

from twinforge.auth.devices import DeviceCredential, DeviceStore
from twinforge.connectivity.mqtt.broker_acl import allowed

__all__ = ["Connect", "ConnectGuard", "Connections", "GuardedReader", "Limits", "parse_connect"]

log = logging.getLogger(__name__)

_CONNECT = 1
_PUBLISH = 3
# CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3).
UNACCEPTABLE_PROTOCOL = 1
BAD_CREDENTIALS = 4
NOT_AUTHORIZED = 5
_MQTT_3_1_1 = 4


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do: the largest packet (bytes, fixed header included), the
    PUBLISH packets per second and the burst above it, the seconds allowed until CONNECT,
    and how often live credentials are re-checked for revocation."""

    max_packet_bytes: int = 256 * 1024
    publish_rate: float = 2000.0
    publish_burst: float = 4000.0
    connect_timeout_s: float = 10.0
    recheck_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Connect:
    """The fields of a CONNECT packet the guard decides on."""

    protocol_level: int
    client_id: str
    username: str | None
    password: str | None = field(repr=False)
    #: The topic of the will message, which amqtt publishes without asking its ACL plugins.
    will_topic: str | None = None


class _Malformed(ValueError):
    pass


def parse_connect(body: bytes) -> Connect:
    """The CONNECT packet's variable header and payload (after the fixed header);
    ``ValueError`` when it is not a well-formed CONNECT."""
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(body):
            raise _Malformed("CONNECT shorter than its fields")
        chunk = body[at : at + n]
        at += n
        return chunk

    def text() -> bytes:
        return take(int.from_bytes(take(2), "big"))

    protocol = text()
    level = take(1)[0]
    if protocol not in (b"MQTT", b"MQIsdp"):
        raise _Malformed(f"unknown protocol name {protocol[:16]!r}")
    flags = take(1)[0]
    take(2)  # keep-alive
    if level != _MQTT_3_1_1:
        return Connect(level, "", None, None)
    client_id = text()
    will_topic = None
    if flags & 0x04:  # will topic and message
        will_topic = text()
        text()
    username = text() if flags & 0x80 else None
    password = text() if flags & 0x40 else None
    try:
        return Connect(
            level,
            client_id.decode("utf-8"),
            None if username is None else username.decode("utf-8"),
            None if password is None else password.decode("utf-8"),
            None if will_topic is None else will_topic.decode("utf-8"),
        )
    except UnicodeDecodeError:
        raise _Malformed("CONNECT text is not UTF-8") from None


class _TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` waits for one."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


async def _read_packet(reader: asyncio.StreamReader, max_bytes: int) -> tuple[int, bytes, bytes]:
    """``(packet type, fixed header, body)`` of the next packet; ``IncompleteReadError`` at
    EOF, ``_Malformed`` for a bad length or one over ``max_bytes``."""
    header = bytearray(await reader.readexactly(1))
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        header.append(byte)
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise _Malformed("remaining length longer than 4 bytes")
    if len(header) + length > max_bytes:
        raise _Malformed(f"a {len(header) + length}-byte packet is over the {max_bytes}-byte limit")
    return header[0] >> 4, bytes(header), await reader.readexactly(length)


class GuardedReader(ReaderAdapter):
    """What amqtt reads from an admitted connection: the CONNECT already read, then each
    further packet once it passed the size limit and, for a PUBLISH, the rate limit."""

    def __init__(
        self, reader: asyncio.StreamReader, first: bytes, limits: Limits, close: Callable[[], None]
    ) -> None:
        self._reader = reader
        self._buffer = bytearray(first)
        self._limits = limits
        self._bucket = _TokenBucket(limits.publish_rate, limits.publish_burst)
        self._close = close

    async def read(self, n: int = -1) -> bytes:
        while (n < 0 and not self._buffer) or len(self._buffer) < n:
            try:
                kind, header, body = await _read_packet(self._reader, self._limits.max_packet_bytes)
            except _Malformed as error:
                log.warning("closing a connection: %s", error)
                self._close()
                raise asyncio.IncompleteReadError(bytes(self._buffer), n) from None
            if kind == _PUBLISH:
                await self._bucket.take()
            self._buffer += header
            self._buffer += body
        size = len(self._buffer) if n < 0 else n
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class Connections:
    """The live connections by credential: what the ACL plugin looks a session's username
    up in, and what revocation closes."""

    def __init__(self) -> None:
        self._credentials: dict[str, DeviceCredential] = {}
        self._closers: dict[str, set[Callable[[], None]]] = {}

    def credential(self, username: str | None) -> DeviceCredential | None:
        """The credential of a connected username, None for anyone else."""
        return None if username is None else self._credentials.get(username)

    def add(self, credential: DeviceCredential, close: Callable[[], None]) -> None:
        self._credentials[credential.id] = credential
        self._closers.setdefault(credential.id, set()).add(close)

    def remove(self, credential_id: str, close: Callable[[], None]) -> None:
        closers = self._closers.get(credential_id)
        if closers is None:
            return
        closers.discard(close)
        if not closers:
            del self._closers[credential_id]
            del self._credentials[credential_id]

    async def recheck(self, store: DeviceStore) -> None:
        """Close every connection of a credential revoked since; take changed twins."""
        for credential_id in list(self._closers):
            current = await asyncio.to_thread(store.get, credential_id)
            if current is None or current.revoked is not None:
                log.warning("credential %s revoked: closing its connections", credential_id)
                for close in list(self._closers.get(credential_id, ())):
                    close()
            elif credential_id in self._credentials:
                self._credentials[credential_id] = current

    async def recheck_forever(self, store: DeviceStore, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.recheck(store)
            except Exception:  # a locked or missing file now must not end revocation checks
                log.exception("re-checking device credentials failed")


HandOn = Callable[[ReaderAdapter, asyncio.StreamWriter], Awaitable[None]]


class ConnectGuard:
    """Admits a connection to amqtt (``hand_on``) only with a live credential whose
    password matches and to which its client id is bound."""

    def __init__(self, store: DeviceStore, connections: Connections, limits: Limits) -> None:
        self.store, self.connections, self.limits = store, connections, limits

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hand_on: HandOn
    ) -> None:
        def close() -> None:
            writer.transport.abort()

        try:
            admitted = await asyncio.wait_for(
                self._admit(reader, writer), self.limits.connect_timeout_s
            )
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, _Malformed) as error:
            log.info("refused a connection before CONNECT: %s", error or type(error).__name__)
            close()
            return
        if admitted is None:
            return
        credential, first = admitted
        self.connections.add(credential, close)
        try:
            await hand_on(GuardedReader(reader, first, self.limits, close), writer)
        finally:
            self.connections.remove(credential.id, close)

    async def _admit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[DeviceCredential, bytes] | None:
        kind, header, body = await _read_packet(reader, self.limits.max_packet_bytes)
        if kind != _CONNECT:
            raise _Malformed("the first packet is not a CONNECT")
        connect = parse_connect(body)
        if connect.protocol_level != _MQTT_3_1_1:
            await _refuse(writer, UNACCEPTABLE_PROTOCOL)
            return None
        credential = None
        if connect.username is not None and connect.password is not None:
            # argon2 off the event loop: other clients' packets keep flowing meanwhile.
            credential = await asyncio.to_thread(
                self.store.verify, connect.username, connect.password
            )
        if credential is None:
            log.info("refused a CONNECT: bad user name or password")
            await _refuse(writer, BAD_CREDENTIALS)
            return None
        if not credential.owns_client_id(connect.client_id):
            log.info("refused %s: client id not bound to the credential", credential.id)
            await _refuse(writer, NOT_AUTHORIZED)
            return None
        will = connect.will_topic
        if will is not None and not allowed(credential, connect.client_id, will, Action.PUBLISH):
            log.info("refused %s: a will on a topic it may not publish to", credential.id)
            await _refuse(writer, NOT_AUTHORIZED)
            return None
        return credential, header + body


async def _refuse(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes((0x20, 2, 0, code)))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
