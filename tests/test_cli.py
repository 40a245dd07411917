"""`twinforge models validate`, run in-process (typer's CliRunner) and as `python -m twinforge`,
and the help every command and option gives."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from twinforge.cli import app
from twinforge.sim.factory import MODELS_DIR

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    code: int
    stdout: str
    output: str  # stdout and stderr together


Run = Callable[..., Outcome]


def _run_in_process(*args: str) -> Outcome:
    result = CliRunner().invoke(app, list(args), prog_name="twinforge")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.output)


def _run_subprocess(*args: str) -> Outcome:
    proc = subprocess.run(
        [sys.executable, "-m", "twinforge", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stdout + proc.stderr)


@pytest.fixture(params=["in_process", "subprocess"])
def run(request: pytest.FixtureRequest) -> Run:
    return _run_in_process if request.param == "in_process" else _run_subprocess


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


DUPLICATE_NAMES = {
    "@context": "dtmi:dtdl:context;3",
    "@id": "dtmi:com:example:Bad;1",
    "@type": "Interface",
    "contents": [
        {"@type": "Telemetry", "name": "speed", "schema": "double"},
        {"@type": "Property", "name": "speed", "schema": "double"},
    ],
}


def test_help_explains_commands(run: Run) -> None:
    out = run("--help")
    assert out.code == 0
    assert "digital-twin" in out.stdout
    assert "models" in out.stdout
    out = run("models", "validate", "--help")
    assert out.code == 0
    for option in ("--json", "--allow-undefined-extensions", "--max-dtdl-version"):
        assert option in out.stdout


def test_examples_are_valid(run: Run) -> None:
    out = run("models", "validate", str(MODELS_DIR))
    assert out.code == 0, out.output
    n_files = len(list(MODELS_DIR.glob("*.json")))
    assert f"{n_files} files, {n_files} interfaces: valid" in out.stdout


def test_examples_json(run: Run) -> None:
    out = run("models", "validate", "--json", str(MODELS_DIR))
    assert out.code == 0, out.output
    report = json.loads(out.stdout)
    n_files = len(list(MODELS_DIR.glob("*.json")))
    assert report == {
        "valid": True,
        "files": n_files,
        "interfaces": n_files,
        "errors": [],
        "undefined_ids": [],
    }


def test_duplicate_content_names_are_invalid(run: Run, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", DUPLICATE_NAMES)
    out = run("models", "validate", str(bad))
    assert out.code == 1, out.output
    assert str(bad) in out.stdout
    assert "1 file" in out.stdout.splitlines()[-1]
    assert "error" in out.stdout.splitlines()[-1]


def test_duplicate_content_names_json(run: Run, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", DUPLICATE_NAMES)
    out = run("models", "validate", "--json", str(bad))
    assert out.code == 1, out.output
    report = json.loads(out.stdout)
    assert report["valid"] is False
    assert report["files"] == 1
    assert report["errors"], report
    for error in report["errors"]:
        assert error["file"] == str(bad)
        assert error["validation_id"].startswith("dtmi:dtdl:parsingError:")
        assert error["cause"]
        assert set(error) == {
            "file",
            "validation_id",
            "primary_id",
            "property",
            "value",
            "cause",
            "action",
        }
    assert "speed" in json.dumps(report["errors"])


def test_error_names_the_right_file_among_many(run: Run, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", DUPLICATE_NAMES)
    out = run("models", "validate", "--json", str(MODELS_DIR), str(bad))
    assert out.code == 1, out.output
    report = json.loads(out.stdout)
    assert report["files"] == len(list(MODELS_DIR.glob("*.json"))) + 1
    assert {error["file"] for error in report["errors"]} == {str(bad)}


def test_non_json_file_is_invalid(run: Run, tmp_path: Path) -> None:
    junk = tmp_path / "notes.json"
    junk.write_text("this is { not json", encoding="utf-8")
    out = run("models", "validate", str(junk))
    assert out.code == 1, out.output
    assert str(junk) in out.stdout

    out = run("models", "validate", "--json", str(junk))
    assert out.code == 1, out.output
    report = json.loads(out.stdout)
    assert report["valid"] is False
    assert [e["validation_id"] for e in report["errors"]] == ["dtmi:dtdl:parsingError:invalidJson"]
    assert report["errors"][0]["file"] == str(junk)


def test_non_utf8_file_is_invalid(run: Run, tmp_path: Path) -> None:
    junk = tmp_path / "binary.json"
    junk.write_bytes(b"\xff\xfe\x00garbage\x80")
    out = run("models", "validate", "--json", str(junk))
    assert out.code == 1, out.output
    report = json.loads(out.stdout)
    assert report["errors"][0]["file"] == str(junk)
    assert report["errors"][0]["validation_id"] == "dtmi:dtdl:parsingError:invalidJson"


def test_undefined_reference_is_invalid(run: Run, tmp_path: Path) -> None:
    model = _write(
        tmp_path / "orphan.json",
        {
            "@context": "dtmi:dtdl:context;3",
            "@id": "dtmi:com:example:Orphan;1",
            "@type": "Interface",
            "extends": "dtmi:com:example:Missing;1",
        },
    )
    out = run("models", "validate", "--json", str(model))
    assert out.code == 1, out.output
    report = json.loads(out.stdout)
    assert report["valid"] is False
    assert report["undefined_ids"] == ["dtmi:com:example:Missing;1"]

    out = run("models", "validate", str(model))
    assert out.code == 1
    assert "dtmi:com:example:Missing;1" in out.stdout


def test_cross_file_references_resolve(run: Run, tmp_path: Path) -> None:
    # Equipment is defined in one file and extended in another: parsed as one set.
    out = run(
        "models",
        "validate",
        str(MODELS_DIR / "Pump.json"),
        str(MODELS_DIR / "Equipment.json"),
    )
    assert out.code == 0, out.output
    out = run("models", "validate", str(MODELS_DIR / "Pump.json"))
    assert out.code == 1, out.output
    assert "dtmi:com:twinforge:factory:Equipment;1" in out.stdout


def test_max_dtdl_version_rejects_newer_models(run: Run) -> None:
    out = run("models", "validate", "--max-dtdl-version", "2", str(MODELS_DIR / "Site.json"))
    assert out.code == 1, out.output


def test_missing_path_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    out = run("models", "validate", str(missing))
    assert out.code == 2
    assert "nope.json" in out.output


def test_no_paths_is_a_usage_error(run: Run) -> None:
    out = run("models", "validate")
    assert out.code == 2


def test_directory_without_models_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    out = run("models", "validate", str(tmp_path))
    assert out.code == 2
    assert "no *.json model files" in out.output


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


COMMANDS = _commands(typer.main.get_command(app))  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_help_summary_is_one_whole_sentence(name: str, command: click.Command) -> None:
    # typer shows a command's first paragraph as its summary, keeping its line breaks.
    summary = inspect.cleandoc(command.help or "").split("\n\n")[0]
    assert summary, f"{name} has no help"
    assert "\n" not in summary, f"{name}: the summary breaks mid-sentence: {summary!r}"
    assert summary.endswith("."), f"{name}: {summary!r}"
    assert len(summary) <= 90, f"{name}: {summary!r} does not fit a terminal line"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_option_and_argument_says_what_it_is(name: str, command: click.Command) -> None:
    for param in command.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"{name} {param.opts[0]}: no help"


def test_help_lists_each_command_with_its_whole_summary() -> None:
    wide = {"COLUMNS": "160", "TERMINAL_WIDTH": "160"}
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], prog_name="twinforge", env=wide).stdout
    rows = {line.strip("│ ").split(" ", 1)[0]: line for line in top.splitlines() if "│" in line}
    assert (
        "Run the server: the twin graph, live assets on Ray, ingest, commands and GraphQL."
        in (rows["serve"])
    )
    assert (
        "Run the sample factory with everything embedded; prints the URLs and an admin key."
        in (rows["demo"])
    )
    graph = runner.invoke(app, ["graph", "--help"], prog_name="twinforge", env=wide).stdout
    assert "Import an import-job file: its models, twins and relationships." in graph
    assert "Write the sample factory (the one twinforge demo runs) as an import-job file." in graph
    query = runner.invoke(app, ["graph", "query", "--help"], prog_name="twinforge", env=wide)
    assert "Most twins to print, in twin id order." in query.stdout
