"""The FMUs of tests/conftest.py, unpacked once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twinforge.physics.fmi import LoadedFmu


@pytest.fixture(scope="session")
def loaded(
    our_fmus: dict[str, Path], test_fmus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LoadedFmu]]:
    """Our FMUs and the runnable test FMUs, unpacked once."""
    work = tmp_path_factory.mktemp("unpacked")
    runnable = {**our_fmus, "faulty": test_fmus["faulty"], "faulty3": test_fmus["faulty3"]}
    fmus = {name: LoadedFmu(path, work_dir=work) for name, path in runnable.items()}
    yield fmus
    for fmu in fmus.values():
        fmu.close()
