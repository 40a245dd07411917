"""The server's Prometheus metrics (ingest and the asset actors) and the HTTP endpoint
serving them (``start_metrics``).

Each :class:`ServerMetrics` has a registry of its own rather than prometheus_client's global
one, so tests and several servers in one process never clash over metric names.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

#: Latency buckets (seconds) from 1 ms to 10 s: source time to durable in the actor.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Actor batch size buckets: one message up to a large burst.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: Longest label value accepted; labels come from code (transports, reasons), never input.
MAX_LABEL_CHARS = 64


@dataclass(slots=True)
class MetricsServer:
    """The HTTP server behind :meth:`ServerMetrics.serve`; :meth:`stop` it or use ``with``."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        """The metrics endpoint's URL."""
        host = str(self.server.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and free the port; idempotent."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class ServerMetrics:
    """The ingest and actor metrics on one registry, with small methods to record them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._messages = Counter(
            "twinforge_ingest_messages_total",
            "Messages received by ingest, by transport.",
            ["transport"],
            registry=r,
        )
        self._accepted = Counter(
            "twinforge_ingest_accepted_total",
            "Messages made durable in an asset actor, by transport.",
            ["transport"],
            registry=r,
        )
        self._rejected = Counter(
            "twinforge_ingest_rejected_total",
            "Messages refused and dead-lettered, by transport and reason.",
            ["transport", "reason"],
            registry=r,
        )
        self._dead_letters_dropped = Counter(
            "twinforge_dead_letters_dropped_total",
            "Dead letters deleted to keep the store in its budget, by cause (age, a "
            "source's quota, the store's size).",
            ["cause"],
            registry=r,
        )
        self._commands = Counter(
            "twinforge_commands_total", "Commands to machines, by outcome.", ["status"], registry=r
        )
        self._latency = Histogram(
            "twinforge_ingest_latency_seconds",
            "Seconds from a message's publish (source) time to durable in its actor.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._batch = Histogram(
            "twinforge_actor_batch_size",
            "Messages an asset actor made durable in one batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._assets = Gauge("twinforge_assets_live", "Assets with a live actor.", registry=r)
        self._processes = Gauge(
            "twinforge_actor_processes", "Processes hosting asset actors.", registry=r
        )

    def received(self, transport: str, n: int = 1) -> None:
        """Count ``n`` messages received over ``transport`` (``mqtt``, ``opcua``, ...)."""
        self._messages.labels(_label("transport", transport)).inc(_count(n))

    def accepted(self, transport: str, n: int = 1) -> None:
        """Count ``n`` messages made durable in their actors."""
        self._accepted.labels(_label("transport", transport)).inc(_count(n))

    def rejected(self, transport: str, reason: str, n: int = 1) -> None:
        """Count ``n`` messages dead-lettered for ``reason`` (a ``messages`` constant)."""
        self._rejected.labels(_label("transport", transport), _label("reason", reason)).inc(
            _count(n)
        )

    def dead_letters_dropped(self, cause: str, n: int = 1) -> None:
        """Count ``n`` dead letters pruned for ``cause`` (a ``dead_letters`` constant)."""
        self._dead_letters_dropped.labels(_label("cause", cause)).inc(_count(n))

    def command(self, status: str) -> None:
        """Count one command by its outcome (``sent``, ``denied``, ``failed``, ...)."""
        self._commands.labels(_label("status", status)).inc()

    def latency(self, seconds: Iterable[float]) -> None:
        """Observe publish-to-durable latencies. A device clock ahead of ours gives a
        negative one, counted as 0 so the message still shows; non-finite ones are skipped
        (they come from a broken clock, not from a delay)."""
        for value in seconds:
            if isinstance(value, int | float) and math.isfinite(value):
                self._latency.observe(max(0.0, float(value)))

    def batch(self, size: int) -> None:
        """Observe the size of one batch an actor made durable."""
        self._batch.observe(_count(size, "size"))

    def assets_live(self, n: int) -> None:
        """Set how many assets have a live actor."""
        self._assets.set(_count(n))

    def actor_processes(self, n: int) -> None:
        """Set how many processes host asset actors."""
        self._processes.set(_count(n))

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format, for serving from another HTTP app."""
        return generate_latest(self.registry)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[MetricsServer, int]:
        """Serve ``/metrics`` over HTTP on a background thread; ``port=0`` takes a free port.

        Returns the server (``stop()`` it) and the port it is bound to.
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(server.server_address[1])
        return MetricsServer(server, thread, bound), bound


def _label(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_LABEL_CHARS:
        raise ValueError(
            f"{name} must be a non-empty string of at most {MAX_LABEL_CHARS} characters, "
            f"got {value!r:.80}"
        )
    return value


def _count(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    return n


@dataclass(slots=True)
class MetricsPart:
    """The server's metrics and the endpoint serving them."""

    metrics: ServerMetrics
    server: MetricsServer

    @property
    def endpoints(self) -> dict[str, str]:
        return {"Metrics": self.server.url}

    def stop(self) -> None:
        self.server.stop()


def start_metrics(port: int, host: str = "127.0.0.1") -> MetricsPart:
    """Fresh metrics, served on ``host:port`` (0: a free port)."""
    metrics = ServerMetrics()
    server, _ = metrics.serve(host, port)
    return MetricsPart(metrics, server)
