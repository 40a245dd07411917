"""twinforge's CLI run as a user runs it, in a child process, for end-to-end tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    process: subprocess.Popen[str]
    output: str
    """What it printed up to its ``ready:`` line (URLs, keys, the ready summary)."""
    rest: str = ""
    """What it printed after, once stopped."""


@contextlib.contextmanager
def running_twinforge(args: Sequence[str], env: Mapping[str, str]) -> Iterator[Running]:
    """``python -m twinforge <args>``, once it has printed ``ready:``; stopped with SIGTERM
    afterwards, as Ctrl-C would, and then it must have exited cleanly (status 0)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "twinforge", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Running(process, "")
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        running.output = "".join(lines)
        assert "ready:" in running.output, running.output
        yield running
    finally:
        process.terminate()
        running.rest, _ = process.communicate(timeout=180)
    assert process.returncode == 0, running.output + running.rest
