"""The embedded MQTT broker (amqtt) for when no ``TWINFORGE_MQTT_URL`` is configured.

The broker runs in a child process (``python -m twinforge.connectivity.mqtt.broker``), so its
event loop and CPU use stay out of the server process and it can be killed and restarted.
It listens on loopback only and lets anonymous clients in. The child prints
``READY <port>`` once listening and exits when its stdin closes, so it never outlives the
process that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from twinforge.config import Settings
from twinforge.lifecycle import Running

#: Seconds :meth:`EmbeddedBroker.start` waits for the child to accept MQTT clients.
START_TIMEOUT_S = 20.0
#: Seconds :meth:`EmbeddedBroker.stop` waits for a clean exit before killing the child.
STOP_TIMEOUT_S = 5.0
DEFAULT_MQTT_PORT = 1883

_READY = "READY"
_LISTENER = "default"


class EmbeddedBroker(Running):
    """An amqtt broker in a child process on ``host:port`` (``port=0``: a free port, then
    :attr:`port` and :attr:`url` tell which). :meth:`start` / :meth:`stop`, or ``with``.

    ``log_file`` keeps the child's warnings and errors; without one they go to a temporary
    file that start errors quote from.
    """

    def __init__(
        self, port: int = 0, *, host: str = "127.0.0.1", log_file: Path | None = None
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        self.host = host
        self.port = port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._guard = threading.Lock()

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for clients on this machine."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> EmbeddedBroker:
        """Start the child; returns once an MQTT client can connect.

        A restarted broker keeps the port it first got, so clients reconnect to the same URL.
        ``RuntimeError`` (with the child's log tail) when it does not come up in
        :data:`START_TIMEOUT_S`.
        """
        with self._guard:
            if self._process is not None:
                raise RuntimeError("this EmbeddedBroker is already started")
            self._spawn()
        try:
            _probe(self.host, self.port, time.monotonic() + START_TIMEOUT_S)
        except BaseException:
            tail = self._log_tail()
            self.stop()
            raise RuntimeError(f"embedded MQTT broker did not accept a client: {tail}") from None
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Close the child's stdin (its signal to shut down), kill it after ``timeout``
        seconds; the port is free on return. Idempotent."""
        with self._guard:
            process, self._process = self._process, None
            if process is not None:
                if process.stdin is not None:
                    with contextlib.suppress(OSError):
                        process.stdin.close()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                if process.stdout is not None:
                    process.stdout.close()
            if self._log is not None:
                self._log.close()
                self._log = None
        atexit.unregister(self.stop)

    def _spawn(self) -> None:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        command = [sys.executable, "-m", __name__, "--host", self.host, "--port", str(self.port)]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        self._process = process
        assert process.stdout is not None
        line = _read_line(process.stdout, time.monotonic() + START_TIMEOUT_S)
        words = line.split()
        if len(words) != 2 or words[0] != _READY:
            tail = self._log_tail()
            process.kill()
            process.wait()
            self._process = None
            raise RuntimeError(
                f"embedded MQTT broker failed to start on {self.host}:{self.port}: {tail}"
            )
        self.port = int(words[1])

    def _log_tail(self, chars: int = 2000) -> str:
        log = self._log
        if log is None:
            return "(no log)"
        try:
            log.flush()
            with open(log.fileno(), "rb", closefd=False) as reader:
                reader.seek(max(0, os.fstat(log.fileno()).st_size - chars))
                text = reader.read().decode("utf-8", "replace").strip()
        except OSError:
            return "(log unreadable)"
        return text or "(log empty)"


def mqtt_endpoint(settings: Settings) -> tuple[str, int, EmbeddedBroker | None]:
    """Where to reach MQTT: ``settings.mqtt_url`` parsed (``mqtt://host[:port]``, port
    1883 by default), or an :class:`EmbeddedBroker` started for it when the URL is unset.

    The caller owns a returned broker and stops it. ``ValueError`` naming
    ``TWINFORGE_MQTT_URL`` and the rule for a bad URL.
    """
    if settings.mqtt_url is None:
        broker = EmbeddedBroker(log_file=Path(settings.data_dir) / "embedded_broker.log")
        broker.start()
        return broker.host, broker.port, broker
    host, port = parse_mqtt_url(settings.mqtt_url)
    return host, port, None


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``mqtt://host[:port]`` URL; ``ValueError`` naming the rule."""
    name = "TWINFORGE_MQTT_URL"
    shape = "mqtt://host[:port]"
    if not url.strip():
        raise ValueError(f"{name} is empty; unset it to use the embedded broker, or set {shape}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"{name} must look like {shape} with a port from 1 to 65535, got {url!r}: {exc}"
        ) from None
    if parts.scheme != "mqtt":
        raise ValueError(
            f"{name} must use the mqtt:// scheme ({shape}), got {parts.scheme or 'none'!r} in {url!r}"
        )
    if not parts.hostname:
        raise ValueError(f"{name} must name a host ({shape}), got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{name} must not carry credentials ({shape}), got a user in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{name} must have no path, query or fragment ({shape}), got {url!r}")
    if port == 0:
        raise ValueError(f"{name} port must be from 1 to 65535, got 0 in {url!r}")
    return parts.hostname, port or DEFAULT_MQTT_PORT


def _read_line(stream: IO[bytes], deadline: float) -> str:
    """One line from the child's stdout, or what came before EOF or the deadline."""
    data = b""
    fd = stream.fileno()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", "replace")


def _probe(host: str, port: int, deadline: float) -> None:
    """Wait until paho gets a CONNACK from the broker; ``TimeoutError`` at the deadline."""
    connected = threading.Event()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="twinforge-probe"
    )
    client.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or connected.set()
    while not connected.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no CONNACK from {host}:{port}")
        try:
            client.connect(host, port, keepalive=10)
        except OSError:
            time.sleep(0.05)
            continue
        end = min(deadline, time.monotonic() + 2.0)
        while not connected.is_set() and time.monotonic() < end:
            client.loop(timeout=0.05)
    client.disconnect()
    client.loop(timeout=0.05)


# The child process.


def _broker_config() -> dict[str, object]:
    # An external listener: the broker serves connections handed to it by our own asyncio
    # server, whose socket tells the port actually bound when port 0 was asked for.
    return {
        "listeners": {_LISTENER: {"type": "external"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def _serve(host: str, port: int) -> None:
    from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
    from amqtt.broker import Broker

    broker = Broker(_broker_config())
    await broker.start()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await broker.external_connected(
            StreamReaderAdapter(reader), StreamWriterAdapter(writer), _LISTENER
        )

    try:
        server = await asyncio.start_server(connected, host, port)
    except OSError as exc:
        await broker.shutdown()
        # One line the parent quotes, rather than a traceback.
        sys.stderr.write(f"cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        raise SystemExit(2) from None
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{_READY} {bound}\n")
    sys.stdout.flush()

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    # EOF on stdin: the parent stopped us or died.
    threading.Thread(target=_wait_for_eof, args=(loop, done), daemon=True).start()
    await done.wait()
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.shutdown(), STOP_TIMEOUT_S / 2)


def _wait_for_eof(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    # The raw fd, not sys.stdin: a daemon thread blocked holding a buffered reader's lock
    # can abort the interpreter at exit.
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    loop.call_soon_threadsafe(done.set)


def main(argv: list[str] | None = None) -> None:
    """Run the broker until stdin closes or SIGTERM; prints ``READY <port>`` once listening."""
    parser = argparse.ArgumentParser(description="twinforge embedded MQTT broker (amqtt)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
