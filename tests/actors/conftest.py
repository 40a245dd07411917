"""One local Ray cluster for the actor tests (starting one takes seconds), and fleets on
it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Before Ray is imported: don't package the working tree for every worker (uv run hook).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from typing import TYPE_CHECKING

import pytest

from twinforge.actors.asset_host import HostConfig

if TYPE_CHECKING:  # imported by the fixture: it imports Ray, which tests without it skip
    from twinforge.actors.fleet import AssetFleet

_start_error: list[BaseException] = []


@pytest.fixture(scope="session")
def ray_cluster():
    """A single-node Ray cluster with 2 CPUs, shut down at the end of the session.

    Yields the ``ray`` module. Ray gives a node 30 s to register, which a machine loaded
    far beyond its cores can miss; the failure is then reported once and every later test
    that needs the cluster fails at once instead of waiting another 30 s.
    """
    if _start_error:
        pytest.fail(f"the Ray cluster did not start: {_start_error[0]!r}")
    import ray

    if ray.is_initialized():  # started by another test package: reuse it
        yield ray
        return
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as error:
        _start_error.append(error)
        ray.shutdown()
        raise
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def make_fleet(ray_cluster, tmp_path: Path) -> Iterator[Callable[..., AssetFleet]]:
    """Fleets on the shared cluster, each test in a namespace of its own; whatever a test
    leaves running is killed at its end (the data stays in tmp_path)."""
    from twinforge.actors.fleet import AssetFleet

    ray = ray_cluster
    fleets: list[AssetFleet] = []
    namespace = f"test-{os.getpid()}-{time.monotonic_ns()}"

    def make(assets_per_host: int, **config) -> AssetFleet:
        config.setdefault("history_interval_s", 0.0)
        fleet = AssetFleet(
            HostConfig(tmp_path / "data", **config),
            assets_per_host=assets_per_host,
            namespace=namespace,
        )
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        for handle in fleet._handles.values():
            ray.kill(handle, no_restart=True)
