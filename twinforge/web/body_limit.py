"""ASGI middleware that refuses request bodies over a size with 413, before the app
reads them: ``BodySizeLimit(app, max_bytes)``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from twinforge.graphql.errors import PAYLOAD_TOO_LARGE

__all__ = ["MAX_BODY_BYTES", "BodySizeLimit"]

MAX_BODY_BYTES = 1024 * 1024
#: A refused body is still read (and dropped) up to this size and time, so that clients
#: which send the whole body before reading (urllib, requests) see the 413, not a reset.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 10.0


class _TooLarge(Exception):
    """Raised from ``receive`` when the body streams past the limit."""


async def _drain(receive: Any, received: int) -> None:
    """Read and drop the rest of a request body, within DRAIN_BYTES and DRAIN_SECONDS."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while received <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


class BodySizeLimit:
    """ASGI middleware refusing HTTP request bodies over ``max_bytes`` with 413 and a
    GraphQL-style JSON error, whether Content-Length says so up front or the streamed
    body only grows past it. Websockets and lifespan pass through untouched."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name.lower() != b"content-length":
                continue
            # A malformed length is the server's to refuse; the streamed count still holds.
            declared = value.strip()
            if declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_bytes):
                if len(declared) <= 18 and int(declared) <= DRAIN_BYTES:
                    await _drain(receive, 0)
                await self._refuse(send)
                return
        received = 0
        started = refused = False

        async def limited_receive() -> Any:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not started and not refused:
                        # Answer now: error middleware inside the app would turn the
                        # exception below into a 500 before it reached us.
                        refused = True
                        if message.get("more_body", False):
                            await _drain(receive, received)
                        await self._refuse(send)
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if refused:
                return  # the 413 is out; whatever the app says after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not refused:
                raise  # too late for a 413: the server closes the connection

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {
                "errors": [
                    {
                        "message": f"payload too large: at most {self.max_bytes} bytes",
                        "extensions": {"code": PAYLOAD_TOO_LARGE},
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body was never read; don't reuse the connection.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
