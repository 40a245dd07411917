"""`twinforge serve` as a user runs it: embedded defaults, the sample plant imported, the
Ray dashboard listing asset hosts by the assets they hold, metrics served."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
from support.cli_process import free_port, running_twinforge

from twinforge.sim.layout import sample_plant

pytestmark = pytest.mark.slow


def test_serve_runs_the_plant_with_its_dashboard(tmp_path: Path) -> None:
    plant = tmp_path / "plant.ndjson"
    plant.write_text(sample_plant(equipment=6).to_import_ndjson())
    env = os.environ | {
        "TWINFORGE_DATA_DIR": str(tmp_path / "data"),
        "TWINFORGE_METRICS_PORT": "0",
        "TWINFORGE_API_PORT": "0",
        "TWINFORGE_DASHBOARD_PORT": str(free_port()),
    }
    with running_twinforge(["serve", "--import", str(plant), "--duration", "60"], env) as running:
        output = running.output
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
            hosts = [
                a for a in actors if a["class_name"] == "AssetHostProcess" and a["state"] == "ALIVE"
            ]
            if hosts and hosts[0].get("repr_name"):
                break
            assert time.monotonic() < deadline, actors
            time.sleep(1)
        assert "cnc-01" in hosts[0]["repr_name"] or "+" in hosts[0]["repr_name"]
        assert hosts[0]["repr_name"].startswith("AssetHost-0[")
    # Every message accounted for at stop; the graph's password on no line printed.
    stopped = r"stopped: received (\d+), accepted (\d+), rejected (\d+), left for redelivery (\d+)"
    assert re.search(stopped, running.rest), running.rest
    password = (tmp_path / "data" / "falkordb" / "falkordb.password").read_text().strip()
    assert password and password not in output + running.rest
