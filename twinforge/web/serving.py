"""Runs the API app under uvicorn on a background thread of the server process, with
timeouts and a connection cap, over TLS when a certificate is configured."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from twinforge.web.request_deadline import guarded_protocol

__all__ = ["ApiServer", "ServingLimits"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingLimits:
    """How long a client may take and how many may connect (see ``Settings.api_*``)."""

    header_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    keep_alive_timeout_s: int = 30
    max_connections: int = 2048
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class ApiServer:
    """``start()`` returns once the socket listens; ``url`` is then the GraphQL endpoint."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 8000,
        limits: ServingLimits | None = None,
    ) -> None:
        limits = limits or ServingLimits()
        self.tls = limits.tls_cert_file is not None
        if not self.tls and not _loopback(host):
            logger.warning(
                "the GraphQL API listens on %s without TLS: API keys and tokens cross the "
                "network in clear text; set TWINFORGE_API_TLS_CERT_FILE and _KEY_FILE",
                host,
            )
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            http=guarded_protocol(
                header_timeout_s=limits.header_timeout_s,
                request_timeout_s=limits.request_timeout_s,
            ),
            ws="websockets-sansio",
            ws_max_size=1024 * 1024,
            # Compressing each small subscription frame cost more CPU than it saved.
            ws_per_message_deflate=False,
            # Keep-alive for the benchmark's and GraphiQL's repeated requests.
            timeout_keep_alive=limits.keep_alive_timeout_s,
            limit_concurrency=limits.max_connections,
            # Client addresses are the peers': X-Forwarded-For would let any client pick
            # its own, and the failed-authentication limit goes by address.
            proxy_headers=False,
            ssl_certfile=limits.tls_cert_file,
            ssl_keyfile=limits.tls_key_file,
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
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/graphql"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/graphql"

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None
