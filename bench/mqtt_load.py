"""A fast MQTT 3.1.1 QoS 1 load generator for the ingest benchmark.

paho-mqtt spends about 90 us of CPU per QoS 1 publish here (measured: 7,000-10,000 msgs/s
from one full core), so it cannot offer 20,000 msgs/s on a 2-core machine and leave room
for the server it loads. This writes pre-framed PUBLISH packets to one socket in chunks
and counts the broker's PUBACKs: about 5 us per message. It is a load generator only;
twinforge itself talks MQTT through paho.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CHUNK = 200  # messages per socket write (by default)


@dataclass
class LoadResult:
    sent: int
    acked: int  # PUBACKs from the broker: messages the broker took responsibility for
    seconds: float
    cpu_s: float  # CPU the generator used


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _connect(host: str, port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 120) + _string(client_id)
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"broker refused the load generator: {connack!r}")
    return sock


def publish_load(
    host: str,
    port: int,
    topics_and_fields: list[tuple[str, list[str]]],
    *,
    rate: float,
    seconds: float,
    stop: Callable[[], bool] = lambda: False,
    per_write: int = CHUNK,
) -> LoadResult:
    """Publish telemetry at ``rate`` msgs/s for ``seconds``, round-robin over the topics.

    Each payload is a JSON object of the topic's fields with random values and ``$ts``,
    the time it was framed (for publish-to-state latency).
    """
    sock = _connect(host, port, f"bench-load-{random.getrandbits(32):08x}")
    acked = 0
    done = threading.Event()

    def count_acks() -> None:
        nonlocal acked
        pending = b""
        while not done.is_set():
            try:
                data = sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            pending += data
            whole = len(pending) // 4  # PUBACK is 4 bytes: 0x40 0x02 id id
            acked += whole
            pending = pending[whole * 4 :]

    reader = threading.Thread(target=count_acks, daemon=True)
    reader.start()
    rng = random.Random(7)
    cpu_start = time.process_time()
    start = time.perf_counter()
    sent = 0
    total = int(rate * seconds)
    while sent < total and not stop():
        chunk = []
        now = time.time()
        for _ in range(min(per_write, total - sent)):
            topic, fields = topics_and_fields[sent % len(topics_and_fields)]
            values = {name: round(rng.uniform(0, 100), 3) for name in fields}
            values["$ts"] = now
            body = _string(topic) + struct.pack("!H", sent % 65535 + 1)
            body += json.dumps(values, separators=(",", ":")).encode()
            chunk.append(b"\x32" + _varint(len(body)) + body)
            sent += 1
        sock.sendall(b"".join(chunk))
        ahead = sent / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
    elapsed = time.perf_counter() - start
    deadline = time.monotonic() + 60
    while acked < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    sock.close()
    return LoadResult(sent, acked, elapsed, time.process_time() - cpu_start)
