"""README.md's examples run as written: every ``twinforge`` command in its shell blocks, in
order, through a real shell (so quoting mistakes show), in a fresh directory and data dir;
and every Python snippet, with each ``expression  # value`` line checked as a claim.

``uv run`` in the README stands for the project's environment: a stand-in ``uv`` on the
PATH runs the command in this test's own environment (the same venv), so nothing is synced
or rebuilt here.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from twinforge.sim.layout import PlantLayout, sample_plant

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PUMP = "dtmi:com:twinforge:factory:Pump;1"

#: Commands that start a long-running server; each is run, as a user runs it, elsewhere.
SKIPPED = {
    "serve": "tests/e2e/test_cli_serve.py runs `twinforge serve --import plant.ndjson`",
    "demo": "tests/e2e/test_graphql_e2e.py and tests/e2e/test_wheel.py run `twinforge demo`",
}


@dataclass(frozen=True)
class Command:
    section: str
    line: str  # the shell text, from `uv run twinforge` to the end of the line
    args: list[str]  # what follows `twinforge`, as the shell splits it


def _sections() -> list[tuple[str, str]]:
    """(heading, text) for each part of the README, in order (a ``#`` line inside a code
    block is a comment, not a heading)."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,3} ", line):
            sections.append((line.lstrip("#").strip(), []))
        else:
            sections[-1][1].append(line)
    return [(heading, "".join(lines)) for heading, lines in sections]


def _blocks(language: str) -> list[tuple[str, str]]:
    return [
        (heading, block)
        for heading, text in _sections()
        for block in re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)
    ]


def _twinforge_commands() -> list[Command]:
    found = []
    for heading, block in _blocks("sh"):
        for raw in block.splitlines():
            for part in raw.split("&&"):
                words = shlex.split(part, comments=True)
                if "twinforge" in words:
                    line = part[part.index("uv run twinforge") :].strip()
                    found.append(Command(heading, line, words[words.index("twinforge") + 1 :]))
    return found


COMMANDS = _twinforge_commands()


def _shims(directory: Path) -> dict[str, str]:
    """PATH entries for `uv run ...` and `twinforge` in this environment."""
    directory.mkdir()
    scripts = {
        # uv run [options] COMMAND...: run COMMAND here
        "uv": '[ "$1" = run ] || exit 64\nshift\nwhile [ "${1#-}" != "$1" ]; do shift; done\n'
        'exec "$@"\n',
        "twinforge": f'exec {shlex.quote(sys.executable)} -m twinforge "$@"\n',
    }
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


def _json_lines(stdout: str) -> list[dict]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert rows, "printed nothing"
    return rows


def _reached(plant: PlantLayout, start: str, name: str, hops: int) -> set[str]:
    reached, frontier = set(), {start}
    for _ in range(hops):
        frontier = {
            r.target for r in plant.relationships if r.source in frontier and r.name == name
        }
        reached |= frontier
    return reached


def _expectation(args: list[str], cwd: Path) -> Callable[[str], None]:
    """What a README command must print (beside exiting 0); fails for a command without
    one, so that each new README command gets its check here."""
    plant = sample_plant()
    option = dict(zip(args[2::2], args[3::2], strict=False)) if len(args) > 2 else {}

    def wrote(stdout: str) -> None:
        path = cwd / args[2]
        assert path.read_text() == plant.to_import_ndjson().rstrip("\n") + "\n"
        assert stdout.startswith(f"wrote {args[2]}: ")

    def imported(stdout: str) -> None:
        assert stdout.splitlines() == [
            f"imported {len(plant.models)} models, {len(plant.twins)} twins, "
            f"{len(plant.relationships)} relationships; 0 lines refused"
        ]

    def by_model(stdout: str) -> None:
        rows = _json_lines(stdout)
        assert {r["$metadata"]["$model"] for r in rows} == {option["--model"]}
        field, _, value = option["--where"].partition("=")
        assert all(r[field] == value for r in rows)
        expected = {t.id for t in plant.of_model(option["--model"])}
        assert {r["$dtId"] for r in rows} <= expected

    def traversed(stdout: str) -> None:
        reached = _reached(plant, option["--from"], option["--along"], int(option["--hops"]))
        assert reached and {r["$dtId"] for r in _json_lines(stdout)} == reached

    def counted(stdout: str) -> None:
        assert _json_lines(stdout) == [{"twins": len(plant.twins)}]

    if args[:2] == ["graph", "sample-plant"]:
        return wrote
    if args[:2] == ["graph", "import"]:
        return imported
    if args[:2] == ["graph", "query"]:
        for key, check in (("--cypher", counted), ("--from", traversed), ("--model", by_model)):
            if key in option:
                return check
    pytest.fail(f"no check for the README command `twinforge {shlex.join(args)}`: add one")


def test_the_readme_has_the_commands_this_file_checks() -> None:
    names = [" ".join(c.args[:2]) for c in COMMANDS]
    assert names.index("graph sample-plant") < names.index("graph import")
    assert names.count("graph query") >= 3
    assert {c.args[0] for c in COMMANDS} >= set(SKIPPED)


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = os.environ | _shims(tmp_path / "bin") | {"TWINFORGE_DATA_DIR": str(tmp_path / "data")}
    env.pop("TWINFORGE_GRAPH_URL", None)
    ran = 0
    for command in COMMANDS:
        if command.args[0] in SKIPPED:
            continue  # a server that runs until stopped; SKIPPED says which test runs it
        check = _expectation(command.args, cwd)
        result = subprocess.run(
            ["bash", "-c", command.line],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        where = f"README ({command.section}): {command.line}\n{result.stdout}{result.stderr}"
        assert result.returncode == 0, where
        assert "Traceback" not in result.stderr, where
        try:
            check(result.stdout)
        except AssertionError as exc:
            raise AssertionError(f"{where}\n{exc}") from exc
        ran += 1
    assert ran >= 5


def _with_claims_checked(code: str) -> tuple[str, int]:
    """``code`` with each top-level ``expression  # literal`` line made an assertion."""
    out, claims = [], 0
    for line in code.splitlines():
        statement, hash_, comment = line.partition("  # ")
        if hash_ and not line.startswith((" ", "#")):
            try:
                expected = ast.literal_eval(comment.strip())
                tree = ast.parse(statement)
            except (ValueError, SyntaxError):
                pass
            else:
                if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
                    line = f"assert ({statement}) == {expected!r}, {statement!r}"
                    claims += 1
        out.append(line)
    return "\n".join(out) + "\n", claims


SNIPPETS = _blocks("python")


@pytest.mark.parametrize(("section", "code"), SNIPPETS, ids=[s for s, _ in SNIPPETS])
def test_readme_python_runs_as_written(tmp_path: Path, section: str, code: str) -> None:
    checked, claims = _with_claims_checked(code)
    assert claims, f"the {section} snippet claims nothing this test can check"
    env = os.environ | {"TWINFORGE_DATA_DIR": str(tmp_path / "data"), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", checked],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"README ({section}):\n{checked}\n{result.stderr}"


def test_the_readme_has_its_python_snippets() -> None:
    assert [section for section, _ in SNIPPETS] == ["DTDL models in Python", "The twin graph"]
