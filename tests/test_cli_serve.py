"""`twinforge serve` as a user runs it: embedded defaults, the sample plant imported, the
Ray dashboard listing asset hosts by the assets they hold, metrics served."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from twinforge.ingest.plant import sample_plant

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_the_plant_with_its_dashboard(tmp_path: Path) -> None:
    plant = tmp_path / "plant.ndjson"
    plant.write_text(sample_plant(equipment=6).to_import_ndjson())
    env = os.environ | {
        "TWINFORGE_DATA_DIR": str(tmp_path / "data"),
        "TWINFORGE_METRICS_PORT": "0",
        "TWINFORGE_API_PORT": "0",
        "TWINFORGE_DASHBOARD_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "twinforge", "serve", "--import", str(plant), "--duration", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        output = "".join(lines)
        assert "ready:" in output, output
        assert json.loads(output.split("ready:", 1)[1])["assets"] == len(sample_plant(6).twins)
        dashboard = re.search(r"Ray dashboard:\s+(http://\S+)", output)
        metrics = re.search(r"Metrics:\s+(http://\S+)", output)
        assert dashboard and metrics, output
        assert b"twinforge_assets_live" in urllib.request.urlopen(metrics[1], timeout=10).read()
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(
            f"{dashboard[1]}/api/v0/actors?limit=100&detail=1",
            headers={"Authorization": f"Bearer {token}"},
        )
        deadline = time.monotonic() + 60
        while True:
            actors = json.load(urllib.request.urlopen(request, timeout=10))["data"]["result"][
                "result"
            ]
            hosts = [a for a in actors if a["class_name"] == "AssetHost" and a["state"] == "ALIVE"]
            if hosts and hosts[0].get("repr_name"):
                break
            assert time.monotonic() < deadline, actors
            time.sleep(1)
        assert "cnc-01" in hosts[0]["repr_name"] or "+" in hosts[0]["repr_name"]
        assert hosts[0]["repr_name"].startswith("AssetHost-0[")
    finally:
        process.terminate()  # SIGTERM: a clean stop
        rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(lines) + rest
    assert "stopped:" in rest
