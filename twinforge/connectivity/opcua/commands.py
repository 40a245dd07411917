"""DTDL commands and property writes to a machine over OPC UA.

A command is the method ``ns=<i>;s={twinId}.{command}`` on the object ``ns=<i>;s={twinId}``
(see :mod:`twinforge.connectivity.opcua.nodes`), called with the request as JSON text and
answering JSON text that :meth:`CommandReply.from_json` reads.

Every call returns a :class:`CommandReply`, never raises for the machine's or the
network's trouble: 404 the twin has no such command or property on the server, 400/403
a write the server refused, 502 the server's answer was unusable, 503 the server could
not be reached, 504 no answer within ``timeout`` (the command may still run). A 503 or
504 after the request was sent means the outcome is unknown; callers must not blindly
retry commands that are not idempotent. Bad arguments from the caller raise ValueError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState

from twinforge.connectivity.command_reply import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    UNAVAILABLE,
    CommandReply,
    InvalidCommandReply,
)
from twinforge.connectivity.opcua.nodes import (
    PLANT_NAMESPACE,
    SESSION_TIMEOUT_MS,
    check_name,
    check_twin_id,
    member_node_id,
    namespace_index,
)
from twinforge.connectivity.opcua.security import ClientSecurity

log = logging.getLogger(__name__)

_NOT_FOUND = {"BadNodeIdUnknown", "BadNodeIdInvalid", "BadMethodInvalid"}
_FORBIDDEN = {"BadNotWritable", "BadUserAccessDenied", "BadWriteNotSupported"}
_BAD_VALUE = {"BadTypeMismatch", "BadOutOfRange", "BadInvalidArgument"}
_WRITE_REFUSALS = (
    dict.fromkeys(_NOT_FOUND, 404) | dict.fromkeys(_FORBIDDEN, 403) | dict.fromkeys(_BAD_VALUE, 400)
)
# Service faults after which the session is useless: reconnect on the next call.
_SESSION_LOST = {
    "BadSessionIdInvalid",
    "BadSessionClosed",
    "BadSessionNotActivated",
    "BadSecureChannelIdInvalid",
    "BadSecureChannelClosed",
    "BadConnectionClosed",
    "BadServerHalted",
    "BadShutdown",
}
_DISCONNECT_TIMEOUT_S = 2.0
# Python types a value may have for each OPC UA scalar type we write.
_FLOATS = {ua.VariantType.Double, ua.VariantType.Float}
_INTS = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}


class OpcUaCommandTransport:
    """Sends commands and property writes to one OPC UA server over one kept connection.

    The connection is opened on first use and reused; when it is found broken it is
    replaced on the next call, and on a call from another event loop than the last one.
    ``await close()`` (or ``async with``) at the end.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        security: ClientSecurity,
        namespace_uri: str = PLANT_NAMESPACE,
        request_timeout_s: float = 60.0,
    ) -> None:
        # request_timeout_s bounds any one OPC UA request; per-call timeouts sit below it.
        self.endpoint = endpoint
        self.security = security
        self.namespace_uri = namespace_uri
        self.reconnects = 0  # connections opened after the first
        self._request_timeout_s = request_timeout_s
        self._client: Client | None = None
        self._ns = 0
        self._connections = 0
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._types: dict[str, ua.VariantType] = {}  # property node → its variant type

    async def __aenter__(self) -> OpcUaCommandTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if asyncio.get_running_loop() is not self._loop:
            self._client = None  # made on another loop: its session times out server-side
            return
        async with self._lock:
            await self._drop()

    async def send(
        self, twin_id: str, command: str, request: Any, *, timeout: float
    ) -> CommandReply:
        """Call ``command`` on ``twin_id`` with ``request`` (any JSON value; None → ``null``)."""
        _check_target(twin_id, "command", command)
        if timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout}")
        try:
            text = json.dumps(request, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"request: must be JSON-representable ({exc})") from None
        what = f"command {command!r} of twin {twin_id!r}"
        return await self._within(timeout, what, self._call(twin_id, command, text, what))

    async def write_property(
        self, twin_id: str, name: str, value: Any, *, timeout: float = 10.0
    ) -> CommandReply:
        """Write ``value`` to the writable variable of property ``name``; 200 on success.

        The value is converted to the variable's OPC UA type (an int to a Double, say);
        a value of the wrong kind gives a 400 reply naming the type.
        """
        _check_target(twin_id, "name", name)
        if timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout}")
        what = f"property {name!r} of twin {twin_id!r}"
        return await self._within(timeout, what, self._write(twin_id, name, value, what))

    async def _within(self, timeout: float, what: str, work: Any) -> CommandReply:
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            return CommandReply(GATEWAY_TIMEOUT, error=f"no reply to {what} within {timeout} s")
        except ua.UaStatusCodeError as exc:
            error = f"OPC UA server failed {what}: {_status_name(exc)}"
            return CommandReply(BAD_GATEWAY, error=error)
        except (OSError, ConnectionError, ua.UaError) as exc:
            return CommandReply(
                UNAVAILABLE, error=f"OPC UA server {self.endpoint} unreachable for {what}: {exc!r}"
            )

    async def _call(self, twin_id: str, command: str, text: str, what: str) -> CommandReply:
        client = await self._connected()
        request = ua.CallMethodRequest(
            ObjectId=ua.NodeId(twin_id, self._ns),
            MethodId=member_node_id(self._ns, twin_id, command),
            InputArguments=[ua.Variant(text, ua.VariantType.String)],
        )
        async with self._failing(client):
            (result,) = await client.uaclient.call([request])
        status = result.StatusCode
        if status.is_bad():
            code = 404 if status.name in _NOT_FOUND else BAD_GATEWAY
            return CommandReply(code, error=f"OPC UA server refused {what}: {status.name}")
        outputs = [arg.Value for arg in result.OutputArguments or []]
        if len(outputs) != 1 or not isinstance(outputs[0], str):
            kinds = [type(out).__name__ for out in outputs]
            return CommandReply(
                BAD_GATEWAY, error=f"{what} must return one String, returned {kinds}"
            )
        try:
            return CommandReply.from_json(outputs[0])
        except InvalidCommandReply as exc:
            return CommandReply(BAD_GATEWAY, error=f"invalid reply to {what}: {exc}")

    async def _write(self, twin_id: str, name: str, value: Any, what: str) -> CommandReply:
        client = await self._connected()
        node = client.get_node(member_node_id(self._ns, twin_id, name))
        key = node.nodeid.to_string()
        try:
            async with self._failing(client):
                if key not in self._types:
                    self._types[key] = await node.read_data_type_as_variant_type()
                variant = _variant(value, self._types[key])
                await node.write_attribute(ua.AttributeIds.Value, ua.DataValue(variant))
        except ValueError as exc:
            return CommandReply(400, error=f"value: {what} {exc}")
        except ua.UaStatusCodeError as exc:
            name_ = _status_name(exc)
            code = _WRITE_REFUSALS.get(name_, BAD_GATEWAY)
            return CommandReply(code, error=f"OPC UA server refused to write {what}: {name_}")
        return CommandReply(200)

    async def _connected(self) -> Client:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # The client and the lock belong to the loop that made them; a caller on
            # another loop (asyncio.run per call, say) gets new ones. The old client's
            # loop is gone or busy elsewhere, so it is abandoned rather than closed.
            self._loop, self._lock, self._client = loop, asyncio.Lock(), None
        async with self._lock:
            client = self._client
            if client is not None and client.uaclient.state is UaClientState.CONNECTED:
                return client
            await self._drop()
            client = Client(self.endpoint, timeout=self._request_timeout_s)
            client.session_timeout = SESSION_TIMEOUT_MS
            try:
                await self.security.connect(client)
                self._ns = await namespace_index(client, self.namespace_uri)
            except BaseException:
                await _disconnect(client)
                raise
            self._client = client
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
            return client

    @contextlib.asynccontextmanager
    async def _failing(self, client: Client) -> AsyncIterator[None]:
        """Discard ``client`` when the block fails on the transport, so the next call
        reconnects (a status refusal from a healthy server keeps it)."""
        try:
            yield
        except ua.UaStatusCodeError as exc:
            if _status_name(exc) in _SESSION_LOST:
                await self._discard(client)
            raise
        except (OSError, ConnectionError, ua.UaError):
            await self._discard(client)
            raise

    async def _discard(self, client: Client) -> None:
        async with self._lock:
            if self._client is client:
                await self._drop()

    async def _drop(self) -> None:
        client, self._client = self._client, None
        self._types.clear()  # a restarted server may type its variables differently
        if client is not None:
            await _disconnect(client)


def _check_target(twin_id: Any, label: str, name: Any) -> None:
    if not isinstance(twin_id, str):
        raise ValueError(f"twin_id: must be a string, got {type(twin_id).__name__}")
    if not isinstance(name, str):
        raise ValueError(f"{label}: must be a string, got {type(name).__name__}")
    try:
        check_twin_id(twin_id)
    except ValueError as exc:
        raise ValueError(f"twin_id: {exc}") from None
    try:
        check_name(name)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None


def _variant(value: Any, vtype: ua.VariantType) -> ua.Variant:
    """``value`` as a variant of the variable's type; ValueError says what was expected."""
    kind = type(value).__name__
    if vtype in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"is {vtype.name} on the server: needs a number, got {kind}")
        return ua.Variant(float(value), vtype)
    if vtype in _INTS:
        low, high = _INTS[vtype]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"is {vtype.name} on the server: needs an integer, got {kind}")
        if not low <= value <= high:
            raise ValueError(f"is {vtype.name} on the server: needs {low} to {high}, got {value}")
        return ua.Variant(value, vtype)
    if vtype is ua.VariantType.Boolean:
        if not isinstance(value, bool):
            raise ValueError(f"is Boolean on the server: needs true or false, got {kind}")
        return ua.Variant(value, vtype)
    if vtype is ua.VariantType.String:
        if not isinstance(value, str):
            raise ValueError(f"is String on the server: needs a string, got {kind}")
        return ua.Variant(value, vtype)
    raise ValueError(f"is {vtype.name} on the server, which twinforge cannot write")


def _status_name(exc: ua.UaStatusCodeError) -> str:
    return ua.StatusCode(exc.code).name


async def _disconnect(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), _DISCONNECT_TIMEOUT_S)
    except Exception as exc:  # the server is usually gone already
        log.debug("OPC UA disconnect: %r", exc)
