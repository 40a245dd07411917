"""uvicorn's HTTP protocol with the limits it lacks: a deadline for a request's head and
one for the whole request, and a connection cap that closes the excess at once.

uvicorn's keep-alive timer runs only between requests and is reset by every byte, so a
client sending one byte every few seconds holds its connection forever; and its
``limit_concurrency`` answers 503 only once a request's head is complete, which a slow
client never sends. Both are closed here on the event loop's clock, per connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedHttpProtocol"]

_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 28\r\nconnection: close\r\n\r\nToo many connections; retry."
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """``header_timeout_s``: from a connection's start (or a request's first byte) to
    the end of its head; ``request_timeout_s``: to the end of its body. Set on the class
    by :func:`guarded_protocol`."""

    header_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    _deadline: asyncio.TimerHandle | None = None
    _waiting_for_head = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) > limit:
            transport.write(_UNAVAILABLE)
            transport.close()
            return
        self._arm(self.header_timeout_s, waiting_for_head=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(self.header_timeout_s, waiting_for_head=True)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.request_timeout_s, waiting_for_head=False)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol takes over the transport
        super().handle_websocket_upgrade()

    def _arm(self, seconds: float, *, waiting_for_head: bool) -> None:
        self._disarm()
        self._waiting_for_head = waiting_for_head
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            what = "head" if self._waiting_for_head else "body"
            self.logger.info("closed a connection that sent no complete request %s in time", what)
            self.transport.close()


def guarded_protocol(*, header_timeout_s: float, request_timeout_s: float) -> type[Any]:
    """A :class:`GuardedHttpProtocol` class with these deadlines."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "request_timeout_s": request_timeout_s},
    )
