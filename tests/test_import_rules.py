"""The import rules of DESIGN.md hold (import-linter contracts in pyproject.toml), and a
rule broken on purpose makes the check fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts over the ``twinforge`` under ``root``."""
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " kept, 0 broken." in result.stdout, result.stdout


def test_runtime_importing_graphql_breaks_two_contracts(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "twinforge",
        tmp_path / "twinforge",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    (tmp_path / "twinforge" / "runtime" / "shortcut.py").write_text(
        "from twinforge.graphql.schema import SchemaHolder\n\n__all__ = ['SchemaHolder']\n"
    )
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "Layers: each imports only from the layers below it BROKEN" in result.stdout
    assert "runtime knows neither GraphQL, Ray nor protocols BROKEN" in result.stdout
    assert "twinforge.runtime.shortcut -> twinforge.graphql.schema" in result.stdout
