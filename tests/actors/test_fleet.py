"""The asset fleet on a real Ray cluster: hosting, ingest, crashes and restarts.

Real Ray, real host processes killed with SIGKILL, real write-ahead logs on disk. The
single-node tests share one local cluster (``ray_cluster`` in conftest.py); the two-node
scale-out runs ``_cluster_scenario.py`` in a subprocess with a cluster of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest
from support.fmus import FAULTY, faulty_plan

from twinforge.actors.asset_host import IngestResult
from twinforge.actors.fleet import AssetFleet
from twinforge.actors.physics import QUARANTINE_AFTER
from twinforge.actors.write_ahead_log import Entry

MODEL = "dtmi:twinforge:test:Machine;1"
HERE = Path(__file__).resolve().parent


def twins(n: int) -> dict[str, str]:
    return {f"machine-{i:03d}": MODEL for i in range(n)}


def batches(fleet: AssetFleet, values: dict[str, dict], time_: float) -> dict[int, list[Entry]]:
    """One entry per twin (twin id -> values), grouped by the host that owns the twin."""
    by_host: dict[int, list[Entry]] = {}
    for twin, fields in values.items():
        host = fleet.route(twin)
        assert host is not None, twin
        by_host.setdefault(host, []).append((twin, "telemetry", fields, time_, time.time()))
    return by_host


def ingest(fleet: AssetFleet, names: list[str], rounds: range) -> None:
    """Round k gives every twin ``{"seq": k, "temperature": 20 + k}`` at source time k."""
    futures: list[Future[IngestResult]] = []
    for k in rounds:
        values = {t: {"seq": k, "temperature": 20.0 + k} for t in names}
        futures += [fleet.send(h, e) for h, e in batches(fleet, values, float(k)).items()]
    for future in futures:
        assert future.result(timeout=120).applied > 0


def dashboard_name(ray, handle) -> str:
    """The actor's ``repr`` as the GCS keeps it: what the Ray dashboard shows."""
    from ray.core.generated import gcs_pb2

    accessor = ray._private.state.state._connect_and_get_accessor()
    info = accessor.get_actor_info(handle._actor_id)
    return gcs_pb2.ActorTableData.FromString(info).repr_name


def host_repr(ray, fleet: AssetFleet, host: int) -> str:
    return ray.get(fleet.handle(host).__ray_call__.remote(lambda self: repr(self)))


def kill_host(fleet: AssetFleet, host: int) -> int:
    """SIGKILL a host's process; returns its pid."""
    pid = next(s["pid"] for s in fleet.stats() if s["host"] == host)
    os.kill(pid, signal.SIGKILL)
    return pid


def has_checkpoint(data_dir: Path, host: int) -> bool:
    return (data_dir / "actors" / f"host-{host:04d}.state").exists()


# -- hosting and ingest ----------------------------------------------------------------


def test_250_assets_on_three_hosts_ingest_and_show_their_state(ray_cluster, make_fleet):
    ray = ray_cluster
    fleet = make_fleet(assets_per_host=100)
    assets = twins(250)
    fleet.add(assets)

    assert fleet.directory.hosts() == {0: 100, 1: 100, 2: 50}
    stats = fleet.stats()
    assert [(s["host"], s["assets"]) for s in stats] == [(0, 100), (1, 100), (2, 50)]
    assert len({s["pid"] for s in stats}) == 3  # three processes
    assert fleet.route("machine-000") == 0 and fleet.route("machine-249") == 2

    names = sorted(assets)
    ingest(fleet, names, range(1, 6))
    # Some twins also get a component field, in a batch of their own.
    extra = {t: {"motor/speed": 1500} for t in names[::50]}
    for host, entries in batches(fleet, extra, 6.0).items():
        assert fleet.send(host, entries).result(timeout=60).applied == len(entries)

    snap = fleet.snapshot("machine-123")
    assert snap is not None
    assert snap["twinId"] == "machine-123" and snap["model"] == MODEL
    assert snap["messages"] == 5
    assert snap["last"]["temperature"]["value"] == 25.0
    assert snap["last"]["temperature"]["sourceTime"] == 5.0
    assert snap["alarms"] == []
    assert fleet.snapshot("machine-150")["last"]["motor/speed"]["value"] == 1500
    assert fleet.series("machine-249", "seq") == {
        "times": [1.0, 2.0, 3.0, 4.0, 5.0],
        "values": [1.0, 2.0, 3.0, 4.0, 5.0],
    }
    assert fleet.series("machine-249", "temperature", 2)["values"] == [24.0, 25.0]
    assert fleet.series("machine-249", "no-such-field") == {"times": [], "values": []}
    assert fleet.snapshot("no-such-twin") is None
    assert sum(s["messages"] for s in fleet.stats()) == 250 * 5 + len(extra)

    # A host's repr lists its assets, and the dashboard shows it as the actor's name.
    assert host_repr(ray, fleet, 2) == (
        "AssetHost-2[machine-200, machine-201, machine-202, machine-203, +46 more]"
    )
    assert dashboard_name(ray, fleet.handle(0)) == (
        "AssetHost-0[machine-000, machine-001, machine-002, machine-003, +96 more]"
    )

    # A removed asset stays removed when Ray restarts its host (and re-runs __init__).
    fleet.remove(["machine-200"])
    old_pid = kill_host(fleet, 2)
    assert fleet.snapshot("machine-201")["messages"] == 5  # waits for the restart
    restarted = fleet.stats()[2]
    assert restarted["pid"] != old_pid
    assert restarted["assets"] == 49
    assert fleet.snapshot("machine-200") is None
    assert ray.get(fleet.handle(2).snapshot.remote("machine-200")) is None
    assert dashboard_name(ray, fleet.handle(2)).startswith("AssetHost-2[machine-201, ")


# -- a host process killed mid-stream --------------------------------------------------


class Sender(threading.Thread):
    """Sends round after round (every twin's ``seq`` = the round) with several batches in
    flight, and records what each acknowledgement (a done future) covered."""

    def __init__(self, fleet: AssetFleet, names: list[str], in_flight: int = 8) -> None:
        super().__init__(daemon=True)
        self.fleet, self.names, self.in_flight = fleet, names, in_flight
        self.acked: dict[str, set[int]] = {t: set() for t in names}
        self.rounds_acked = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        pending: deque[tuple[int, Future[IngestResult], list[Entry]]] = deque()
        k = 0
        try:
            while not self.stop.is_set():
                k += 1
                values = {t: {"seq": k} for t in self.names}
                for host, entries in batches(self.fleet, values, float(k)).items():
                    pending.append((k, self.fleet.send(host, entries), entries))
                while len(pending) > self.in_flight:
                    self._settle(*pending.popleft())
            while pending:
                self._settle(*pending.popleft())
        except BaseException as error:  # surfaced by the test
            self.errors.append(error)

    def _settle(self, k: int, future: Future[IngestResult], entries: list[Entry]) -> None:
        applied = future.result(timeout=120).applied
        assert applied == len(entries), (applied, len(entries))
        for twin, *_ in entries:
            self.acked[twin].add(k)
        self.rounds_acked = k


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_host_killed_mid_stream_loses_no_acknowledged_message(ray_cluster, make_fleet, tmp_path):
    # Checkpoints every 10 batches, so the restart loads a checkpoint and replays the rest.
    fleet = make_fleet(assets_per_host=10, capacity=100_000, checkpoint_after_batches=10)
    names = sorted(twins(20))
    fleet.add(dict.fromkeys(names, MODEL))

    sender = Sender(fleet, names)
    sender.start()
    try:
        wait_for(lambda: sender.rounds_acked >= 40, 60, "40 acknowledged rounds")
        old_pid = kill_host(fleet, 0)
        killed_at_round = sender.rounds_acked
        wait_for(
            lambda: sender.rounds_acked >= killed_at_round + 40 or bool(sender.errors),
            90,
            "40 more rounds after the kill",
        )
    finally:
        sender.stop.set()
        sender.join(timeout=120)
    assert not sender.is_alive()
    assert sender.errors == []  # every send was acknowledged in the end (Ray retried)

    stats = {s["host"]: s for s in fleet.stats()}
    assert stats[0]["pid"] != old_pid  # Ray restarted the killed process
    assert stats[0]["replayed"] > 0 or has_checkpoint(tmp_path / "data", 0)

    duplicates = 0
    for twin in names:
        series = fleet.series(twin, "seq")
        values = [int(v) for v in series["values"]]
        missing = sender.acked[twin] - set(values)
        assert not missing, f"{twin}: acknowledged but lost: {sorted(missing)[:10]}"
        assert set(values) <= set(range(1, sender.rounds_acked + 1))  # nothing made up
        assert fleet.snapshot(twin)["messages"] == len(values)
        duplicates += len(values) - len(set(values))
    # At-least-once: a batch logged just before the kill, but not acknowledged, is logged
    # again when Ray retries it, so a twin can see a round twice; never more than the
    # batches in flight at the kill.
    assert duplicates <= sender.in_flight * len(names)


def test_an_fmu_that_crashes_its_host_costs_a_restart_and_is_quarantined(
    ray_cluster, make_fleet, test_fmus
):
    # From source time 5 on the FMU dereferences NULL inside doStep: the host process dies
    # in the live batch, then again in each replay of it, until the restarted host counts
    # QUARANTINE_AFTER crashes and replays without that twin's physics.
    plan = faulty_plan(test_fmus["faulty"], fail_at=5.0, fail_mode=4)
    fleet = make_fleet(assets_per_host=10, physics=(plan,))
    machines = sorted(twins(3))
    fleet.add({"faulty-01": FAULTY, **dict.fromkeys(machines, MODEL)})
    old_pid = next(s["pid"] for s in fleet.stats())
    results: list[IngestResult] = []
    for k in range(1, 9):
        values = {"faulty-01": {"u": 1.0, "y": float(k)}}
        values |= {t: {"seq": k, "temperature": 20.0 + k} for t in machines}
        for host, entries in batches(fleet, values, float(k)).items():
            results.append(fleet.send(host, entries).result(timeout=240))
    assert all(r.applied == 4 for r in results)  # every batch acknowledged, in the end
    assert next(s["pid"] for s in fleet.stats()) != old_pid
    status = fleet.physics_status("faulty-01")
    assert status["quarantined"] and status["crashes"] == QUARANTINE_AFTER, status
    [off] = [off for r in results for off in r.physics_off]
    assert off.twin_id == "faulty-01" and off.quarantined and "crashed the host" in off.reason
    assert [len(r.derived) for r in results[:4]] == [1] * 4  # physics ran until the crash
    # Nothing acknowledged is lost, for the twin whose FMU crashed nor for its neighbours.
    assert [int(v) for v in fleet.series("faulty-01", "y")["values"]] == list(range(1, 9))
    for twin in machines:
        assert [int(v) for v in fleet.series(twin, "seq")["values"]] == list(range(1, 9))


# -- restarting the whole fleet --------------------------------------------------------


@pytest.mark.parametrize("stop", ["close", "kill"])
def test_fleet_restart_brings_every_asset_back_on_its_host(ray_cluster, make_fleet, stop):
    ray = ray_cluster
    fleet = make_fleet(assets_per_host=5)
    names = sorted(twins(12))
    fleet.add(dict.fromkeys(names, MODEL))
    ingest(fleet, names, range(1, 4))
    fleet.checkpoint()  # a checkpoint, then more: the restart needs both
    ingest(fleet, names, range(4, 7))
    fleet.remove(["machine-011"])
    placement = {t: fleet.route(t) for t in names}
    before = {t: fleet.snapshot(t) for t in names}
    old_stats = fleet.stats()

    if stop == "close":
        fleet.close()  # final checkpoint, processes stopped
    else:  # the hosts die without a final checkpoint (and the server with them)
        for handle in fleet._handles.values():
            ray.kill(handle, no_restart=True)
        fleet.directory.close()
        for s in old_stats:
            wait_for(lambda pid=s["pid"]: not Path(f"/proc/{pid}").exists(), 30, "exit")

    again = make_fleet(assets_per_host=5)
    assert {t: again.route(t) for t in names} == placement
    assert placement["machine-011"] is None
    assert {t: again.snapshot(t) for t in names} == before
    assert again.series("machine-007", "seq")["values"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    new_stats = again.stats()
    assert [(s["host"], s["assets"]) for s in new_stats] == [(0, 5), (1, 5), (2, 1)]
    assert not {s["pid"] for s in new_stats} & {s["pid"] for s in old_stats}
    replayed = [s["replayed"] for s in new_stats]
    if stop == "close":
        assert replayed == [0, 0, 0]  # everything was in the final checkpoint
    else:  # the checkpoint, then the three rounds logged after it
        assert replayed == [15, 15, 3]

    ingest(again, names[:-1], range(7, 8))  # and it carries on
    assert again.snapshot("machine-010")["last"]["seq"]["value"] == 7


# -- scale out: two nodes, one dies ----------------------------------------------------


@pytest.mark.slow
def test_hosts_spread_over_two_nodes_and_survive_losing_one(tmp_path):
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(HERE / "_cluster_scenario.py"), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=HERE.parents[1],
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    head, node2 = result["nodes"]["head"], result["nodes"]["node2"]

    # Hosts ran on both nodes ...
    assert {s["node"] for s in result["before"]} == {head, node2}
    # ... and after the second node died every host answered again, from the head, with
    # everything acknowledged before the kill; the hosts that moved came back from their
    # checkpoints and logs (how much from which depends on when the last checkpoint was).
    assert all(s["node"] == head for s in result["after"])
    moved = {s["host"] for s in result["before"] if s["node"] == node2}
    for s in result["after"]:
        assert s["assets"] == 4
        assert (s["restored"] + s["replayed"] > 0) == (s["host"] in moved)
    acked = result["acked_before_kill"]
    assert set(result["messages_after_kill"].values()) == {acked}
    assert set(result["last_after_kill"].values()) == {acked}
    assert result["final"] == result["sent"]  # and it kept ingesting afterwards
    assert result["leftover_pids"] == []  # every Ray process it started is gone
