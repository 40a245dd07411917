"""The embedded MQTT broker (amqtt) for when no ``TWINFORGE_MQTT_URL`` is configured.

The broker runs in a child process (``python -m twinforge.connectivity.mqtt.broker``), so its
event loop and CPU use stay out of the server process and it can be killed and restarted.
It listens on loopback, plus a TLS listener when a certificate is configured, and lets in
only clients with a device credential of the data dir's store
(:mod:`twinforge.auth.devices`), checked by the guard in front of amqtt
(:mod:`.broker_guard`) and limited to their own topics (:mod:`.broker_acl`). The child
prints ``READY <port> [<tls port>]`` once listening and exits when its stdin closes, so it
never outlives the process that started it.
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
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt

from twinforge.auth.devices import DeviceStore, server_credential
from twinforge.config import Settings
from twinforge.connectivity.mqtt.broker_guard import ConnectGuard, Connections, Limits
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.connectivity.mqtt.endpoint_settings import endpoint_from_settings
from twinforge.lifecycle import Running

#: Seconds :meth:`EmbeddedBroker.start` waits for the child to accept MQTT clients.
START_TIMEOUT_S = 20.0
#: Seconds :meth:`EmbeddedBroker.stop` waits for a clean exit before killing the child.
STOP_TIMEOUT_S = 5.0

_READY = "READY"
_LISTENER = "default"


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener of the embedded broker: PEM certificate chain and key files, and
    where it listens (``port`` 0: a free one)."""

    cert_file: Path
    key_file: Path
    port: int = 8883
    host: str = "0.0.0.0"


class EmbeddedBroker(Running):
    """An amqtt broker in a child process on ``host:port`` (``port=0``: a free port, then
    :attr:`port` and :attr:`url` tell which). :meth:`start` / :meth:`stop`, or ``with``.

    Clients log in with credentials of the :class:`~twinforge.auth.devices.DeviceStore`
    in ``data_dir``; ``limits`` bound packet size and PUBLISH rate per client; ``tls`` adds
    a TLS listener (then :attr:`tls_port`). ``log_file`` keeps the child's warnings and
    errors; without one they go to a temporary file that start errors quote from.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        data_dir: Path,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        limits: Limits | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir)
        self.log_file = log_file
        self.limits = limits or Limits()
        self.tls = tls
        #: The TLS listener's port once started, None without one.
        self.tls_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._guard = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBroker:
        """The broker the ``mqtt_*`` settings describe, its store and log in ``data_dir``."""
        data_dir = Path(settings.data_dir)
        tls = None
        if settings.mqtt_tls_cert_file is not None or settings.mqtt_tls_key_file is not None:
            if settings.mqtt_tls_cert_file is None or settings.mqtt_tls_key_file is None:
                raise ValueError(
                    "TWINFORGE_MQTT_TLS_CERT_FILE and TWINFORGE_MQTT_TLS_KEY_FILE must be set"
                    " together (a TLS listener needs both)"
                )
            tls = TlsListener(
                settings.mqtt_tls_cert_file,
                settings.mqtt_tls_key_file,
                settings.mqtt_tls_port,
                settings.mqtt_tls_host,
            )
        limits = Limits(
            max_packet_bytes=settings.mqtt_max_packet_bytes,
            publish_rate=settings.mqtt_publish_rate,
            publish_burst=2 * settings.mqtt_publish_rate,
        )
        return cls(
            data_dir=data_dir,
            log_file=data_dir / "embedded_broker.log",
            limits=limits,
            tls=tls,
        )

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
        # The server's credential exists before the child's first client (the probe).
        credential = server_credential(self.data_dir)
        with self._guard:
            if self._process is not None:
                raise RuntimeError("this EmbeddedBroker is already started")
            self._spawn()
        try:
            _probe(self.host, self.port, credential, time.monotonic() + START_TIMEOUT_S)
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
        limits = self.limits
        command = [
            *(sys.executable, "-m", __name__, "--host", self.host, "--port", str(self.port)),
            *("--data-dir", str(self.data_dir)),
            *("--max-packet-bytes", str(limits.max_packet_bytes)),
            *("--publish-rate", repr(limits.publish_rate)),
            *("--publish-burst", repr(limits.publish_burst)),
            *("--recheck-s", repr(limits.recheck_s)),
        ]
        if self.tls is not None:
            command += ["--tls-cert", str(self.tls.cert_file), "--tls-key", str(self.tls.key_file)]
            command += ["--tls-host", self.tls.host, "--tls-port", str(self.tls.port)]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        self._process = process
        assert process.stdout is not None
        line = _read_line(process.stdout, time.monotonic() + START_TIMEOUT_S)
        words = line.split()
        if len(words) != (2 if self.tls is None else 3) or words[0] != _READY:
            tail = self._log_tail()
            process.kill()
            process.wait()
            self._process = None
            raise RuntimeError(
                f"embedded MQTT broker failed to start on {self.host}:{self.port}: {tail}"
            )
        self.port = int(words[1])
        if self.tls is not None:
            # A restart keeps the TLS port too.
            self.tls_port = int(words[2])
            self.tls = TlsListener(
                self.tls.cert_file, self.tls.key_file, self.tls_port, self.tls.host
            )

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


def mqtt_endpoint(settings: Settings) -> tuple[MqttEndpoint, EmbeddedBroker | None]:
    """Where to reach MQTT: the broker ``settings.mqtt_url`` names, with its TLS and login
    settings (:func:`endpoint_from_settings`), or an :class:`EmbeddedBroker` started for
    it when the URL is unset.

    The caller owns a returned broker and stops it. ``ValueError`` naming the
    ``TWINFORGE_`` variable and the rule for a bad setting.
    """
    if settings.mqtt_url is None:
        broker = EmbeddedBroker.from_settings(settings)
        broker.start()
        username, password = server_credential(settings.data_dir)
        return MqttEndpoint(broker.host, broker.port, username=username, password=password), broker
    return endpoint_from_settings(settings), None


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


def _probe(host: str, port: int, credential: tuple[str, str], deadline: float) -> None:
    """Wait until paho, logged in as the server, gets a CONNACK from the broker (amqtt's,
    past the guard); ``TimeoutError`` at the deadline."""
    connected = threading.Event()
    username, password = credential
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"{username}-probe"
    )
    client.username_pw_set(username, password)
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


def _broker_config(connections: Connections) -> dict[str, object]:
    # An external listener: the broker serves connections handed to it by our own asyncio
    # servers, behind the guard; whose socket also tells the port bound when 0 was asked.
    plugin_config = {"connections": connections}
    return {
        "listeners": {_LISTENER: {"type": "external"}},
        "plugins": {
            "twinforge.connectivity.mqtt.broker_acl.GuardedAuthPlugin": plugin_config,
            "twinforge.connectivity.mqtt.broker_acl.TwinAclPlugin": plugin_config,
        },
    }


async def _serve(args: argparse.Namespace) -> None:
    from amqtt.adapters import ReaderAdapter, StreamWriterAdapter
    from amqtt.broker import Broker

    limits = Limits(
        max_packet_bytes=args.max_packet_bytes,
        publish_rate=args.publish_rate,
        publish_burst=args.publish_burst,
        recheck_s=args.recheck_s,
    )
    store = DeviceStore.in_data_dir(args.data_dir)
    connections = Connections()
    guard = ConnectGuard(store, connections, limits)
    broker = Broker(_broker_config(connections))
    await broker.start()

    async def hand_on(reader: ReaderAdapter, writer: asyncio.StreamWriter) -> None:
        await broker.external_connected(reader, StreamWriterAdapter(writer), _LISTENER)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await guard.serve(reader, writer, hand_on)

    servers = []
    try:
        servers.append(await asyncio.start_server(connected, args.host, args.port))
        if args.tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(args.tls_cert, args.tls_key)
            servers.append(
                await asyncio.start_server(connected, args.tls_host, args.tls_port, ssl=context)
            )
    except (OSError, ssl.SSLError) as exc:
        for server in servers:
            server.close()
        await broker.shutdown()
        # One line the parent quotes, rather than a traceback.
        where = f"{args.host}:{args.port}" if not servers else f"{args.tls_host}:{args.tls_port}"
        sys.stderr.write(f"cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}\n")
        raise SystemExit(2) from None
    ports = " ".join(str(server.sockets[0].getsockname()[1]) for server in servers)
    sys.stdout.write(f"{_READY} {ports}\n")
    sys.stdout.flush()

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    # EOF on stdin: the parent stopped us or died.
    threading.Thread(target=_wait_for_eof, args=(loop, done), daemon=True).start()
    rechecks = asyncio.create_task(connections.recheck_forever(store, limits.recheck_s))
    await done.wait()
    rechecks.cancel()
    for server in servers:
        server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.shutdown(), STOP_TIMEOUT_S / 2)
    store.close()


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
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-packet-bytes", type=int, required=True)
    parser.add_argument("--publish-rate", type=float, required=True)
    parser.add_argument("--publish-burst", type=float, required=True)
    parser.add_argument("--recheck-s", type=float, required=True)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--tls-host", default="0.0.0.0")
    parser.add_argument("--tls-port", type=int, default=8883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
