"""`twinforge physics build`, `check` and `simulate` on real parts: our own FMUs built by
CMake and a C compiler, the sample factory's DTDL models and physics bindings, and (marked
slow) a running `twinforge demo` answering the what-if mutation."""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from pathlib import Path

import fmpy
import pytest
from support.cli_process import free_port, running_twinforge
from typer.testing import CliRunner, Result

from twinforge.cli import app
from twinforge.physics.model_description import read_description
from twinforge.sim.factory import MODELS_DIR, PHYSICS, sample_physics
from twinforge.sim.fmus import FMU_NAMES, HERE, assemble_source_fmu

PUMP = "dtmi:com:twinforge:factory:Pump;1"
#: Wide enough that usage errors are not wrapped mid-word in their box.
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    result = CliRunner().invoke(app, list(args), prog_name="twinforge", env=WIDE | (env or {}))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def simulate_pump(*args: str) -> Result:
    """``physics simulate`` of pump-01 for a minute, with a key, and ``args``."""
    return cli("physics", "simulate", "pump-01", "--horizon", "60", "--key", "k", *args)


def _write_bindings(path: Path, bindings: list[dict]) -> Path:
    path.write_text(json.dumps(bindings), encoding="utf-8")
    return path


def _demo_config(fmu_cache: Path) -> list[dict]:
    """The demo's own bindings, with the paths of its FMUs built in ``fmu_cache``."""
    return [b.model_dump(mode="json") for b in sample_physics(fmu_cache)]


# -- build ------------------------------------------------------------------------------


def test_build_compiles_a_source_fmu_folder_for_this_platform(tmp_path: Path) -> None:
    source = assemble_source_fmu(HERE / "pump", tmp_path / "pump")
    cache = tmp_path / "cache"
    result = cli("physics", "build", str(source), "--out", str(cache))
    assert result.exit_code == 0, result.output
    built = Path(result.stdout.strip())
    assert built.parent == cache.resolve() and built.suffix == ".fmu"
    assert read_description(built).has_binary
    with zipfile.ZipFile(built) as archive:
        assert any(n.startswith(f"binaries/{fmpy.platform}/") for n in archive.namelist())
    # Built once: the second time it is the cached file.
    again = cli("physics", "build", str(source), "--out", str(cache))
    assert again.exit_code == 0 and Path(again.stdout.strip()) == built


def test_build_ours_builds_each_of_twinforges_fmus(
    our_fmus: dict[str, Path], fmu_cache: Path
) -> None:
    result = cli("physics", "build", "--ours", "--out", str(fmu_cache))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{name}: {our_fmus[name]}" for name in FMU_NAMES]


def test_build_refuses_a_folder_without_a_model_description(tmp_path: Path) -> None:
    folder = tmp_path / "not-an-fmu"
    (folder / "sources").mkdir(parents=True)
    result = cli("physics", "build", str(folder), "--out", str(tmp_path / "cache"))
    assert result.exit_code == 1
    assert f"error: {folder} has no modelDescription.xml" in result.output
    assert not (tmp_path / "cache").exists()


def test_build_refuses_a_file_that_is_no_fmu(tmp_path: Path) -> None:
    junk = tmp_path / "junk.fmu"
    junk.write_text("not a zip")
    result = cli("physics", "build", str(junk), "--out", str(tmp_path / "cache"))
    assert result.exit_code == 1
    assert f"error: {junk} is not an FMU" in result.output


def test_build_fails_with_the_compilers_complaint(tmp_path: Path) -> None:
    source = assemble_source_fmu(HERE / "pump", tmp_path / "pump")
    (source / "sources" / "model.c").write_text("this is not C;\n")
    result = cli("physics", "build", str(source), "--out", str(tmp_path / "cache"))
    assert result.exit_code == 1
    assert "error: fmu: building pump failed:" in result.output
    assert "model.c" in result.output  # the compiler's own lines follow


@pytest.mark.parametrize("ours", [False, True])
def test_build_needs_either_a_source_or_ours(ours: bool, tmp_path: Path) -> None:
    result = cli("physics", "build", *(["--ours", str(tmp_path)] if ours else []))
    assert result.exit_code == 2
    assert "give either SOURCE or --ours" in result.output


# -- check ------------------------------------------------------------------------------


def test_check_passes_the_demos_own_configuration(fmu_cache: Path, tmp_path: Path) -> None:
    bindings = _demo_config(fmu_cache)
    config = _write_bindings(tmp_path / "physics.json", bindings)
    result = cli("physics", "check", str(config), "--models", str(MODELS_DIR))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "3 bindings: 3 ok, 0 with problems"
    pump = next(b for b in bindings if b["interface"] == PUMP)
    assert (
        f"ok {PUMP}: {Path(pump['fmu']).name}, inputs speed, valvePosition, expected "
        f"{', '.join(pump['expected'])}"
    ) in lines
    assert len(lines) == len(bindings) + 1
    for line, binding in zip(lines, bindings, strict=False):
        assert line.startswith(f"ok {binding['interface']}: {Path(binding['fmu']).name}, ")

    result = cli("physics", "check", str(config), "--models", str(MODELS_DIR), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [b["interface"] for b in report["bindings"]] == [b["interface"] for b in bindings]
    assert all(b["ok"] and not b["problems"] for b in report["bindings"])


def test_check_builds_a_source_fmu_named_relative_to_the_config(
    fmu_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same sources as the session's pump: built into that cache once, found there.
    monkeypatch.setenv("TWINFORGE_FMU_CACHE", str(fmu_cache))
    assemble_source_fmu(HERE / "pump", tmp_path / "fmus" / "pump")
    pump = next(b for b in json.loads(PHYSICS.read_text()) if b["interface"] == PUMP)
    config = _write_bindings(tmp_path / "physics.json", [pump | {"fmu": "fmus/pump"}])
    result = cli("physics", "check", str(config), "--models", str(MODELS_DIR))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok {PUMP}: pump, inputs speed, valvePosition, ")


def test_check_names_both_sides_of_each_mismatch(fmu_cache: Path, tmp_path: Path) -> None:
    bindings = _demo_config(fmu_cache)
    pump = next(b for b in bindings if b["interface"] == PUMP)
    pump["inputs"]["noSuchInput"] = "speed"  # the FMU has no such input
    pump["expected"]["noSuchTelemetry"] = "flow"  # the interface has no such telemetry
    config = _write_bindings(tmp_path / "physics.json", bindings)
    fmu = Path(pump["fmu"]).name
    input_problem = (
        f"inputs.noSuchInput: {fmu} has no input 'noSuchInput' (its inputs: speed, valvePosition)"
    )
    telemetry_problem = (
        "expected.noSuchTelemetry: Pump has no telemetry 'noSuchTelemetry' for FMU output "
        "'flow' to be the expected value of"
    )

    result = cli("physics", "check", str(config), "--models", str(MODELS_DIR))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    at = lines.index(f"bad {PUMP}: {fmu}")
    assert lines[at + 1 : at + 3] == [f"  {input_problem}", f"  {telemetry_problem}"]
    assert lines[-1] == "3 bindings: 2 ok, 1 with problems"

    result = cli("physics", "check", str(config), "--models", str(MODELS_DIR), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    bad = next(b for b in report["bindings"] if b["interface"] == PUMP)
    assert bad["ok"] is False and bad["problems"] == [input_problem, telemetry_problem]


def test_check_reports_an_interface_the_models_lack(fmu_cache: Path, tmp_path: Path) -> None:
    bindings = _demo_config(fmu_cache)
    config = _write_bindings(tmp_path / "physics.json", bindings)
    # Pump.json with what it extends, and nothing else: the other two are not there.
    models = [str(MODELS_DIR / "Pump.json"), str(MODELS_DIR / "Equipment.json")]
    result = cli("physics", "check", str(config), "--models", models[0], "--models", models[1])
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0].startswith(f"ok {PUMP}: ")
    assert (
        "  interface: no interface dtmi:com:twinforge:factory:CncMachine;1 in the models "
        "given (--models)"
    ) in result.stdout.splitlines()


def test_check_says_which_file_is_not_a_configuration(tmp_path: Path) -> None:
    junk = tmp_path / "physics.json"
    junk.write_text("[{")
    result = cli("physics", "check", str(junk), "--models", str(MODELS_DIR))
    assert result.exit_code == 1
    assert f"error: {junk}: physics config: not JSON" in result.output

    _write_bindings(junk, [{"interface": PUMP, "fmu": "pump.fmu", "expected": {}}])
    result = cli("physics", "check", str(junk), "--models", str(MODELS_DIR))
    assert result.exit_code == 1
    assert f"error: {junk}: 0.expected:" in result.output


def test_check_usage_errors_name_the_path(fmu_cache: Path, tmp_path: Path) -> None:
    config = _write_bindings(tmp_path / "physics.json", _demo_config(fmu_cache))
    missing = tmp_path / "no-models"
    result = cli("physics", "check", str(config), "--models", str(missing))
    assert result.exit_code == 2 and str(missing) in result.output
    result = cli("physics", "check", str(tmp_path / "nope.json"), "--models", str(MODELS_DIR))
    assert result.exit_code == 2 and "nope.json" in result.output
    result = cli("physics", "check", str(config))
    assert result.exit_code == 2 and "--models" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("physics", "check", str(config), "--models", str(empty))
    assert result.exit_code == 2 and "no *.json model files" in result.output


def test_check_refuses_invalid_models_naming_the_file(fmu_cache: Path, tmp_path: Path) -> None:
    config = _write_bindings(tmp_path / "physics.json", _demo_config(fmu_cache))
    result = cli("physics", "check", str(config), "--models", str(MODELS_DIR / "Pump.json"))
    assert result.exit_code == 1
    assert "undefined reference dtmi:com:twinforge:factory:Equipment;1" in result.output
    assert "error: the models given (--models) are not valid" in result.output


# -- simulate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--set", "bearingWear"),
        ("--set", "bearingWear=lots"),
        ("--set", "=1"),
        ("--set", "bearingWear=nan"),
        ("--profile", "valvePosition"),
        ("--profile", "valvePosition="),
        ("--profile", "valvePosition=300"),
        ("--profile", "valvePosition=0:0.8,300:"),
        ("--profile", "valvePosition=a:1"),
        ("--profile", "valvePosition=300:20,100:50"),
        ("--profile", "valvePosition=-5:20"),
    ],
)
def test_simulate_refuses_a_bad_override_naming_the_option(option: str, text: str) -> None:
    result = simulate_pump("--url", f"http://127.0.0.1:{free_port()}/graphql", option, text)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}: {text!r}" in result.output


def test_simulate_refuses_one_parameter_set_twice() -> None:
    result = simulate_pump("--set", "fouling=1", "--set", "fouling=2")
    assert result.exit_code == 2
    assert "Invalid value for --set: 'fouling=2': fouling is set twice" in result.output


def test_simulate_says_nothing_listens_at_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/graphql"
    result = simulate_pump(
        "--url", url, "--set", "fouling=0.5", "--profile", "valvePosition=0:0.8,300:0.2"
    )
    assert result.exit_code == 1
    assert f"error: nothing answers at {url} (connection refused)" in result.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--horizon", "0"], "--horizon"),
        (["--horizon", "60", "--step", "-1"], "--step"),
        (["--horizon", "60", "--url", "file:///etc/passwd"], "--url"),
    ],
)
def test_simulate_refuses_bad_numbers_and_urls(args: list[str], option: str) -> None:
    result = cli("physics", "simulate", "pump-01", "--key", "k", *args)
    assert result.exit_code == 2
    assert f"Invalid value for {option}" in result.output


def test_simulate_needs_a_key() -> None:
    result = cli(
        "physics", "simulate", "pump-01", "--horizon", "60", env={"TWINFORGE_API_KEY": None}
    )
    assert result.exit_code == 2
    assert "no API key: pass --key or set TWINFORGE_API_KEY" in result.output


@pytest.mark.slow
def test_simulate_runs_a_pump_of_the_running_demo(
    our_fmus: dict[str, Path], fmu_cache: Path, tmp_path: Path
) -> None:
    env = os.environ | {
        "TWINFORGE_DATA_DIR": str(tmp_path / "data"),
        "TWINFORGE_API_PORT": "0",
        "TWINFORGE_METRICS_PORT": "0",
        "TWINFORGE_FMU_CACHE": str(fmu_cache),  # the FMUs this session built already
    }
    with running_twinforge(["demo", "--no-dashboard", "--duration", "120"], env) as running:
        url = re.search(r"GraphQL:\s+(http://\S+)", running.output)
        key = re.search(r"Admin API key:\s+(\S+)", running.output)
        assert url and key, running.output
        args = ["physics", "simulate", "pump-01", "--url", url[1], "--horizon", "600"]
        access = {"TWINFORGE_API_KEY": key[1]}
        # The pump's physics runs once its first telemetry has arrived.
        deadline = time.monotonic() + 60
        while (result := cli(*args, "--profile", "valvePosition=300:20", env=access)).exit_code:
            assert "has no running physics" in result.output, result.output
            assert time.monotonic() < deadline, result.output
            time.sleep(1)
        lines = result.stdout.splitlines()
        header = (
            r"pump-01: 600 s from \S+ \((from saved FMU state|fresh steady start)\), \S+ s wall"
        )
        assert re.fullmatch(header, lines[0]), lines
        assert lines[1].split() == ["telemetry", "start", "min", "max", "end"]
        pump = next(b for b in json.loads(PHYSICS.read_text()) if b["interface"] == PUMP)
        assert [line.split()[0] for line in lines[2:]] == list(pump["expected"])
        for line in lines[2:]:
            start, low, high, end = map(float, line.split()[1:])
            assert low <= min(start, end) and high >= max(start, end)

        result = cli(*args, "--step", "10", "--json", env=access)
        assert result.exit_code == 0, result.output
        run = json.loads(result.stdout)
        assert run["twinId"] == "pump-01" and len(run["times"]) == 60
        assert [s["telemetry"] for s in run["series"]] == list(pump["expected"])
        assert all(len(s["values"]) == 60 for s in run["series"])

        result = cli(*args, "--set", "noSuchParameter=1", env=access)
        assert result.exit_code == 1
        assert "error: parameters.noSuchParameter: the FMU has no parameter" in result.output
        assert "(BAD_USER_INPUT)" in result.output
        result = cli(*args, env={"TWINFORGE_API_KEY": "tfk_wrong"})
        assert result.exit_code == 1 and "(UNAUTHENTICATED)" in result.output
