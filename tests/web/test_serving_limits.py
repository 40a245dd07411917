"""The API server's own limits: slow clients are cut off at the header deadline, the
connection cap answers the excess with 503, TLS when a certificate is configured, and a
warning for a non-loopback address without it. A real uvicorn on real sockets."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.api_server import running_api
from support.certificates import make_certificates

from twinforge.config import Settings
from twinforge.runtime.stores import FalkorDBStore
from twinforge.web.part import serving_limits
from twinforge.web.serving import ServingLimits

HEADER_TIMEOUT_S = 2.0
#: How far past the deadline a close may come on a loaded two-core machine.
SLACK_S = 1.5


def _slow_loris(host: str, port: int, closed_after: list[float], started: float) -> None:
    """Sends a request head one byte every 0.5 s; records when the server closes it."""
    sock = socket.create_connection((host, port), timeout=30)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    try:
        for byte in head:
            sock.sendall(bytes([byte]))
            time.sleep(0.5)
            sock.settimeout(0.01)
            try:
                if sock.recv(1024) == b"":
                    break  # closed by the server
            except TimeoutError:
                pass
            finally:
                sock.settimeout(30)
    except OSError:
        pass  # reset by the server: closed too
    finally:
        closed_after.append(time.monotonic() - started)
        sock.close()


def test_slow_clients_are_closed_and_the_cap_refuses_the_excess(
    embedded_store: FalkorDBStore, tmp_path: Path
) -> None:
    limits = ServingLimits(header_timeout_s=HEADER_TIMEOUT_S, max_connections=10)
    with running_api(embedded_store, tmp_path, limits=limits) as api:
        host, port = api.server.host, api.server.port
        closed_after: list[float] = []
        started = time.monotonic()
        lorises = [
            threading.Thread(target=_slow_loris, args=(host, port, closed_after, started))
            for _ in range(20)
        ]
        for loris in lorises:
            loris.start()
        time.sleep(0.5)  # all twenty connected
        refused = httpx.get(f"http://{host}:{port}/healthz", timeout=5)
        assert refused.status_code == 503
        for loris in lorises:
            loris.join(30)
        assert len(closed_after) == 20
        # The ten over the cap go at once; the other ten at the header deadline.
        assert max(closed_after) <= HEADER_TIMEOUT_S + SLACK_S, closed_after
        assert sum(after < 1.0 for after in closed_after) >= 10, closed_after
        healthy = httpx.get(f"http://{host}:{port}/healthz", timeout=5)
        assert healthy.status_code == 200 and healthy.json()["status"] == "ok"


def test_a_silent_connection_is_closed_at_the_header_deadline(
    embedded_store: FalkorDBStore, tmp_path: Path
) -> None:
    limits = ServingLimits(header_timeout_s=1.0)
    with running_api(embedded_store, tmp_path, limits=limits) as api:
        address = (api.server.host, api.server.port)
        with socket.create_connection(address, timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""  # never sent a byte: closed, not held
            assert time.monotonic() - started <= 1.0 + SLACK_S


def test_tls_when_a_certificate_is_configured(
    embedded_store: FalkorDBStore, tmp_path: Path
) -> None:
    tls_files = make_certificates(tmp_path)
    cert_file, key_file, ca_file = tls_files.server.cert, tls_files.server.key, tls_files.ca
    settings = Settings(api_tls_cert_file=cert_file, api_tls_key_file=key_file)
    with running_api(embedded_store, tmp_path, limits=serving_limits(settings)) as api:
        assert api.url.startswith("https://127.0.0.1:") and api.ws_url.startswith("wss://")
        trusted = ssl.create_default_context(cafile=str(ca_file))
        secret = api.keys.create("tls", ["viewer"]).secret
        answer = httpx.post(
            api.url,
            json={"query": "{ me { name } }"},
            headers={"X-API-Key": secret},
            verify=trusted,
        )
        assert answer.json() == {"data": {"me": {"name": "tls"}}}
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP gets no answer
            httpx.get(api.url.replace("https://", "http://"), timeout=3)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(api.url, timeout=3)  # a client that does not trust it


def test_tls_needs_both_files_and_plain_on_every_interface_warns(
    embedded_store: FalkorDBStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="api_tls_cert_file and api_tls_key_file: set both"):
        Settings(api_tls_cert_file=tmp_path / "api.crt")
    with caplog.at_level(logging.WARNING, logger="twinforge.web.serving"):
        with running_api(embedded_store, tmp_path, host="0.0.0.0"):
            pass
        with running_api(embedded_store, tmp_path / "2"):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "twinforge.web.serving"]
    assert len(warnings) == 1 and "listens on 0.0.0.0 without TLS" in warnings[0]
