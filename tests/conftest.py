"""Shared fixtures: the embedded FalkorDB, and the vendored third-party inputs under
``tests/data`` (see its README).

The DTDL conformance cases and the ISA-95 ontology are checked into the repository, so the
tests need nothing beside the checkout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fmus import build_test_fmus

from twinforge.runtime.stores import FalkorDBStore, open_graph_store
from twinforge.sim.fmus import FMU_NAMES, fmu_path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"vendored test data missing at {path}; see tests/data/README.md")
    return path


@pytest.fixture(scope="session")
def dtdl_conformance_dir() -> Path:
    """``<version>-spec.tar.xz`` per DTDL version: the official conformance cases."""
    return _require(DATA / "dtdl-conformance")


@pytest.fixture(scope="session")
def isa95_ontology_dir() -> Path:
    """The ISA-95 DTDL ontology, one model per ``.json`` file, as upstream lays it out."""
    return _require(DATA / "isa95" / "Ontology")


@pytest.fixture(scope="session")
def embedded_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalkorDBStore]:
    """The embedded FalkorDB, as ``open_graph_store(None, ...)`` gives it: one for the
    whole session (it takes a second to start); each test empties it first."""
    store = open_graph_store(None, tmp_path_factory.mktemp("graph"))
    assert isinstance(store, FalkorDBStore)
    yield store
    store.close()


# twinforge's FMUs and the test FMUs, each built once into an empty temporary cache.
@pytest.fixture(scope="session")
def fmu_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fmu-cache")


@pytest.fixture(scope="session")
def our_fmus(fmu_cache: Path) -> dict[str, Path]:
    return {name: fmu_path(name, fmu_cache) for name in FMU_NAMES}


@pytest.fixture(scope="session")
def test_fmus(fmu_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_test_fmus(fmu_cache, tmp_path_factory.mktemp("test-fmus"))
