"""Shared fixtures: where the project's shared inputs (DTDL specs, ISA-95 models) live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (CI clones with it there), or $TWINFORGE_SHARED."""
    path = Path(os.environ.get("TWINFORGE_SHARED", REPO.parent / "shared"))
    if not (path / "dtdl" / "DTDL").is_dir():
        pytest.fail(
            f"shared inputs not found at {path}; set TWINFORGE_SHARED to the shared/ folder"
        )
    return path
