"""The installed package works outside the source tree: the wheel, built as a user builds
it, installed into a fresh virtual environment, runs the demo from an empty directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def test_the_wheel_runs_the_demo_from_an_empty_directory(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (the README installs it with pip install uv)"
    # Neither this checkout's virtual environment nor its source tree may leak in.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "UV_"))
    }
    dist = tmp_path / "dist"
    _run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(REPO)],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    [wheel] = dist.glob("twinforge-*.whl")
    venv = tmp_path / "venv"
    _run([uv, "venv", "--python", "3.11", str(venv)], cwd=tmp_path, env=env, timeout=120)
    python = venv / "bin" / "python"
    _run(
        [uv, "pip", "install", "--python", str(python), str(wheel)],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    demo_env = env | {
        "TWINFORGE_API_PORT": "0",
        "TWINFORGE_METRICS_PORT": "0",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    out = _run(
        [str(venv / "bin" / "twinforge"), "demo", "--duration", "20", "--no-dashboard"],
        cwd=empty,
        env=demo_env,
        timeout=300,
    )
    where = _run(
        [str(python), "-c", "import twinforge, sys; print(twinforge.__file__)"],
        cwd=empty,
        env=env,
        timeout=60,
    )
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the checkout
    ready = json.loads(out.split("ready:", 1)[1].splitlines()[0])
    # "stopped: received N, accepted N, rejected N, left for redelivery N, ..."
    stopped_line = out.split("stopped:", 1)[1].splitlines()[0]
    stopped = {k.strip(): int(v) for k, v in re.findall(r"([a-z ]+) (\d+)", stopped_line)}
    assert ready["assets"] > 24  # the sample factory: 24 machines and the ISA-95 levels above
    assert stopped["accepted"] > 0 and stopped["rejected"] == 0, out
    assert (empty / ".twinforge").is_dir()  # its data dir, in the directory it ran from
