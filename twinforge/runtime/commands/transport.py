"""How the command service reaches a machine: any transport (MQTT, OPC UA) fits.

The runtime must not import ``twinforge.ingest``, so the reply is described here by the
attributes it needs; ingest's ``CommandReply`` dataclass has them.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["CommandReply", "CommandTransport"]


class CommandReply(Protocol):
    """A device's answer: an HTTP-like ``status``, its ``response`` value or an ``error``."""

    @property
    def status(self) -> int: ...

    @property
    def response(self) -> Any: ...

    @property
    def error(self) -> str | None: ...


class CommandTransport(Protocol):
    """Delivers one command to a twin's device and waits for its reply.

    ``send`` raises :class:`TimeoutError` (or a subclass) when no reply comes within
    ``timeout`` seconds, and ``ValueError`` for ids the protocol cannot carry.
    """

    async def send(
        self, twin_id: str, command: str, request: Any, *, timeout: float
    ) -> CommandReply: ...
