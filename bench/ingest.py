"""Benchmark: MQTT telemetry into live asset actors, with zero loss.

A real Mosquitto (started here with a config of our own, or ``--broker URL``) carries
QoS 1 telemetry for the sample plant's equipment from a load generator (another process)
to twinforge's ingest: paho-mqtt subscriber, DTDL validation, batches to the asset hosts on
Ray, acknowledged once in the hosts' write-ahead logs. Prints sustained msgs/s, loss
(messages the broker acknowledged to the publisher but no asset holds), p50/p99 latency
from the publisher's timestamp to durable actor state, and RSS per asset.

Baseline in the same run: a bare paho subscriber on the same broker and load (no
validation, no actors, acks at once), i.e. what the MQTT client alone can take.
Goal: 20,000 msgs/s sustained for 60 s, zero loss, p99 under 100 ms; 1,000 assets in
under 8 GiB.

    uv run python bench/ingest.py [--assets 1000] [--rate 20000] [--seconds 60] [--spy 10]

The last line is JSON: {"msgs_per_s": ..., "lost": ..., "p99_ms": ..., "rss_per_asset_mb": ...}.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from mqtt_load import CHUNK, LoadResult, publish_load
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twinforge.actors.asset_host import HostConfig
from twinforge.actors.fleet import DEFAULT_ASSETS_PER_HOST, AssetFleet
from twinforge.connectivity.mqtt.telemetry import MqttIngest
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.metrics import ServerMetrics
from twinforge.sim.layout import load_factory_models, sample_plant
from twinforge.twin_models import parse_models
from twinforge.twin_models.elements import PrimitiveSchema

GOALS = {"msgs_per_s": 20_000, "lost": 0, "p99_ms": 100.0}


class RecordingMetrics(ServerMetrics):
    """Keeps every latency too, for exact percentiles, and when each batch was durable."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies: list[float] = []
        self.batches: list[tuple[float, int]] = []  # (durable at, latencies recorded)

    def latency(self, seconds) -> None:  # type: ignore[override]
        values = list(seconds)
        self.latencies.extend(values)
        self.batches.append((time.monotonic(), len(values)))
        super().latency(values)


def print_timeline(metrics: RecordingMetrics, window_s: float = 2.0) -> None:
    """Latency by the window in which messages became durable: when the slow ones were."""
    if not metrics.batches:
        return
    start = metrics.batches[0][0]
    windows: dict[int, list[float]] = {}
    at = 0
    for durable_at, count in metrics.batches:
        bucket = windows.setdefault(int((durable_at - start) // window_s), [])
        bucket.extend(metrics.latencies[at : at + count])
        at += count
    print(f"latency by {window_s:g} s window (ms): window start, messages, p50, p99, max")
    for index, values in sorted(windows.items()):
        ms = np.array(values) * 1000
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        print(f"  {index * window_s:6.0f} s {len(values):7,} {p50:8.1f} {p99:8.1f} {ms.max():8.1f}")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process and its descendants (the local Ray
    cluster, the broker, the load generator), by kind of process."""
    import psutil

    me = psutil.Process()
    totals: dict[str, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:  # exited meanwhile
            continue
        if proc.pid == me.pid:
            kind = "ingest (this process)"
        elif "AssetHost" in cmdline:
            kind = "asset hosts"
        elif "mosquitto" in cmdline:
            kind = "mosquitto"
        else:
            kind = "ray (raylet, gcs, idle workers)"
        totals[kind] = totals.get(kind, 0.0) + times.user + times.system
    return totals


def spy(pids: dict[str, int], seconds: float, out: Path) -> threading.Thread:
    """Sample where each process spends its time (py-spy, GIL holder only) once the load
    is running; :func:`print_spy` reads the result."""

    def run() -> None:
        time.sleep(3)  # past the connection's start
        py_spy = Path(sys.executable).with_name("py-spy")
        runs = [
            subprocess.Popen(
                [
                    str(py_spy),
                    "record",
                    "--gil",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(seconds)),
                    "-o",
                    str(out / name),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in pids.items()
        ]
        for process in runs:
            process.wait()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def print_spy(out: Path, top: int = 25) -> None:
    """The functions holding the GIL most often, per process: with what they call
    (inclusive), then on their own (self)."""
    for path in sorted(out.iterdir()):
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        total = 0
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            total += int(n)
            own[frames[-1]] += int(n)
            inclusive.update(dict.fromkeys(frames, int(n)))
        print(f"py-spy {path.name}: {total} samples holding the GIL")
        for title, counts in (("inclusive", inclusive), ("self", own)):
            print(f"  {title}:")
            for frame, n in counts.most_common(top):
                print(f"  {n / max(total, 1):6.1%} {frame}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    # No limit on queued QoS 1 messages: the default (1,000 per client) drops messages
    # for a subscriber that falls behind even briefly; see deploy/mosquitto.conf.
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "max_inflight_messages 0\npersistence false\n"
    )
    broker = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return broker, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def telemetry_topics(assets: int) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    layout = sample_plant(equipment=assets)
    models = parse_models([json.dumps(d) for d in load_factory_models()])
    twins = {t.id: t.model for t in layout.twins}
    topics = []
    for twin in layout.equipment():
        interface = models.interface(twin.model)
        fields = [
            name
            for name, telemetry in interface.telemetries.items()
            if isinstance(telemetry.schema, PrimitiveSchema) and telemetry.schema.name == "double"
        ]
        topics.append((f"twins/{twin.id}/telemetry", fields))
    return twins, topics


def run_load(queue, host: str, port: int, topics, rate: float, seconds: float, chunk: int) -> None:
    queue.put(publish_load(host, port, topics, rate=rate, seconds=seconds, per_write=chunk))


def start_load(host: str, port: int, topics, rate: float, seconds: float, chunk: int = CHUNK):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=run_load, args=(queue, host, port, topics, rate, seconds, chunk)
    )
    process.start()
    return process, queue


def baseline(host: str, port: int, topics, rate: float, seconds: float) -> float:
    """Messages/s a bare paho subscriber takes (acks from a thread, like the ingest)."""
    received = 0
    to_ack: list[int] = []
    lock = threading.Lock()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bench-baseline-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )

    def on_message(_c, _u, message) -> None:
        nonlocal received
        received += 1
        with lock:
            to_ack.append(message.mid)

    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = 65535
    client.connect(host, port, properties=properties)
    client.subscribe("twins/+/telemetry", qos=1)
    client.loop_start()
    time.sleep(0.5)
    stop = threading.Event()

    def acker() -> None:
        while not stop.is_set():
            time.sleep(0.005)
            with lock:
                mids, to_ack[:] = list(to_ack), []
            for mid in mids:
                client.ack(mid, 1)

    threading.Thread(target=acker, daemon=True).start()
    process, queue = start_load(host, port, topics, rate, seconds)
    result: LoadResult = queue.get()
    process.join()
    load_end = time.monotonic()
    while received < result.acked and time.monotonic() < load_end + 30:
        time.sleep(0.01)
    elapsed = result.seconds + (time.monotonic() - load_end)  # the load, then the drain
    stop.set()
    client.disconnect()
    client.loop_stop()
    return received / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=1000, help="equipment twins")
    parser.add_argument("--rate", type=float, default=20_000, help="offered msgs/s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--assets-per-host", type=int, default=DEFAULT_ASSETS_PER_HOST)
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--broker", help="mqtt://host:port (default: start a Mosquitto here)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=CHUNK,
        help="messages per write of the load generator (1: spread evenly, as sensors do)",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="print latency per 2 s window of the run"
    )
    parser.add_argument(
        "--spy", type=float, default=0, help="sample this process and a host with py-spy (s)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="twinforge-bench-ingest-"))
    broker = None
    if args.broker:
        host, _, port_text = args.broker.removeprefix("mqtt://").partition(":")
        port = int(port_text or 1883)
    else:
        broker, port = start_mosquitto(workdir)
        host = "127.0.0.1"
    try:
        twins, topics = telemetry_topics(args.assets)
        print(f"plant: {len(twins)} twins, {len(topics)} publishing equipment")
        base = baseline(host, port, topics, args.rate * 2, args.baseline_seconds)
        print(f"baseline: bare paho subscriber takes {base:,.0f} msgs/s")

        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        fleet = AssetFleet(HostConfig(workdir / "data"), assets_per_host=args.assets_per_host)
        fleet.add(twins)
        stats = fleet.stats()
        rss = sum(s["rss_mb"] for s in stats)
        print(
            f"fleet: {len(twins)} assets on {len(stats)} host processes in "
            f"{time.perf_counter() - started:.1f} s, {rss:,.0f} MB RSS"
        )
        models = parse_models([json.dumps(d) for d in load_factory_models()])
        metrics = RecordingMetrics()
        with DeadLetterStore(workdir / "dead.sqlite3") as letters:
            pipeline = IngestPipeline(
                TelemetryValidator(twins.get, models.interface), fleet, letters, metrics
            )
            ingest = MqttIngest(pipeline, host, port, session_expiry_s=60).start()
            gc.collect()  # as the server does once started: full collections skip all that
            gc.freeze()
            cpu_before = cpu_seconds()
            process, queue = start_load(host, port, topics, args.rate, args.seconds, args.chunk)
            if args.spy:
                (workdir / "spy").mkdir()
                pids = {"ingest": os.getpid(), "host-0": stats[0]["pid"]}
                spying = spy(pids, args.spy, workdir / "spy")
            result: LoadResult = queue.get()
            process.join()
            load_end = time.monotonic()
            # Drain the backlog; give up only when nothing arrives for 30 s (then what is
            # missing is lost, not late).
            done, progress_at = 0, time.monotonic()
            while pipeline.accepted + pipeline.rejected < result.acked:
                if pipeline.accepted + pipeline.rejected > done:
                    done, progress_at = pipeline.accepted + pipeline.rejected, time.monotonic()
                elif time.monotonic() - progress_at > 30:
                    break
                time.sleep(0.05)
            drained = time.monotonic() - load_end
            cpu_after = cpu_seconds()
            ingest.stop()
            pipeline.close()
        durable = pipeline.accepted
        held = sum(s["messages"] for s in fleet.stats())
        stats = fleet.stats()
        rss = sum(s["rss_mb"] for s in stats)
        fleet.close()
        ray.shutdown()
        lost = result.acked - durable - pipeline.rejected
        latencies = np.array(metrics.latencies) * 1000
        figures = {
            "msgs_per_s": round(durable / (result.seconds + drained)),
            "offered_per_s": round(result.sent / result.seconds),
            "lost": lost,
            "rejected": pipeline.rejected,
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if len(latencies) else None,
            "rss_per_asset_mb": round(rss / len(twins), 3),
            "host_processes": len(stats),
            "baseline_paho_msgs_per_s": round(base),
        }
        print(
            f"published {result.sent:,} in {result.seconds:.1f} s (broker acked {result.acked:,}); "
            f"durable in actors {durable:,} (asset state holds {held:,}); drained "
            f"{drained:.1f} s after the load ended"
        )
        window = result.seconds + drained
        for kind, after in sorted(cpu_after.items()):
            used = after - cpu_before.get(kind, 0.0)
            print(f"cpu {kind}: {used:.1f} s ({used / window:.0%} of one core)")
        print(f"cpu load generator: {result.cpu_s:.1f} s")
        for name, goal in GOALS.items():
            value = figures[name]
            ok = value is not None and (value >= goal if name == "msgs_per_s" else value <= goal)
            print(f"{name}: {value} (goal {goal}) {'met' if ok else 'NOT MET'}")
        if args.timeline:
            print_timeline(metrics)
        if args.spy:
            spying.join()
            print_spy(workdir / "spy")
        print(json.dumps(figures))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
