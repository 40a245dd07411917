"""Runs the API app under uvicorn on a background thread of the server process."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI


class ApiServer:
    """``start()`` returns once the socket listens; ``url`` is then the GraphQL endpoint."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            ws_max_size=1024 * 1024,
            # Compressing each small subscription frame cost more CPU than it saved.
            ws_per_message_deflate=False,
            # Keep-alive for the benchmark's and GraphiQL's repeated requests.
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    def start(self, timeout: float = 30.0) -> ApiServer:
        # uvicorn installs no signal handlers off the main thread: the CLI keeps its own.
        self._thread = threading.Thread(target=self._server.run, name="graphql-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the GraphQL API could not listen on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise TimeoutError("the GraphQL API did not start in time")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]  # the real one when asked for port 0
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/graphql"

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None
