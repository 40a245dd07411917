"""`twinforge graph import` and `twinforge graph query`, run as the real command on the
embedded FalkorDB, with the sample factory's models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FACTORY = "dtmi:com:twinforge:factory"


def _twinforge(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TWINFORGE_DATA_DIR": str(data_dir)}
    env.pop("TWINFORGE_GRAPH_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "twinforge", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def import_file(tmp_path: Path) -> Path:
    models = [
        json.loads(p.read_text()) for p in sorted((REPO / "examples" / "models").glob("*.json"))
    ]

    def pump(twin_id: str, state: str) -> dict:
        return {"$dtId": twin_id, "$metadata": {"$model": f"{FACTORY}:Pump;1"}, "state": state}

    lines = [
        {"Section": "Header"},
        {"fileVersion": "1.0.0", "author": "tests"},
        {"Section": "Models"},
        *models,
        {"Section": "Twins"},
        pump("pump-1", "running"),
        pump("pump-2", "stopped"),
        pump("pump-3", "on fire"),  # refused: not an enum value
        {"Section": "Relationships"},
        {
            "$dtId": "pump-1",
            "$relationshipId": "f1",
            "$targetId": "pump-2",
            "$relationshipName": "feeds",
        },
        {
            "$dtId": "pump-1",
            "$relationshipId": "f2",
            "$targetId": "pump-3",
            "$relationshipName": "feeds",
        },
    ]
    path = tmp_path / "plant.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_import_then_query(tmp_path: Path, import_file: Path) -> None:
    data = tmp_path / "data"
    imported = _twinforge(data, "graph", "import", str(import_file))
    assert imported.returncode == 1, imported.stderr  # two lines were refused
    assert "imported 11 models, 2 twins, 1 relationships; 2 lines refused" in imported.stdout
    assert f"{import_file}:18: [Twins] pump-3 validationFailed: " in imported.stdout
    assert 'state: "on fire" is not one of' in imported.stdout

    running = _twinforge(
        data, "graph", "query", "--model", f"{FACTORY}:Equipment;1", "--where", "state=running"
    )
    assert running.returncode == 0, running.stderr
    assert [json.loads(line)["$dtId"] for line in running.stdout.splitlines()] == ["pump-1"]

    downstream = _twinforge(data, "graph", "query", "--from", "pump-1", "--along", "feeds")
    assert [json.loads(line)["$dtId"] for line in downstream.stdout.splitlines()] == ["pump-2"]

    counted = _twinforge(data, "graph", "query", "--cypher", "MATCH (t:Twin) RETURN count(t) AS n")
    assert json.loads(counted.stdout) == {"n": 2}

    refused = _twinforge(data, "graph", "query", "--cypher", "MATCH (t:Twin) DETACH DELETE t")
    assert refused.returncode == 1 and "DETACH is not allowed" in refused.stderr

    bad = _twinforge(data, "graph", "query", "--where", "state) DELETE (x=1")
    assert bad.returncode == 1 and "where.property" in bad.stderr
