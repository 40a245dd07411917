"""The request body limit, on real ASGI apps through httpx and Starlette's test client."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import strawberry
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.fastapi import GraphQLRouter

from twinforge.graphql.query_rules import security_extensions
from twinforge.web.body_limit import MAX_BODY_BYTES, BodySizeLimit

LIMIT = 1000
JSON = {"content-type": "application/json"}


async def _size(request: Request) -> JSONResponse:
    return JSONResponse({"received": len(await request.body())})


async def _ignore_body(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def _app(limit: int = LIMIT) -> BodySizeLimit:
    routes = [
        Route("/size", _size, methods=["POST"]),
        Route("/ignore", _ignore_body, methods=["POST"]),
        WebSocketRoute("/ws", _echo),
    ]
    return BodySizeLimit(Starlette(routes=routes), max_bytes=limit)


def _post(
    app: object,
    path: str,
    content: bytes | AsyncIterator[bytes],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=content, headers=headers)

    return asyncio.run(run())


def _chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, total, size):
            yield b"x" * min(size, total - start)

    return generate()


def _assert_refused(response: httpx.Response, limit: int = LIMIT) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "errors": [
            {
                "message": f"payload too large: at most {limit} bytes",
                "extensions": {"code": "PAYLOAD_TOO_LARGE"},
            }
        ]
    }


def test_bodies_within_the_limit_pass() -> None:
    assert _post(_app(), "/size", b"x" * LIMIT).json() == {"received": LIMIT}
    assert _post(_app(), "/size", _chunks(LIMIT)).json() == {"received": LIMIT}


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    _assert_refused(_post(_app(), "/size", b"x" * (LIMIT + 1)))
    # Refused before the app runs, even one that would never read the body.
    _assert_refused(_post(_app(), "/ignore", b"x" * (LIMIT + 1)))


def test_a_streamed_body_growing_past_the_limit_is_refused() -> None:
    request_chunks = _chunks(LIMIT * 5)
    _assert_refused(_post(_app(), "/size", request_chunks))


def test_the_default_limit_is_one_mebibyte() -> None:
    app = BodySizeLimit(Starlette(routes=[Route("/size", _size, methods=["POST"])]))
    assert app.max_bytes == MAX_BODY_BYTES == 1_048_576
    _assert_refused(_post(app, "/size", b"x" * (MAX_BODY_BYTES + 1)), MAX_BODY_BYTES)


def test_websockets_pass_through() -> None:
    # httpx has no websockets: speak ASGI to the app directly, as a server would.
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "x" * (LIMIT * 3)},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", b"999999999")],
        "scheme": "ws",
        "server": ("test", 80),
        "subprotocols": [],
    }
    asyncio.run(_app()(scope, receive, send))  # type: ignore[arg-type]

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "x" * (LIMIT * 3)


@strawberry.type
class _Query:
    @strawberry.field
    def hello(self, name: str) -> str:
        return f"hello {name}"


def test_a_graphql_app_with_the_limit() -> None:
    schema = strawberry.Schema(_Query, extensions=security_extensions())
    app = FastAPI()
    app.include_router(GraphQLRouter(schema, path="/graphql"))
    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)

    small = json.dumps({"query": '{ hello(name: "ada") }'}).encode()
    response = _post(app, "/graphql", small, JSON)
    assert response.json() == {"data": {"hello": "hello ada"}}

    big = json.dumps({"query": "{ hello(name: $n) }", "variables": {"n": "x" * LIMIT}}).encode()
    _assert_refused(_post(app, "/graphql", big, JSON))
    streamed = _chunks(LIMIT * 2)
    _assert_refused(_post(app, "/graphql", streamed, JSON))


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    """The limited app under a real uvicorn, on an ephemeral port."""
    config = uvicorn.Config(_app(), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_client_that_sends_the_whole_body_first_reads_the_413(served: int, chunked: bool) -> None:
    # urllib and requests write the whole body before reading: if the server closed
    # without reading, they would see a reset or a broken pipe, not the 413.
    body = b"x" * (4 * 1024 * 1024)
    for _ in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
        if chunked:
            connection.request("POST", "/size", iter([body[:65536]] * 64), encode_chunked=True)
        else:
            connection.request("POST", "/size", body)
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["errors"][0]["extensions"]["code"] == (
            "PAYLOAD_TOO_LARGE"
        )
        connection.close()
