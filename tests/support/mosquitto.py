"""A Mosquitto of a test's own (so it can be restarted, and configured for load or for
security: a password file, an ACL file, TLS listeners)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.certificates import KeyPair

PASSWD_BINARY = "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener presenting ``cert``; ``ca`` signs the client certificates it asks
    for with ``require_certificate`` (whose CN then is the MQTT user name)."""

    cert: KeyPair
    ca: Path
    require_certificate: bool = False


class Mosquitto:
    """Persistent, so that a restart keeps queued messages; no cap on queued messages.
    ``extra`` lines are added to its configuration.

    The plain listener (:attr:`port`) lets anyone in. Each of ``tls`` adds a listener
    (its port in :attr:`tls_ports`) that wants a login: ``passwords`` (user -> password,
    hashed by ``mosquitto_passwd``) or a client certificate, and applies ``acl`` (the text
    of a Mosquitto ACL file) when given.
    """

    def __init__(
        self,
        workdir: Path,
        extra: str = "",
        *,
        passwords: Mapping[str, str] | None = None,
        acl: str | None = None,
        tls: Sequence[TlsListener] = (),
    ) -> None:
        self.port = free_port()
        self.tls_ports = [free_port() for _ in tls]
        self.config = workdir / "mosquitto.conf"
        lines = [
            # allow_anonymous, password_file and acl_file per listener: the plain one
            # stays open for test publishers.
            "per_listener_settings true" if tls else "",
            "persistence true",
            f"persistence_location {workdir}/",
            "max_queued_messages 0",
            # Run as us: started as root, Mosquitto would switch to its own user, which
            # cannot write its persistence file in our temporary directory.
            f"user {getpass.getuser()}",
            extra,
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
        ]
        password_file = workdir / "passwords"
        if passwords:
            password_file.write_text("".join(f"{u}:{p}\n" for u, p in passwords.items()))
            password_file.chmod(0o600)
            # -U hashes the plain-text file in place.
            subprocess.run([PASSWD_BINARY, "-U", str(password_file)], check=True)
        acl_file = workdir / "acl"
        if acl is not None:
            acl_file.write_text(acl)
            acl_file.chmod(0o600)
        for port, listener in zip(self.tls_ports, tls, strict=True):
            lines += [
                f"listener {port} 127.0.0.1",
                f"certfile {listener.cert.cert}",
                f"keyfile {listener.cert.key}",
                f"cafile {listener.ca}",
                "tls_version tlsv1.2",
                "allow_anonymous false",
            ]
            if listener.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
            if passwords:
                lines.append(f"password_file {password_file}")
            if acl is not None:
                lines.append(f"acl_file {acl_file}")
        self.config.write_text("\n".join(line for line in lines if line) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        waiting = [self.port, *self.tls_ports]
        while waiting and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2).close()
                waiting.pop(0)
            except OSError:
                time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"mosquitto did not start (config {self.config})")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: Mosquitto saves its persistence file
            self.process.wait(10)
            self.process = None
