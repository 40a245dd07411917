"""Copies of each record, as one JSON line carrying its hash, somewhere the log's owner
cannot rewrite: syslog (UDP, TCP or a unix socket) or an append-only file another user
owns. A copy that disagrees with the log shows which records were changed."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import threading
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from twinforge.audit.chain import Record, canonical

__all__ = ["FileForwarder", "Forwarder", "SyslogForwarder", "parse_syslog_target"]

logger = logging.getLogger(__name__)


class Forwarder(Protocol):
    def send(self, record: Record) -> None: ...

    def close(self) -> None: ...


def _line(record: Record) -> str:
    return canonical(record.as_json())


def parse_syslog_target(value: str) -> tuple[str | tuple[str, int], socket.SocketKind]:
    """``udp://host:port``, ``tcp://host:port`` or a unix socket path, as the address and
    socket type ``SysLogHandler`` wants; raises ``ValueError`` naming the setting."""
    if value.startswith("/"):
        return value, socket.SOCK_DGRAM
    parts = urlsplit(value)
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    if parts.scheme not in kinds or not parts.hostname:
        raise ValueError(
            f"audit_syslog: must be udp://host:port, tcp://host:port or an absolute unix "
            f"socket path, not {value!r}"
        )
    try:
        port = parts.port or 514
    except ValueError as error:
        raise ValueError(f"audit_syslog: bad port in {value!r}: {error}") from None
    return (parts.hostname, port), kinds[parts.scheme]


class SyslogForwarder:
    """Each record as one syslog message (facility ``auth``) of its JSON line."""

    def __init__(self, target: str) -> None:
        address, kind = parse_syslog_target(target)
        self._handler = logging.handlers.SysLogHandler(
            address=address,
            facility=logging.handlers.SysLogHandler.LOG_AUTH,
            socktype=kind,
        )
        self._handler.ident = "twinforge-audit: "

    def send(self, record: Record) -> None:
        self._handler.emit(
            logging.LogRecord("twinforge.audit", logging.INFO, "", 0, _line(record), None, None)
        )

    def close(self) -> None:
        self._handler.close()


class FileForwarder:
    """Appends each record's JSON line to ``path`` (opened ``O_APPEND``, never truncated).

    Meant for a file another user owns and has made append-only to us (``chattr +a``, or a
    group-writable file in a directory we cannot write); it is not created here.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise ValueError(
                f"audit_forward_file: cannot open {path} for appending: {error.strerror}"
            ) from None
        self._lock = threading.Lock()

    def send(self, record: Record) -> None:
        data = (_line(record) + "\n").encode("utf-8", "surrogatepass")
        with self._lock:
            os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
