"""`twinforge graph import`, `query` and `sample-plant`, run as the real command on the
embedded FalkorDB, with the sample factory's models: on a data dir of their own, and beside
a process that holds the data dir's FalkorDB, as `twinforge serve` does."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinforge.cli import app
from twinforge.runtime.stores import FalkorDBStore, open_graph_store
from twinforge.sim.factory import MODELS_DIR
from twinforge.sim.layout import sample_plant

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
    models = [json.loads(p.read_text()) for p in sorted((MODELS_DIR).glob("*.json"))]

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
    assert "imported 11 models, 2 twins, 1 relationship; 2 lines refused" in imported.stdout
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

    nowhere = _twinforge(data, "graph", "query", "--from", "tank-1", "--along", "feeds")
    assert nowhere.returncode == 1 and nowhere.stdout == ""
    assert nowhere.stderr == "error: --from: no twin tank-1\n"

    # What the shell leaves of an unquoted --model dtmi:...;1
    unquoted = _twinforge(data, "graph", "query", "--model", f"{FACTORY}:Pump")
    assert unquoted.returncode == 1 and len(unquoted.stderr.splitlines()) == 1
    assert f"did you mean '{FACTORY}:Pump;1'? Quote it" in unquoted.stderr
    unknown = _twinforge(data, "graph", "query", "--model", "dtmi:com:example:Nothing;1")
    assert unknown.returncode == 1 and "no model dtmi:com:example:Nothing;1" in unknown.stderr

    not_a_dtmi = _twinforge(data, "graph", "query", "--model", "pump")
    assert not_a_dtmi.returncode == 2 and "'pump' is not a DTMI" in not_a_dtmi.stderr


def test_an_empty_import_file_is_refused_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "plant.ndjson"
    empty.write_text("\n\n")
    refused = _twinforge(tmp_path / "data", "graph", "import", str(empty))
    assert refused.returncode == 1 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"error: {empty} is empty: ")
    assert '{"Section": "Header"}' in line
    assert not (tmp_path / "data").exists()  # refused before any database was started


def test_import_report_is_in_line_order_and_says_what_each_section_is(
    tmp_path: Path, import_file: Path
) -> None:
    lines = import_file.read_text().splitlines()
    twins = lines.index('{"Section": "Twins"}')
    lines.insert(twins, '{"Section": "Widgets"}')  # unknown, with no lines of its own
    lines.insert(2, "{not json")  # line 3, in the Header section
    import_file.write_text("\n".join(lines) + "\n")
    imported = _twinforge(tmp_path / "data", "graph", "import", str(import_file))
    assert imported.returncode == 1
    out = imported.stdout.splitlines()
    assert out[0] == "imported 11 models, 2 twins, 1 relationship; 4 lines refused"
    numbers = [int(line.split(":")[1]) for line in out[1:]]
    assert numbers == sorted(numbers) and len(numbers) == 4
    assert out[1].startswith(f"{import_file}:3: [Header] invalidJson: not JSON")
    assert out[2] == (
        f"{import_file}:{twins + 2}: [Widgets] section: section 'Widgets' is unknown: sections "
        "are Header, Models, Twins, Relationships, in that order, each once; it is empty"
    )


def test_sample_plant_writes_the_demo_factory_import_file(tmp_path: Path) -> None:
    expected = sample_plant().to_import_ndjson()
    runner = CliRunner()
    to_stdout = runner.invoke(app, ["graph", "sample-plant"], prog_name="twinforge")
    assert to_stdout.exit_code == 0, to_stdout.output
    assert to_stdout.stdout.rstrip("\n") == expected.rstrip("\n")
    target = tmp_path / "plant.ndjson"
    written = runner.invoke(app, ["graph", "sample-plant", str(target)], prog_name="twinforge")
    assert written.exit_code == 0, written.output
    assert target.read_text() == to_stdout.stdout
    assert f"wrote {target}: 11 models, 34 twins, 53 relationships" in written.stdout
    smaller = runner.invoke(app, ["graph", "sample-plant", "--equipment", "3"])
    assert smaller.stdout.rstrip("\n") == sample_plant(3).to_import_ndjson().rstrip("\n")


# -- beside a running server ------------------------------------------------------------


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, FalkorDBStore]]:
    """A data dir whose embedded FalkorDB this test process runs and holds, as a running
    twinforge serve or demo does."""
    data = tmp_path / "data"
    store = open_graph_store(None, data)
    assert isinstance(store, FalkorDBStore) and store.server is not None
    try:
        yield data, store
    finally:
        store.close()


def test_import_and_query_use_the_running_servers_graph(
    held: tuple[Path, FalkorDBStore], import_file: Path
) -> None:
    data, store = held
    imported = _twinforge(data, "graph", "import", str(import_file))
    assert imported.returncode == 1, imported.stderr  # the two refused lines, as above
    assert "imported 11 models, 2 twins, 1 relationship; 2 lines refused" in imported.stdout
    assert "Traceback" not in imported.stderr
    assert f"note: imported into the graph of the running twinforge (process {os.getpid()})" in (
        imported.stderr
    )
    # The holder sees what the command wrote, and its server still runs.
    assert store.read("MATCH (t:Twin) RETURN t.twin_id AS id ORDER BY id") == [
        {"id": "pump-1"},
        {"id": "pump-2"},
    ]

    pumps = _twinforge(data, "graph", "query", "--model", f"{FACTORY}:Pump;1")
    assert pumps.returncode == 0, pumps.stderr
    assert [json.loads(line)["$dtId"] for line in pumps.stdout.splitlines()] == [
        "pump-1",
        "pump-2",
    ]
    downstream = _twinforge(data, "graph", "query", "--from", "pump-1", "--along", "feeds")
    assert [json.loads(line)["$dtId"] for line in downstream.stdout.splitlines()] == ["pump-2"]
    assert store.read("RETURN 1 AS one") == [{"one": 1}]

    store.close()  # the server stops: the next command starts its own on the same data
    counted = _twinforge(data, "graph", "query", "--cypher", "MATCH (t:Twin) RETURN count(t) AS n")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {"n": 2}


def _hold_lock(data: Path) -> int:
    """Hold the data dir's FalkorDB lock as a process that runs no shared server does."""
    directory = data / "falkordb"
    directory.mkdir(parents=True)
    fd = os.open(directory / "falkordb.lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_a_holder_that_says_nothing_is_one_line_of_what_to_do(
    tmp_path: Path, import_file: Path
) -> None:
    data = tmp_path / "data"
    fd = _hold_lock(data)
    try:
        for args in (("query", "--cypher", "RETURN 1 AS one"), ("import", str(import_file))):
            line = _one_line_error(_twinforge(data, "graph", *args))
            assert f"in use by process {os.getpid()}" in line
            assert "stop that process first, or point TWINFORGE_GRAPH_URL at its server" in line
    finally:
        os.close(fd)


def test_a_holder_whose_server_does_not_answer_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fd = _hold_lock(data)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = {"pid": os.getpid(), "port": port, "unix_socket": None, "ready": True}
    (data / "falkordb" / "falkordb.endpoint.json").write_text(json.dumps(endpoint))
    try:
        line = _one_line_error(_twinforge(data, "graph", "query", "--cypher", "RETURN 1 AS x"))
        assert f"held by process {os.getpid()}" in line
        assert f"its FalkorDB at 127.0.0.1:{port} does not answer" in line
    finally:
        os.close(fd)
