"""Benchmark: the GraphQL API of a running server, queries and live subscriptions.

Starts ``twinforge serve`` as a user runs it (a temporary data dir, the sample plant
imported with ``--import``, an admin API key, no Ray dashboard, a Mosquitto of our own as
its MQTT broker, and no per-key rate limit: ``TWINFORGE_API_RATE_LIMIT=0``), then:

1. twin by id: 50 concurrent keep-alive clients (another process) each ask for a random
   twin by id, each ``--per-client-rps`` times a second (20: 1,000 requests/s in all),
   for ``--duration`` seconds; latency counts from when a request was due, so a request
   queued behind a slow one shows in the figures. These are the headline figures. Then
   the same clients back to back: the server's capacity. Back to back, latency is only
   clients / throughput (Little's law: e.g. 50 / 1,500 per s = 33 ms), not a property
   of one request. Baseline in the same run: the same clients back to back on
   ``{ __typename }``, i.e. this server's HTTP + GraphQL floor.
2. 2-hop: the same clients on ``twin(id: <line>) { relationships { nodes { target {
   relationships { nodes { target { dtId modelId } } } } } } }`` (line, cells, equipment),
   each ``--two-hop-per-client-rps`` times a second (2: 100/s in all), then back to back.
3. subscriptions: ``--subscribers`` graphql-transport-ws connections (one subscription
   each, in ``--sub-procs`` processes) on the telemetry of ``--sub-twins`` equipment
   twins, which a publisher here sends over MQTT at ``--rate-hz`` each, numbered (powerKw
   = sequence number, ``$ts`` = send time). Baseline: the server's CPU for the same
   telemetry with no subscriber. Once every subscriber has had an update, a window of
   ``--sub-duration`` seconds is counted: a subscriber is lost when any number of that
   window has not reached it ``--drain`` seconds after the window.

Goal: twin by id p50 under 5 ms and p99 under 50 ms; 1,000 subscribers each receiving
10 updates/s without loss.

    uv run python bench/graphql.py [--equipment 1000] [--duration 20] [--subscribers 1000]
    uv run python bench/graphql.py --quick          # a one-minute smoke run
    uv run python bench/graphql.py --profile-api    # and where the API thread's time went

The server runs as ``python -c`` calling twinforge's CLI, to time its garbage collector
(and profile with ``--profile-api``); otherwise it is ``python -m twinforge serve``.
The last line is JSON: {"by_id_p50_ms": ..., "by_id_p99_ms": ..., "two_hop_p50_ms": ...,
"subscribers_lost": ..., ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# This file is called graphql.py: with its folder first on sys.path it would shadow
# graphql-core for anything importing ``graphql``. Keep the folder, last (for ingest.py).
if sys.path and Path(sys.path[0] or ".").resolve() == BENCH_DIR:
    sys.path.append(sys.path.pop(0))

GOALS = {"by_id_p50_ms": 5.0, "by_id_p99_ms": 50.0, "subscribers_lost": 0}

BY_ID = "query ById($id: String!) { twin(id: $id) { dtId etag modelId } }"
TYPENAME = "{ __typename }"
TWO_HOP = (
    "query TwoHop($id: String!) { twin(id: $id) { dtId relationships(first: 20) { nodes {"
    " target { dtId relationships(first: 20) { nodes { target { dtId modelId } } } } } } } }"
)
TELEMETRY = (
    'subscription Live($twin: String!) { telemetry(twinId: $twin, fields: ["powerKw"]) {'
    " twinId time values kind missed } }"
)


def percentile(values, q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 2) if len(values) else None


# -- HTTP load (a process of its own) ---------------------------------------------------


def _event_loop_run(coroutine):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def http_load(
    out,
    url: str,
    key: str,
    bodies: list[bytes],
    clients: int,
    seconds: float,
    warmup: float,
    rate: float | None,
) -> None:
    """``clients`` keep-alive connections posting random ``bodies``, back to back or (with
    ``rate``) at ``rate`` requests/s in all; puts a dict (latencies in ms as array bytes,
    counts, CPU) on ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out.put(_event_loop_run(_http_load(url, key, bodies, clients, seconds, warmup, rate)))


async def _http_load(
    url: str,
    key: str,
    bodies: list[bytes],
    clients: int,
    seconds: float,
    warmup: float,
    rate: float | None,
) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies = array("d")
    state = {"count": 0, "errors": 0, "first_error": None}
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            interval = None if not rate else clients / rate
            due = start + (rng.uniform(0, interval) if interval else 0.0)
            while True:
                body = bodies[rng.randrange(len(bodies))]
                sent = time.perf_counter()
                if interval is not None:
                    # Paced: latency counts from when the request was due, so a late
                    # client (queued behind a slow answer) shows in the figures.
                    if due > sent:
                        await asyncio.sleep(due - sent)
                    sent, due = due, due + interval
                if sent >= stop_at:
                    return
                try:
                    async with session.post(url, data=body) as response:
                        text = await response.read()
                        ok = response.status == 200 and b'"errors"' not in text
                except aiohttp.ClientError as error:
                    text, ok = repr(error).encode(), False
                done = time.perf_counter()
                if sent < measure_from:
                    continue
                state["count"] += 1
                latencies.append((done - sent) * 1000)
                if not ok:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or text[:300].decode(
                        errors="replace"
                    )

        cpu = time.process_time()
        await asyncio.gather(*(client(i) for i in range(clients)))
        cpu = time.process_time() - cpu
    return {
        "latencies": latencies.tobytes(),
        "count": state["count"],
        "errors": state["errors"],
        "first_error": state["first_error"],
        "seconds": seconds,
        "cpu_s": cpu,
    }


def run_http_phase(
    url: str,
    key: str,
    bodies: list[bytes],
    clients: int,
    seconds: float,
    warmup: float,
    rate: float | None = None,
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(
        target=http_load,
        args=(out, url, key, bodies, clients, seconds, warmup, rate),
        daemon=True,
    )
    process.start()
    try:
        result = out.get(timeout=seconds + warmup + 120)
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    result["latencies"] = array("d", result.pop("latencies"))
    return result


# -- Subscribers (processes of their own) -----------------------------------------------


@dataclass
class Subscriber:
    twin: str
    seqs: array = field(default_factory=lambda: array("l"))
    latencies: array = field(default_factory=lambda: array("d"))  # ms, same order as seqs
    arrived: array = field(default_factory=lambda: array("d"))  # time.time(), same order
    missed: int = 0  # as the server reported it
    error: str | None = None


def subscribe_process(conn, ws_url: str, key: str, twins: list[str], compression: bool) -> None:
    """Runs the subscribers of ``twins`` (one connection each) and talks to the parent
    over ``conn``: sends ("subscribed", ok, failed), ("primed",), then on ("finish", lo,
    hi, drain_s) the per-subscriber results of window [lo, hi)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile_limit())
    _event_loop_run(_subscribers(conn, ws_url, key, twins, compression))


async def _subscribers(conn, ws_url: str, key: str, twins: list[str], compression: bool) -> None:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    subscribers = [Subscriber(twin) for twin in twins]
    connected = asyncio.Semaphore(50)
    primed = asyncio.Event()
    waiting = {"unprimed": len(subscribers)}
    recording = {"on": True}
    sockets: list[Any] = []

    async def run(sub: Subscriber) -> None:
        try:
            async with connected:
                ws = await connect(
                    ws_url,
                    subprotocols=["graphql-transport-ws"],
                    compression="deflate" if compression else None,
                    ping_interval=None,
                    max_queue=None,
                    open_timeout=60,
                )
                sockets.append(ws)
                await ws.send(
                    json.dumps(
                        {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}
                    )
                )
                ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if ack.get("type") != "connection_ack":
                    raise RuntimeError(f"no connection_ack: {ack}")
                await ws.send(
                    json.dumps(
                        {
                            "id": "1",
                            "type": "subscribe",
                            "payload": {"query": TELEMETRY, "variables": {"twin": sub.twin}},
                        }
                    )
                )
        except Exception as error:
            sub.error = f"connect: {error!r}"
            waiting["unprimed"] -= 1
            return
        first = True
        try:
            async for raw in ws:
                received = time.time()
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "next" and recording["on"]:
                    payload = message["payload"]
                    if payload.get("errors"):
                        sub.error = sub.error or json.dumps(payload["errors"])[:300]
                        continue
                    update = payload["data"]["telemetry"]
                    sub.seqs.append(int(update["values"]["powerKw"]))
                    sent = datetime.fromisoformat(update["time"]).timestamp()
                    sub.latencies.append((received - sent) * 1000)
                    sub.arrived.append(received)
                    sub.missed += update["missed"]
                    if first:
                        first = False
                        waiting["unprimed"] -= 1
                        if not waiting["unprimed"]:
                            primed.set()
                elif kind == "ping":
                    await ws.send('{"type": "pong"}')
                elif kind in ("error", "complete"):
                    sub.error = sub.error or f"{kind}: {raw[:300]}"
                    break
        except Exception as error:  # the connection closed under us
            if recording["on"]:  # not when the bench closes it
                sub.error = sub.error or f"receive: {error!r}"
        if first:
            waiting["unprimed"] -= 1
            if not waiting["unprimed"]:
                primed.set()

    tasks = [asyncio.ensure_future(run(sub)) for sub in subscribers]
    while len(sockets) + sum(s.error is not None for s in subscribers) < len(subscribers):
        await asyncio.sleep(0.05)
    # Subscribe messages are sent right after the connections open; give them a moment.
    await asyncio.sleep(0.5)
    failed = sum(s.error is not None for s in subscribers)
    conn.send(("subscribed", len(subscribers) - failed, failed))
    if waiting["unprimed"] <= 0:
        primed.set()
    await primed.wait()
    conn.send(("primed",))
    command = await loop.run_in_executor(None, conn.recv)
    _, lo, hi, drain_s = command
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        if all(s.error or (s.seqs and s.seqs[-1] >= hi - 1) for s in subscribers):
            break
        await asyncio.sleep(0.05)
    recording["on"] = False  # what comes later (while closing, say) is too late: missed
    cpu_s = time.process_time()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    results = []
    for sub in subscribers:
        in_window = [
            (seq, ms, at)
            for seq, ms, at in zip(sub.seqs, sub.latencies, sub.arrived, strict=True)
            if lo <= seq < hi
        ]
        distinct = {seq for seq, _, _ in in_window}
        results.append(
            {
                "twin": sub.twin,
                "received": len(distinct),
                "duplicates": len(in_window) - len(distinct),
                "out_of_order": sum(
                    1 for a, b in zip(sub.seqs, sub.seqs[1:], strict=False) if b < a
                ),
                "missed_reported": sub.missed,
                "error": sub.error,
                "latencies": array("d", (ms for _, ms, _ in in_window)).tobytes(),
                "last_arrival": max((at for _, _, at in in_window), default=0.0),
            }
        )
    conn.send(("results", results, cpu_s))


# -- Publisher (a thread here) ----------------------------------------------------------


class Publisher:
    """Publishes ``{"$ts": now, "powerKw": tick}`` to each twin's telemetry topic once per
    tick at ``rate_hz`` ticks/s (messages spread evenly over the tick), QoS 1, from a
    thread; :meth:`count` marks the window of ticks that the subscribers are checked on."""

    def __init__(self, host: str, port: int, twins: list[str], rate_hz: float) -> None:
        import paho.mqtt.client as mqtt

        self.twins = twins
        self.rate_hz = rate_hz
        self.sent = 0
        self.acked = 0
        self.behind_s = 0.0  # the most this thread ever ran behind its schedule
        self.window: tuple[int, int] | None = None
        self.window_seconds = 0.0
        self.window_wall_start = 0.0  # time.time() when the window's first tick began
        self._stop_before: int | None = None
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"bench-graphql-pub-{random.getrandbits(32):08x}",
            protocol=mqtt.MQTTv311,
        )
        self._client.max_inflight_messages_set(0)  # no limit
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._client.connect(host, port, keepalive=60)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._tick = 0
        self._window_started = 0.0
        self._halt = threading.Event()

    def _on_publish(self, *_args: Any) -> None:
        self.acked += 1

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def count(self, ticks: int) -> tuple[int, int]:
        """Count the next ``ticks`` ticks (from the next one), then stop; returns them."""
        with self._lock:
            lo = self._tick + 1
            self.window = (lo, lo + ticks)
            self._stop_before = lo + ticks
        return self.window

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        step = period / len(self.twins)
        topics = [f"twins/{twin}/telemetry" for twin in self.twins]
        started = time.monotonic()
        tick = 0
        while not self._halt.is_set():
            with self._lock:
                self._tick = tick
                if self._stop_before is not None and tick >= self._stop_before:
                    break
                if self.window is not None and tick == self.window[0]:
                    self._window_started = time.monotonic()
                    self.window_wall_start = time.time()
            base = started + tick * period
            for index, topic in enumerate(topics):
                due = base + index * step
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                else:
                    self.behind_s = max(self.behind_s, now - due)
                payload = json.dumps({"$ts": time.time(), "powerKw": float(tick)})
                self._client.publish(topic, payload, qos=1)
                self.sent += 1
            tick += 1
        if self.window is not None and self._window_started:
            self.window_seconds = time.monotonic() - self._window_started

    def close(self) -> None:
        self._halt.set()
        self._thread.join(10)
        deadline = time.monotonic() + 10
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        self._client.disconnect()
        self._client.loop_stop()


# -- The server ---------------------------------------------------------------------------


def _nofile_limit() -> tuple[int, int]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    return (want, hard)


#: ``python -m twinforge serve`` as ``python -c``, timing the server's garbage collector
#: (printed at the end: "gc: ...") and, when $BENCH_PROFILE names a file, profiling the
#: API's thread (uvicorn's event loop: HTTP, GraphQL, subscriptions) into it.
SERVE = """
import cProfile, gc, json, os, sys, time, uvicorn
_run = uvicorn.Server.run
def run(self, *args, **kwargs):
    if not os.environ.get("BENCH_PROFILE"):
        return _run(self, *args, **kwargs)
    profile = cProfile.Profile()
    profile.enable()
    try:
        return _run(self, *args, **kwargs)
    finally:
        profile.disable()
        profile.dump_stats(os.environ["BENCH_PROFILE"])
uvicorn.Server.run = run
collections = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
started = [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        took = time.perf_counter() - started[0]
        entry = collections[info["generation"]]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)
gc.callbacks.append(on_gc)
from twinforge.cli import app
try:
    app(sys.argv[1:], prog_name="twinforge")
finally:
    print("gc: " + json.dumps({
        f"gen{g}": {"collections": n, "total_s": round(t, 2), "max_ms": round(m * 1000, 1)}
        for g, (n, t, m) in collections.items()
    }), flush=True)
"""


class Server:
    """``python -m twinforge serve`` in its own session; ``stop`` sends SIGTERM."""

    def __init__(self, env: dict[str, str], plant: Path, profile: Path | None = None) -> None:
        self.lines: list[str] = []
        self._ready: queue.Queue[str | None] = queue.Queue()
        # ``python -m twinforge serve``, plus a garbage-collector timer (and cProfile).
        env = env | {"BENCH_PROFILE": str(profile or "")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--import", str(plant), "--no-dashboard"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the bench only; it stops the server
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, _nofile_limit()),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("ready:"):
                self._ready.put("\n".join(self.lines))
        self._ready.put(None)

    def wait_ready(self, timeout: float) -> str:
        try:
            output = self._ready.get(timeout=timeout)
        except queue.Empty:
            output = None
        if output is None:
            tail = "\n".join(self.lines[-40:])
            raise RuntimeError(f"the server did not get ready:\n{tail}")
        return output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


# -- CPU accounting -------------------------------------------------------------------------


def cpu_by_part(server_pid: int, others: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far: the server process, its descendants by kind, and ``others``."""
    import psutil

    totals: dict[str, float] = {}

    def add(kind: str, proc: psutil.Process) -> None:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            return
        totals[kind] = totals.get(kind, 0.0) + times.user + times.system

    try:
        server = psutil.Process(server_pid)
        add("server process (API, ingest, bus)", server)
        descendants = server.children(recursive=True)
    except psutil.Error:
        descendants = []
    for proc in descendants:
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "AssetHost" in cmdline:
            kind = "asset hosts (ray actors)"
        elif "falkordb" in cmdline.lower() or "redis" in cmdline.lower():
            kind = "graph db (falkordb)"
        else:
            kind = "ray (raylet, gcs, workers)"
        add(kind, proc)
    for kind, pids in others.items():
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                add(kind, psutil.Process(pid))
    return totals


def thread_ticks(pid: int) -> dict[int, int]:
    """CPU clock ticks (user + system) per thread of ``pid``."""
    ticks: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


class CpuWindow:
    """CPU used by each part between ``__init__`` and :meth:`report`."""

    def __init__(self, server_pid: int, others: dict[str, list[int]]) -> None:
        self.server_pid, self.others = server_pid, others
        self.started = time.monotonic()
        self.before = cpu_by_part(server_pid, others)
        self.threads = thread_ticks(server_pid)

    def report(self, label: str) -> tuple[dict[str, float], float]:
        """Prints the CPU each part used; returns it (seconds) and the wall time."""
        wall = time.monotonic() - self.started
        after = cpu_by_part(self.server_pid, self.others)
        used = {k: v - self.before.get(k, 0.0) for k, v in after.items()}
        hz = os.sysconf("SC_CLK_TCK")
        threads = thread_ticks(self.server_pid)
        busiest = sorted(
            ((t - self.threads.get(tid, 0)) / hz for tid, t in threads.items()), reverse=True
        )[:3]
        parts = ", ".join(
            f"{k} {v / wall:.0%}" for k, v in sorted(used.items(), key=lambda i: -i[1])
        )
        print(f"  cpu during {label} ({wall:.0f} s, in % of one core): {parts}")
        print(
            "  server's busiest threads: "
            + ", ".join(f"{b / wall:.0%}" for b in busiest)
            + " (the GIL allows about 100% in all)"
        )
        return used, wall


# -- Phases ---------------------------------------------------------------------------------


def describe(name: str, result: dict[str, Any]) -> dict[str, Any]:
    latencies = result["latencies"]
    rate = result["count"] / result["seconds"]
    figures = {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "per_s": round(rate),
        "errors": result["errors"],
    }
    print(
        f"{name}: {result['count']:,} requests in {result['seconds']:.0f} s = {rate:,.0f}/s, "
        f"p50 {figures['p50_ms']} ms, p90 {percentile(latencies, 90)} ms, "
        f"p99 {figures['p99_ms']} ms, max {percentile(latencies, 100)} ms, "
        f"{result['errors']} errors; client process cpu {result['cpu_s'] / result['seconds']:.0%}"
    )
    if result["first_error"]:
        print(f"  first error: {result['first_error']}")
    return figures


def post(url: str, key: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    """One request, for checks; raises on GraphQL errors."""
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def bodies_for(query: str, ids: list[str]) -> list[bytes]:
    return [json.dumps({"query": query, "variables": {"id": i}}).encode() for i in ids]


def http_phase(
    label: str,
    args: argparse.Namespace,
    url: str,
    key: str,
    bodies: list[bytes],
    cpu: Any,
    rate: float | None = None,
) -> dict[str, Any]:
    window = CpuWindow(*cpu)
    result = run_http_phase(url, key, bodies, args.clients, args.duration, args.warmup, rate)
    figures = describe(label, result)
    window.report(label)
    return figures


SERVER = "server process (API, ingest, bus)"


def ingest_baseline(
    args: argparse.Namespace, twins: list[str], mqtt_port: int, cpu_args: Any
) -> float:
    """Server CPU seconds per second for the same telemetry with no subscriber."""
    seconds = min(10.0, args.sub_duration)
    publisher = Publisher("127.0.0.1", mqtt_port, twins, args.rate_hz).start()
    try:
        time.sleep(1)
        window = CpuWindow(*cpu_args)
        time.sleep(seconds)
        used, wall = window.report(
            f"baseline: the same {len(twins) * args.rate_hz:,.0f} msgs/s, no subscriber"
        )
    finally:
        publisher.close()
    return used.get(SERVER, 0.0) / wall


def subscription_phase(
    args: argparse.Namespace,
    ws_url: str,
    key: str,
    twins: list[str],
    mqtt_port: int,
    server_pid: int,
    broker_pid: int,
    ingest_cpu: float,
) -> dict[str, Any]:
    import numpy as np

    context = multiprocessing.get_context("spawn")
    assignment = [twins[i % len(twins)] for i in range(args.subscribers)]
    procs = max(1, min(args.sub_procs, args.subscribers))
    children = []
    for n in range(procs):
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=subscribe_process,
            args=(child_end, ws_url, key, assignment[n::procs], args.ws_compression == "deflate"),
            daemon=True,
        )
        process.start()
        children.append((process, parent_end))

    def receive(conn, timeout: float, what: str):
        if not conn.poll(timeout):
            raise RuntimeError(f"subscriber process: no {what} within {timeout:.0f} s")
        return conn.recv()

    started = time.monotonic()
    publisher = None
    try:
        ok = failed = 0
        for _, conn in children:
            _, good, bad = receive(conn, 300, "subscriptions")
            ok, failed = ok + good, failed + bad
        print(
            f"subscriptions: {ok:,} open over {len(twins)} twins in {procs} processes "
            f"({failed} failed) in {time.monotonic() - started:.1f} s"
        )
        publisher = Publisher("127.0.0.1", mqtt_port, twins, args.rate_hz).start()
        primed_at = time.monotonic()
        for _, conn in children:
            receive(conn, 120, "first update for every subscriber")
        print(
            f"every subscriber had its first update {time.monotonic() - primed_at:.1f} s "
            f"after publishing started; counting {args.sub_duration:.0f} s"
        )
        cpu = CpuWindow(
            server_pid,
            {
                "subscriber processes": [p.pid for p, _ in children],
                "mosquitto": [broker_pid],
                "publisher (bench process)": [os.getpid()],
            },
        )
        lo, hi = publisher.count(round(args.sub_duration * args.rate_hz))
        spying = None
        if args.spy:
            from ingest import print_spy, spy  # bench/ingest.py

            spy_dir = Path(tempfile.mkdtemp(prefix="twinforge-bench-spy-"))
            spying = spy({"server": server_pid}, args.spy, spy_dir)
        publisher.join(args.sub_duration + 60)
        if spying is not None:
            spying.join()
            print_spy(spy_dir, top=40)
            shutil.rmtree(spy_dir, ignore_errors=True)
        publish_seconds = publisher.window_seconds
        for _, conn in children:
            conn.send(("finish", lo, hi, args.drain))
        results: list[dict[str, Any]] = []
        for _, conn in children:
            _, part, _cpu_s = receive(conn, args.drain + 120, "results")
            results.extend(part)
        used, wall = cpu.report("subscriptions (window and drain)")
    finally:
        if publisher is not None:
            publisher.close()
        for process, _ in children:
            process.join(10)
            if process.is_alive():
                process.kill()
    expected_each = hi - lo
    received = sum(r["received"] for r in results)
    lost = sum(1 for r in results if r["received"] < expected_each)
    latencies = np.concatenate(
        [np.frombuffer(r["latencies"], dtype=np.float64) for r in results] or [np.zeros(0)]
    )
    errors = [r["error"] for r in results if r["error"]]
    # From the first counted message sent to the last one received: a server that falls
    # behind delivers everything eventually, but more slowly than it was published.
    last = max((r["last_arrival"] for r in results), default=0.0)
    span = max(publish_seconds, last - publisher.window_wall_start)
    delivered_per_s = received / span if span else 0.0
    within_1s = float((latencies <= 1000).mean()) if len(latencies) else 0.0
    figures = {
        "subscribers_lost": lost,
        "subscribers": len(results),
        "updates_expected": expected_each * len(results),
        "updates_received": received,
        "updates_missed": expected_each * len(results) - received,
        "delivered_per_s": round(delivered_per_s),
        "offered_per_s": round(expected_each * len(results) / publish_seconds)
        if publish_seconds
        else None,
        "sub_latency_p50_ms": percentile(latencies, 50),
        "sub_latency_p99_ms": percentile(latencies, 99),
        "sub_within_1s": round(within_1s, 4),
        "server_reported_missed": sum(r["missed_reported"] for r in results),
        "sub_duplicates": sum(r["duplicates"] for r in results),
        "sub_out_of_order": sum(r["out_of_order"] for r in results),
    }
    print(
        f"published {publisher.sent:,} messages (broker acked {publisher.acked:,}); window: "
        f"ticks {lo}..{hi - 1} = {expected_each} updates per subscriber, published in "
        f"{publish_seconds:.1f} s (publisher at most {publisher.behind_s * 1000:.0f} ms "
        f"behind schedule), the last received {span:.1f} s after the first was sent"
    )
    print(
        f"subscriptions: received {received:,} of {figures['updates_expected']:,} updates "
        f"({figures['updates_missed']:,} missed; {lost} of {len(results)} subscribers missed "
        f"some); delivered {delivered_per_s:,.0f}/s of {figures['offered_per_s']:,}/s offered "
        f"({delivered_per_s / max(1, len(results)):.1f}/s per subscriber); server reported "
        f"{figures['server_reported_missed']:,} dropped; duplicates "
        f"{sum(r['duplicates'] for r in results)}, out of order "
        f"{sum(r['out_of_order'] for r in results)}"
    )
    print(
        f"  latency $ts -> subscriber: p50 {figures['sub_latency_p50_ms']} ms, "
        f"p90 {percentile(latencies, 90)} ms, p99 {figures['sub_latency_p99_ms']} ms, "
        f"max {percentile(latencies, 100)} ms; {within_1s:.1%} within 1 s"
    )
    if errors:
        print(f"  {len(errors)} subscribers reported errors, e.g. {errors[0]}")
    if received:
        server_s = used.get(SERVER, 0.0) - ingest_cpu * wall
        print(
            f"  server process cpu per delivered subscription message: "
            f"{server_s / received * 1e6:.0f} us beyond the ingest baseline "
            f"({used.get(SERVER, 0.0) / received * 1e6:.0f} us in all)"
        )
    return figures


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--equipment", type=int, default=1000, help="sample plant equipment")
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients")
    parser.add_argument("--duration", type=float, default=20, help="seconds per query phase")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first")
    parser.add_argument(
        "--per-client-rps",
        type=float,
        default=20,
        help="twin-by-id requests/s each client sends in the headline phase",
    )
    parser.add_argument(
        "--two-hop-per-client-rps",
        type=float,
        default=2,
        help="2-hop requests/s each client sends in the headline phase",
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--sub-twins", type=int, default=100, help="twins they watch")
    parser.add_argument("--sub-procs", type=int, default=2, help="subscriber processes")
    parser.add_argument("--rate-hz", type=float, default=10, help="updates/s per twin")
    parser.add_argument("--sub-duration", type=float, default=30, help="counted seconds")
    parser.add_argument(
        "--drain",
        type=float,
        default=5,
        help="seconds after the window that late updates may still arrive (later: missed)",
    )
    parser.add_argument(
        "--ws-compression",
        choices=["deflate", "none"],
        default="deflate",
        help="offer permessage-deflate as browsers do (default), or not",
    )
    parser.add_argument("--skip-queries", action="store_true", help="subscriptions only")
    parser.add_argument(
        "--spy", type=float, default=0, help="sample the server with py-spy while counting (s)"
    )
    parser.add_argument(
        "--profile-api",
        action="store_true",
        help="run the server's API thread under cProfile and print where its time went",
    )
    parser.add_argument("--skip-subscriptions", action="store_true", help="queries only")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    args = parser.parse_args()
    if args.quick:
        args.equipment = min(args.equipment, 100)
        args.duration, args.warmup = 5, 1
        args.subscribers, args.sub_twins, args.sub_duration, args.drain = 100, 10, 5, 5

    from ingest import free_port, start_mosquitto  # bench/ingest.py

    from twinforge.sim.layout import LINE, sample_plant

    # SIGTERM stops the bench like Ctrl-C: the finally below stops what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="twinforge-bench-graphql-"))
    broker = server = None
    try:
        layout = sample_plant(equipment=args.equipment)
        plant = workdir / "plant.ndjson"
        plant.write_text(layout.to_import_ndjson(), encoding="utf-8")
        broker, mqtt_port, _tls_port = start_mosquitto(workdir)
        env = os.environ | {
            "TWINFORGE_DATA_DIR": str(workdir / "data"),
            "TWINFORGE_MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
            "TWINFORGE_METRICS_PORT": "0",
            "TWINFORGE_API_PORT": "0",
            "TWINFORGE_DASHBOARD_PORT": str(free_port()),
            "TWINFORGE_API_RATE_LIMIT": "0",
        }
        created = subprocess.run(
            [sys.executable, "-m", "twinforge", "keys", "create", "bench", "--role", "admin"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        started = time.monotonic()
        server = Server(env, plant, workdir / "api.prof" if args.profile_api else None)
        output = server.wait_ready(600)
        match = re.search(r"GraphQL:\s+(http://\S+)", output)
        if match is None:
            raise RuntimeError(f"no GraphQL URL in the server's output:\n{output}")
        url = match[1]
        imported = next((line for line in output.splitlines() if "imported" in line), "")
        print(f"plant: {len(layout.twins):,} twins, {len(layout.relationships):,} relationships")
        print(f"server ready in {time.monotonic() - started:.1f} s at {url}; {imported}")
        print(
            f"setup: {os.cpu_count()} CPU cores shared by server, clients and broker; MQTT via "
            f"the bench's Mosquitto; no per-key rate limit (TWINFORGE_API_RATE_LIMIT=0); "
            "Ray dashboard off"
        )
        cpu_args = (server.process.pid, {"mosquitto": [broker.pid]})
        figures: dict[str, Any] = {}
        if not args.skip_queries:
            ids = [t.id for t in layout.twins]
            lines = [t.id for t in layout.of_model(LINE)]
            # The first use of a key runs argon2 (then it is cached): not for the clients.
            post(url, key, TYPENAME)
            sample = post(url, key, TWO_HOP, {"id": lines[0]})["twin"]
            reached = sum(
                1 + len(r["target"]["relationships"]["nodes"])
                for r in sample["relationships"]["nodes"]
            )
            print(
                f"queries: {args.clients} keep-alive clients, {args.duration:.0f} s per phase "
                f"after {args.warmup:.0f} s warm-up; paced phases count latency from when "
                "each request was due"
            )
            base = http_phase(
                "baseline { __typename }, back to back",
                args,
                url,
                key,
                bodies_for(TYPENAME, ["-"]),
                cpu_args,
            )
            by_id_rate = args.clients * args.per_client_rps
            by_id = http_phase(
                f"twin by id at {by_id_rate:,.0f}/s in all ({args.per_client_rps:g}/s per client)",
                args,
                url,
                key,
                bodies_for(BY_ID, ids),
                cpu_args,
                rate=by_id_rate,
            )
            by_id_max = http_phase(
                "twin by id, back to back", args, url, key, bodies_for(BY_ID, ids), cpu_args
            )
            hop_rate = args.clients * args.two_hop_per_client_rps
            hop_label = f"2-hop from {len(lines)} production lines (e.g. {reached} twins)"
            hop = http_phase(
                f"{hop_label} at {hop_rate:,.0f}/s in all",
                args,
                url,
                key,
                bodies_for(TWO_HOP, lines),
                cpu_args,
                rate=hop_rate,
            )
            hop_max = http_phase(
                f"{hop_label}, back to back", args, url, key, bodies_for(TWO_HOP, lines), cpu_args
            )
            figures |= {
                "by_id_p50_ms": by_id["p50_ms"],
                "by_id_p99_ms": by_id["p99_ms"],
                "two_hop_p50_ms": hop["p50_ms"],
            }
            extra_queries = {
                "by_id_rps": by_id_rate,
                "two_hop_p99_ms": hop["p99_ms"],
                "two_hop_rps": hop_rate,
                "by_id_max_per_s": by_id_max["per_s"],
                "by_id_back_to_back_p50_ms": by_id_max["p50_ms"],
                "by_id_back_to_back_p99_ms": by_id_max["p99_ms"],
                "two_hop_max_per_s": hop_max["per_s"],
                "two_hop_back_to_back_p50_ms": hop_max["p50_ms"],
                "baseline_typename_per_s": base["per_s"],
                "baseline_typename_p50_ms": base["p50_ms"],
                "query_errors": sum(
                    phase["errors"] for phase in (base, by_id, by_id_max, hop, hop_max)
                ),
            }
        else:
            extra_queries = {}
        if not args.skip_subscriptions:
            equipment = [t.id for t in layout.equipment()]
            count = min(args.sub_twins, len(equipment))
            # Spread over the plant, so over the asset host processes too.
            twins = [equipment[i * len(equipment) // count] for i in range(count)]
            ws_url = url.replace("http://", "ws://", 1)
            ingest_cpu = ingest_baseline(args, twins, mqtt_port, cpu_args)
            subs = subscription_phase(
                args, ws_url, key, twins, mqtt_port, server.process.pid, broker.pid, ingest_cpu
            )
            figures["subscribers_lost"] = subs.pop("subscribers_lost")
        else:
            subs = {}
        figures |= extra_queries | subs
        for name, goal in GOALS.items():
            if name in figures:
                value = figures[name]
                met = value is not None and value <= goal
                print(f"{name}: {value} (goal {goal}) {'met' if met else 'NOT MET'}")
        if "by_id_rps" in figures:
            print(
                f"  (at {figures['by_id_rps']:,.0f} requests/s from {args.clients} clients; "
                f"capacity back to back: {figures['by_id_max_per_s']:,}/s, where p50 is "
                f"{figures['by_id_back_to_back_p50_ms']} ms = clients / throughput)"
            )
        server.stop()
        status = next((line for line in server.lines if line.startswith("stopped:")), "")
        print(f"server {status or 'stopped'} (exit {server.process.returncode})")
        problems = [i for i, line in enumerate(server.lines) if line.startswith("Traceback")]
        if problems:
            first = server.lines[problems[0] : problems[0] + 40]
            end = next((i for i, line in enumerate(first[1:], 1) if not line[:1].isspace()), 0)
            shown = "\n    ".join(first[: end + 1])
            print(f"server log: {len(problems)} tracebacks; the first:\n    {shown}")
        collected = next((line for line in server.lines if line.startswith("gc: ")), None)
        if collected:
            print(f"server's garbage collector (all threads, whole run) {collected}")
        if args.profile_api and (workdir / "api.prof").exists():
            import pstats

            print("API thread profile (cProfile slows it down; read shares, not times):")
            stats = pstats.Stats(str(workdir / "api.prof"), stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
        print(json.dumps(figures))
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if server is not None:
            server.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
