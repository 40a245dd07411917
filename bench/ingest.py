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

``--tls`` runs the same load twice back to back, ingest on a plain listener then on a TLS
listener with a password (certificates made here), and prints ``tls_ratio`` (TLS msgs/s
over plain msgs/s; goal at least 0.8) and both lost counts.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import multiprocessing
import os
import secrets
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
from tls_certificates import TlsFiles, make_certificates

from twinforge.actors.asset_host import HostConfig
from twinforge.actors.fleet import DEFAULT_ASSETS_PER_HOST, AssetFleet
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint, parse_mqtt_url
from twinforge.connectivity.mqtt.telemetry import MqttIngest
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.metrics import ServerMetrics
from twinforge.sim.layout import load_factory_models, sample_plant
from twinforge.twin_models import parse_models
from twinforge.twin_models.elements import PrimitiveSchema

GOALS = {"msgs_per_s": 20_000, "lost": 0, "p99_ms": 100.0}
#: With --tls: TLS throughput at least 0.8 of plain, back to back, nothing lost either way.
TLS_GOALS = {"tls_ratio": 0.8, "tls_lost": 0, "plain_lost": 0}
#: The login of the TLS listener a --tls run starts (a throwaway broker).
TLS_USER, TLS_PASSWORD = "twinforge", secrets.token_urlsafe(16)


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


def start_mosquitto(
    workdir: Path, tls: TlsFiles | None = None
) -> tuple[subprocess.Popen, int, int | None]:
    """Mosquitto on a free port, plus (``tls``) a TLS listener that wants the password
    of :data:`TLS_USER`: the process and both ports."""
    port = free_port()
    config = workdir / "mosquitto.conf"
    # No limit on queued QoS 1 messages: the default (1,000 per client) drops messages
    # for a subscriber that falls behind even briefly; see deploy/mosquitto.conf.
    text = (
        "max_queued_messages 0\nmax_inflight_messages 0\npersistence false\n"
        # Run as us: started as root, Mosquitto would switch to its own user, which
        # cannot read the owner-only key and password files made here.
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
    )
    tls_port = None
    if tls is not None:
        tls_port = free_port()
        passwords = workdir / "passwords"
        passwords.write_text(f"{TLS_USER}:{TLS_PASSWORD}\n")
        passwords.chmod(0o600)
        subprocess.run(["/usr/bin/mosquitto_passwd", "-U", str(passwords)], check=True)
        # Per listener: the plain one stays anonymous for the load generator.
        text = (
            f"per_listener_settings true\n{text}listener {tls_port} 127.0.0.1\n"
            f"certfile {tls.server.cert}\nkeyfile {tls.server.key}\ncafile {tls.ca}\n"
            f"allow_anonymous false\npassword_file {passwords}\n"
        )
    config.write_text(text)
    broker = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    waiting = [p for p in (port, tls_port) if p is not None]
    while waiting and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2).close()
            waiting.pop(0)
        except OSError:
            time.sleep(0.05)
    if waiting:
        raise RuntimeError("mosquitto did not start")
    return broker, port, tls_port


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


def measure(
    args: argparse.Namespace,
    fleet: AssetFleet,
    twins: dict[str, str],
    topics,
    endpoint: MqttEndpoint,
    load_port: int,
    run_dir: Path,
) -> tuple[dict[str, object], dict[str, float], LoadResult]:
    """One load through ingest at ``endpoint`` into ``fleet``: its figures, the CPU
    seconds per process kind over the run, and the load generator's result."""
    models = parse_models([json.dumps(d) for d in load_factory_models()])
    metrics = RecordingMetrics()
    run_dir.mkdir(parents=True, exist_ok=True)
    with DeadLetterStore(run_dir / "dead.sqlite3") as letters:
        pipeline = IngestPipeline(
            TelemetryValidator(twins.get, models.interface), fleet, letters, metrics
        )
        ingest = MqttIngest(pipeline, endpoint, session_expiry_s=60).start()
        gc.collect()  # as the server does once started: full collections skip all that
        gc.freeze()
        cpu_before = cpu_seconds()
        process, queue = start_load(
            endpoint.host, load_port, topics, args.rate, args.seconds, args.chunk
        )
        if args.spy:
            (run_dir / "spy").mkdir()
            pids = {"ingest": os.getpid(), "host-0": fleet.stats()[0]["pid"]}
            spying = spy(pids, args.spy, run_dir / "spy")
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
    latencies = np.array(metrics.latencies) * 1000
    figures: dict[str, object] = {
        "msgs_per_s": round(durable / (result.seconds + drained)),
        "offered_per_s": round(result.sent / result.seconds),
        "lost": result.acked - durable - pipeline.rejected,
        "rejected": pipeline.rejected,
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 1) if len(latencies) else None,
    }
    print(
        f"{endpoint.url}: published {result.sent:,} in {result.seconds:.1f} s (broker acked"
        f" {result.acked:,}); durable in actors {durable:,}; drained {drained:.1f} s after"
        " the load ended"
    )
    window = result.seconds + drained
    cpu = {kind: after - cpu_before.get(kind, 0.0) for kind, after in cpu_after.items()}
    for kind, used in sorted(cpu.items()):
        print(f"cpu {kind}: {used:.1f} s ({used / window:.0%} of one core)")
    print(f"cpu load generator: {result.cpu_s:.1f} s")
    if args.timeline:
        print_timeline(metrics)
    if args.spy:
        spying.join()
        print_spy(run_dir / "spy")
    return figures, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=1000, help="equipment twins")
    parser.add_argument("--rate", type=float, default=20_000, help="offered msgs/s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--assets-per-host", type=int, default=DEFAULT_ASSETS_PER_HOST)
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--broker", help="mqtt://host:port (default: start a Mosquitto here)")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="run the load twice, ingest over plain MQTT then over TLS with a password,"
        " and print tls_ratio (a Mosquitto started here; not with --broker)",
    )
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
    if args.tls and args.broker:
        parser.error("--tls starts its own Mosquitto (with certificates made here): drop --broker")

    workdir = Path(tempfile.mkdtemp(prefix="twinforge-bench-ingest-"))
    broker = None
    tls_files = make_certificates(workdir / "certs") if args.tls else None
    tls_port = None
    if args.broker:
        endpoint = parse_mqtt_url(args.broker)
    else:
        broker, port, tls_port = start_mosquitto(workdir, tls_files)
        endpoint = MqttEndpoint("127.0.0.1", port)
    try:
        twins, topics = telemetry_topics(args.assets)
        print(f"plant: {len(twins)} twins, {len(topics)} publishing equipment")
        base = None
        if not args.tls:  # with --tls, the plain run is the baseline
            base = baseline(
                endpoint.host, endpoint.port, topics, args.rate * 2, args.baseline_seconds
            )
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
        figures, _cpu, _result = measure(
            args, fleet, twins, topics, endpoint, endpoint.port, workdir / "plain"
        )
        if tls_files is not None and tls_port is not None:
            # The load generator stays on the plain listener: what is measured is the
            # server's side of TLS, its one connection to the broker.
            secure = MqttEndpoint(
                "127.0.0.1",
                tls_port,
                tls=True,
                ca_file=tls_files.ca,
                username=TLS_USER,
                password=TLS_PASSWORD,
            )
            tls_figures, _tls_cpu, _ = measure(
                args, fleet, twins, topics, secure, endpoint.port, workdir / "tls"
            )
            plain_rate = figures["msgs_per_s"]
            figures = {
                "tls_ratio": round(tls_figures["msgs_per_s"] / max(plain_rate, 1), 3),  # type: ignore[operator]
                "tls_msgs_per_s": tls_figures["msgs_per_s"],
                "tls_lost": tls_figures["lost"],
                "tls_p99_ms": tls_figures["p99_ms"],
                "plain_msgs_per_s": plain_rate,
                "plain_lost": figures["lost"],
                "plain_p99_ms": figures["p99_ms"],
                "offered_per_s": figures["offered_per_s"],
            }
            goals = TLS_GOALS
        else:
            goals = GOALS
        stats = fleet.stats()
        rss = sum(s["rss_mb"] for s in stats)
        fleet.close()
        ray.shutdown()
        figures["rss_per_asset_mb"] = round(rss / len(twins), 3)
        figures["host_processes"] = len(stats)
        if base is not None:
            figures["baseline_paho_msgs_per_s"] = round(base)
        for name, goal in goals.items():
            value = figures[name]
            higher = name in ("msgs_per_s", "tls_ratio")
            ok = value is not None and (value >= goal if higher else value <= goal)  # type: ignore[operator]
            print(f"{name}: {value} (goal {goal}) {'met' if ok else 'NOT MET'}")
        print(json.dumps(figures))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
