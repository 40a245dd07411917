"""The fleet of asset hosts on Ray: placement, routing and supervision.

Each host is a named Ray actor (``asset-host-N``) that Ray restarts after a crash,
anywhere in the cluster (hosts spread over the nodes); a restarted host rebuilds its
assets from its write-ahead log under the shared data dir, and calls that were in flight
are retried by Ray, so a caller that waited for ``ingest`` never loses what it sent.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

# Under `uv run`, Ray would re-package this checkout for every worker; the workers use
# the same environment anyway. Read when Ray is imported, so set before.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import ray
from ray.actor import ActorHandle

from twinforge.actors.alarms import Alarm
from twinforge.actors.asset_host import AssetHost, HostConfig, IngestResult
from twinforge.actors.directory import AssetDirectory
from twinforge.ingest.messages import Entry
from twinforge.physics.asset_physics import PhysicsState
from twinforge.physics.checks import PhysicsPlan
from twinforge.physics.errors import PhysicsError
from twinforge.physics.fmi import LoadedFmu
from twinforge.physics.what_if import WhatIf, WhatIfResult, simulate
from twinforge.runtime.history import open_history_store

log = logging.getLogger(__name__)

#: Measured with bench/ingest.py (1,348 assets of the sample plant): a host process is
#: about 110 MB, and each Ray call costs the host about 1.5 ms of CPU and the sender as
#: much, so fewer hosts get more messages per call. At 250 per host: six processes,
#: 0.67 GB, 7,012 msgs/s; at 700: two processes, 0.22 GB, 7,687 msgs/s, and at 1,000
#: msgs/s spread evenly the hosts used 57% of a core against 72%. A crash replays one
#: host's log only.
DEFAULT_ASSETS_PER_HOST = 700


class AssetHostProcess(AssetHost):
    """An asset host as what its Ray actor process is for.

    Once started, its objects and Ray's (about 85,000) are frozen out of the garbage
    collector: every full collection walked them, for 50-150 ms during which the host
    ingested nothing (measured at 10,000 msgs/s; the p99 latency was those pauses).
    """

    def __init__(self, host_id: int, config: HostConfig, assets: dict[str, str] | None = None):
        super().__init__(host_id, config, assets)
        gc.collect()
        gc.freeze()
        sys.setswitchinterval(0.001)


_RemoteHost = ray.remote(AssetHostProcess)


@ray.remote(num_cpus=0)
def _simulate(plan: PhysicsPlan, state: PhysicsState, request: WhatIf, data_dir: str) -> Any:
    fmu = LoadedFmu(plan.fmu, work_dir=Path(data_dir) / "physics" / "unpacked")
    try:
        return simulate(plan, fmu, state, request)
    finally:
        fmu.close()


class AssetFleet:
    """Asset hosts on the connected Ray cluster; ``ray.init`` must have been called."""

    def __init__(
        self,
        config: HostConfig,
        *,
        assets_per_host: int = DEFAULT_ASSETS_PER_HOST,
        namespace: str | None = None,
    ) -> None:
        if not ray.is_initialized():
            raise RuntimeError("AssetFleet needs Ray: call ray.init() first")
        self.config = replace(config, data_dir=config.data_dir.resolve())
        # Host actors are named per data dir, so two fleets in one Ray cluster (tests, or
        # two plants) never attach to each other's hosts.
        digest = hashlib.sha1(str(self.config.data_dir).encode()).hexdigest()[:10]
        self.namespace = namespace or f"twinforge-{digest}"
        # The hosts share one history store: create it (file, WAL mode, tables) here, once,
        # or their first writes race to create it and SQLite answers "database is locked".
        open_history_store(self.config.history_url, self.config.data_dir).close()
        self.directory = AssetDirectory(
            self.config.data_dir / "actors" / "directory.sqlite3", assets_per_host
        )
        self._handles: dict[int, ActorHandle] = {}
        for host in sorted(self.directory.hosts()):  # hosts of an earlier run recover
            self._handle(host)

    # -- membership ----------------------------------------------------------------

    def add(self, assets: dict[str, str]) -> None:
        """Give every twin of ``assets`` (twin id -> model id) a host; returns once hosted."""
        self.directory.place(assets)
        by_host: dict[int, dict[str, str]] = {}
        for twin_id, model_id in assets.items():
            host = self.directory.host_of(twin_id)
            assert host is not None  # placed just above
            by_host.setdefault(host, {})[twin_id] = model_id
        ray.get([self._handle(h, a).add_assets.remote(a) for h, a in by_host.items()])

    def remove(self, twin_ids: Sequence[str]) -> None:
        removed = self.directory.remove(twin_ids)
        ray.get([self._handle(h).remove_assets.remote(t) for h, t in removed.items()])

    # -- routing -------------------------------------------------------------------

    def route(self, twin_id: str) -> int | None:
        """The host of a twin, or None if the twin has none."""
        return self.directory.host_of(twin_id)

    def send(self, host: int, entries: list[Entry], derived: bool = True) -> Future[IngestResult]:
        """Ingest ``entries`` on ``host``; the future is done once they are durable there,
        with how many the host applied, the alarms they raised or cleared and (if
        ``derived``) the values physics derived from them."""
        return self._handle(host).ingest.remote(entries, derived).future()

    # -- queries -------------------------------------------------------------------

    def snapshot(self, twin_id: str) -> dict[str, Any] | None:
        return self._call(twin_id, "snapshot", twin_id)

    def series(self, twin_id: str, field_path: str, n: int | None = None) -> dict[str, list]:
        return self._call(twin_id, "series", twin_id, field_path, n) or {"times": [], "values": []}

    def active_alarms(self, twin_id: str) -> list[Alarm]:
        return self._call(twin_id, "active_alarms", twin_id) or []

    # Batched reads (GraphQL data loaders): one Ray call per host involved, all in flight
    # at once, instead of one call per twin.

    def snapshots(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """:meth:`snapshot` of many twins; twins without a host are left out."""
        return self._gather("snapshots", twin_ids)

    def alarms_of(self, twin_ids: Sequence[str]) -> dict[str, list[Alarm]]:
        """:meth:`active_alarms` of many twins: every twin asked for, [] for those with
        no alarm or no host."""
        found = self._gather("alarms_of", twin_ids)
        return {twin_id: found.get(twin_id, []) for twin_id in twin_ids}

    def series_many(self, requests: Sequence[tuple[str, str, int | None]]) -> list[dict[str, list]]:
        """:meth:`series` for each ``(twin id, field, n)``, in the order asked; empty series
        for twins without a host."""
        results: list[dict[str, list]] = [{"times": [], "values": []} for _ in requests]
        by_host: dict[int, list[int]] = {}
        for index, (twin_id, _, _) in enumerate(requests):
            host = self.directory.host_of(twin_id)
            if host is not None:
                by_host.setdefault(host, []).append(index)
        hosts = list(by_host)
        refs = [
            self._handle(h).series_many.remote([tuple(requests[i]) for i in by_host[h]])
            for h in hosts
        ]
        for host, answers in zip(hosts, ray.get(refs), strict=True):
            for index, answer in zip(by_host[host], answers, strict=True):
                results[index] = answer
        return results

    # -- physics -------------------------------------------------------------------

    def physics_status(self, twin_id: str) -> dict[str, Any] | None:
        """The twin's physics: FMU, running or off and why (None: none bound)."""
        return self._call(twin_id, "physics_status", twin_id)

    def physics_of(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """:meth:`physics_status` of many twins, one call per host."""
        return self._gather("physics_of", twin_ids)

    def set_physics(self, plans: tuple[PhysicsPlan, ...]) -> list[str]:
        """Bind ``plans`` on every running host (an FMU version swapped in without a
        restart); hosts started later read them from the plans file the caller saved."""
        self.config = replace(self.config, physics=plans)
        answers = ray.get([h.set_physics.remote(plans) for h in self._handles.values()])
        return sorted({interface for changed in answers for interface in changed})

    # -- models --------------------------------------------------------------------

    def anomaly_of(self, twin_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Each twin's anomaly models' last answers, one call per host."""
        return self._gather("anomaly_of", twin_ids)

    def reload_models(self) -> list[str]:
        """Have every running host load the promoted model versions now (the caller
        wrote them under the data dir; hosts started later load them at start)."""
        answers = ray.get([h.reload_models.remote() for h in self._handles.values()])
        return sorted({model for changed in answers for model in changed})

    def simulate(self, twin_id: str, request: WhatIf) -> WhatIfResult:
        """A what-if run of the twin's FMU from where it stands, in a Ray task: the API
        process and the twin's host only hand over the state."""
        found = self._call(twin_id, "physics_state", twin_id)
        if found is None:
            raise PhysicsError(
                f"twinId: {twin_id} has no running physics (no FMU bound to its interface, "
                "physics off, or no telemetry yet)"
            )
        plan, state = found
        try:
            return ray.get(_simulate.remote(plan, state, request, str(self.config.data_dir)))
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, PhysicsError):  # a bad request, a failing FMU
                raise error.cause from None
            raise

    def stats(self) -> list[dict[str, Any]]:
        """Per host: pid, Ray node, asset and message counts, RSS."""
        hosts = sorted(self._handles)
        return ray.get([self._handles[h].stats.remote() for h in hosts])

    def checkpoint(self) -> None:
        ray.get([handle.checkpoint.remote() for handle in self._handles.values()])

    def handle(self, host: int) -> ActorHandle:
        return self._handle(host)

    def close(self) -> None:
        """Checkpoint every host and stop it; the data stays for the next start."""
        try:
            ray.get([h.close.remote() for h in self._handles.values()], timeout=120)
        finally:
            for handle in self._handles.values():
                ray.kill(handle, no_restart=True)
            # Wait until the names are free, or a fleet started next on the same data dir
            # (a server restart in the same Ray cluster) would attach to the dying hosts.
            deadline = time.monotonic() + 30
            for host in self._handles:
                while time.monotonic() < deadline:
                    try:
                        ray.get_actor(f"asset-host-{host}", namespace=self.namespace)
                    except ValueError:
                        break
                    time.sleep(0.05)
            self._handles.clear()
            self.directory.close()

    # -- helpers -------------------------------------------------------------------

    def _call(self, twin_id: str, method: str, *args: Any) -> Any:
        host = self.directory.host_of(twin_id)
        if host is None:
            return None
        return ray.get(getattr(self._handle(host), method).remote(*args))

    def _gather(self, method: str, twin_ids: Iterable[str]) -> dict[str, Any]:
        """Call ``method(twins)`` on the host of each twin, all hosts at once, and merge
        the dicts they answer."""
        by_host: dict[int, list[str]] = {}
        for twin_id in dict.fromkeys(twin_ids):  # each twin once, in order
            host = self.directory.host_of(twin_id)
            if host is not None:
                by_host.setdefault(host, []).append(twin_id)
        refs = [getattr(self._handle(h), method).remote(t) for h, t in by_host.items()]
        merged: dict[str, Any] = {}
        for answer in ray.get(refs):
            merged.update(answer)
        return merged

    def _handle(self, host: int, assets: dict[str, str] | None = None) -> ActorHandle:
        """The host's actor, created (with ``assets``: Ray shows the repr that __init__
        leaves, and only that one, as the actor's name) if it is not running."""
        handle = self._handles.get(host)
        if handle is None:
            handle = _RemoteHost.options(
                name=f"asset-host-{host}",
                namespace=self.namespace,
                get_if_exists=True,
                max_restarts=-1,
                max_task_retries=-1,
                num_cpus=0,  # hosts wait on I/O; CPUs stay free for ingest and models
                scheduling_strategy="SPREAD",
            ).remote(host, self.config, assets)
            self._handles[host] = handle
        return handle
