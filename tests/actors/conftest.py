"""One local Ray cluster for the actor tests (starting one takes seconds)."""

from __future__ import annotations

import os

# Before Ray is imported: don't package the working tree for every worker (uv run hook).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import pytest

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
