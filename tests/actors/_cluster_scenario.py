"""Scale-out scenario, run by ``test_fleet.py`` in a subprocess: a two-node Ray cluster.

Starts a Ray head and a second node on this machine (``ray start --block``, each in its own
process group and temp dir, so nothing else on the machine is touched), runs a fleet whose
hosts spread over both nodes, ingests, kills the second node (its Ray processes and the
host processes on it, SIGKILL) and checks that every host answers again from the head with
everything that was acknowledged. Prints one JSON line ``RESULT {...}`` for the test.

Usage: python _cluster_scenario.py DATA_DIR
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before Ray is imported (this process and every Ray process it starts inherit them).
os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"  # don't package the working tree
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Token auth with a token of our own, shared by the head, the second node and the driver.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
# Notice a dead node in a few seconds rather than the default half minute (Ray's
# configuration variables are spelled in lower case after the prefix).
os.environ["RAY_health_check_initial_delay_ms"] = "1000"  # noqa: SIM112
os.environ["RAY_health_check_period_ms"] = "1000"  # noqa: SIM112
os.environ["RAY_health_check_timeout_ms"] = "1000"  # noqa: SIM112
os.environ["RAY_health_check_failure_threshold"] = "3"  # noqa: SIM112

import ray

from twinforge.actors.asset_host import HostConfig
from twinforge.actors.fleet import AssetFleet

HOSTS = 6
ASSETS_PER_HOST = 4
MODEL = "dtmi:twinforge:test:Machine;1"
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(temp_dir: Path, *args: str) -> subprocess.Popen:
    """``ray start ... --block`` as the leader of a new process group."""
    command = [
        RAY,
        "start",
        "--block",
        "--num-cpus=1",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
        *args,
    ]
    log = open(temp_dir.parent / f"{temp_dir.name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _processes_under(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (our temp dirs): the Ray processes we
    started, workers included (Ray puts each worker in a process group of its own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _connect(address: str) -> None:
    """``ray.init`` until the head answers: its port opens before its GCS serves, and on a
    loaded 2-core CI machine the driver's first connect timed out waiting for it."""
    deadline = time.monotonic() + 90
    while True:
        try:
            ray.init(address=address, log_to_driver=False)
            return
        except (ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            ray.shutdown()
            time.sleep(1)


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def _alive_nodes() -> dict[str, dict]:
    return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}


def scenario(data_dir: Path, root: Path) -> dict:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start_node(root / "head", "--head", f"--port={port}", "--include-dashboard=false")
    second: subprocess.Popen | None = None
    try:
        _wait(lambda: _port_open(port), 60, "the head's GCS")
        second = _start_node(root / "node2", f"--address={address}", '--resources={"node2": 1}')
        _connect(address)
        nodes = _wait(lambda: len(_alive_nodes()) == 2 and _alive_nodes(), 60, "two nodes")
        node2 = next(n for n, info in nodes.items() if "node2" in info["Resources"])
        # A node counts as alive before the scheduler's view of its resources catches up;
        # until then SPREAD places every actor on the head (seen on loaded machines, CI
        # included). The GCS knowing node2 is not enough: the head's raylet, which places
        # the driver's actors, must too, and a task that needs node2's resource runs only
        # once it does.
        _wait(lambda: ray.available_resources().get("node2"), 60, "node2 schedulable")
        probe = ray.remote(num_cpus=0, resources={"node2": 0.01})(_node_id)
        assert ray.get(probe.remote(), timeout=60) == node2
        head_node = next(n for n in nodes if n != node2)

        fleet = AssetFleet(
            HostConfig(data_dir, capacity=10_000, checkpoint_after_batches=5),
            assets_per_host=ASSETS_PER_HOST,
        )
        twins = [f"machine-{i:03d}" for i in range(HOSTS * ASSETS_PER_HOST)]
        fleet.add(dict.fromkeys(twins, MODEL))
        before = fleet.stats()

        sent = dict.fromkeys(twins, 0)

        def ingest(rounds: int) -> None:
            futures = []
            for _ in range(rounds):
                by_host: dict[int, list] = {}
                for twin in twins:
                    sent[twin] += 1
                    entry = (
                        twin,
                        "telemetry",
                        {"count": sent[twin]},
                        float(sent[twin]),
                        time.time(),
                    )
                    by_host.setdefault(fleet.route(twin), []).append(entry)
                futures += [fleet.send(host, entries) for host, entries in by_host.items()]
            for future in futures:
                future.result(timeout=120)

        ingest(12)  # acknowledged: durable in the hosts' logs

        # The second node dies: its Ray processes and the host processes it ran.
        victims = [s["pid"] for s in before if s["node"] == node2]
        _kill_group(second)
        _kill(victims)
        killed_at = time.monotonic()
        _wait(lambda: node2 not in _alive_nodes(), 60, "the second node to be declared dead")
        dead_after_s = time.monotonic() - killed_at

        after = fleet.stats()  # every host answers again (restarted on the head)
        failover_s = time.monotonic() - killed_at
        snapshots = {twin: fleet.snapshot(twin) for twin in twins}
        ingest(3)  # and keeps ingesting
        final = {twin: fleet.snapshot(twin)["messages"] for twin in twins}
        fleet.close()
        return {
            "nodes": {"head": head_node, "node2": node2},
            "before": before,
            "after": after,
            "dead_after_s": dead_after_s,
            "failover_s": failover_s,
            "acked_before_kill": 12,
            "messages_after_kill": {t: s["messages"] for t, s in snapshots.items()},
            "last_after_kill": {t: s["last"]["count"]["value"] for t, s in snapshots.items()},
            "sent": sent,
            "final": final,
        }
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if second is not None and second.poll() is None:
            _kill_group(second)
        # A graceful stop of the head (SIGTERM to ``ray start --block``) lets it stop its
        # own children; whatever is left of ours (workers) is killed by pid.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_group(head)
        _kill(_processes_under(str(root)))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    data_dir = Path(sys.argv[1])
    # Short: Ray puts unix sockets under the temp dir (107-byte path limit).
    root = Path(tempfile.mkdtemp(prefix="tfray-", dir="/tmp"))
    result = scenario(data_dir, root)
    leftovers = _processes_under(str(root))
    result["leftover_pids"] = leftovers
    shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
