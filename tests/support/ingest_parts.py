"""Real parts for the ingest tests: parsed example models and asset hosts run in-process
(the same AssetHost the Ray fleet runs, with its write-ahead log on disk)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from twinforge.actors.asset_host import AssetHost, HostConfig, IngestResult
from twinforge.actors.write_ahead_log import Entry
from twinforge.sim.factory import MODELS_DIR
from twinforge.twin_models import ModelSet, parse_models

REPO = Path(__file__).resolve().parents[2]
PUMP = "dtmi:com:twinforge:factory:Pump;1"
CNC = "dtmi:com:twinforge:factory:CncMachine;1"


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def example_models() -> ModelSet:
    files = sorted((MODELS_DIR).glob("*.json"))
    return parse_models([f.read_text(encoding="utf-8") for f in files])


class LocalHosts:
    """Routes twins to asset hosts in this process: twin i goes to host i % hosts.

    ``fail_next`` makes that many sends fail before reaching a host (a host that is
    restarting), and ``hold`` keeps sends waiting until released.
    """

    def __init__(self, data_dir: Path, twins: dict[str, str], hosts: int = 2) -> None:
        self.placement = {twin: i % hosts for i, twin in enumerate(sorted(twins))}
        self.hosts = {
            h: AssetHost(
                h, HostConfig(data_dir), {t: twins[t] for t, p in self.placement.items() if p == h}
            )
            for h in range(hosts)
        }
        self.fail_next = 0
        self.sends = 0
        self.hold = threading.Event()
        self.hold.set()
        self._lock = threading.Lock()

    def route(self, twin_id: str) -> int | None:
        return self.placement.get(twin_id)

    def send(self, host: int, entries: list[Entry], derived: bool = True) -> Future[IngestResult]:
        future: Future[IngestResult] = Future()

        def run() -> None:
            self.hold.wait()
            with self._lock:
                self.sends += 1
                if self.fail_next:
                    self.fail_next -= 1
                    future.set_exception(ConnectionError("host restarting"))
                    return
                future.set_result(self.hosts[host].ingest(entries, derived))

        threading.Thread(target=run, daemon=True).start()
        return future

    def snapshot(self, twin_id: str) -> dict | None:
        with self._lock:
            return self.hosts[self.placement[twin_id]].snapshot(twin_id)

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
