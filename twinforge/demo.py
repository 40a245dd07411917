"""``twinforge demo``: the sample factory, everything embedded.

Seeds the graph with the factory's DTDL models (``examples/models``) and its twins,
starts the server (graph, Ray fleet, embedded MQTT broker, GraphQL API), plays the plant
simulator with faults scheduled so that alarms come and go, and issues an admin API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from twinforge.config import Settings
from twinforge.ingest.plant import PlantLayout, sample_plant
from twinforge.ingest.plant_physics import random_fault_schedule
from twinforge.ingest.simulator import PlantSimulator
from twinforge.runtime.stores import open_graph_store
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.server import TwinServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_EQUIPMENT = 24


@dataclass
class Demo:
    server: TwinServer
    simulator: PlantSimulator
    layout: PlantLayout
    admin_key: str

    def stop(self) -> None:
        try:
            self.simulator.stop_background()
        finally:
            self.server.stop()


def demo_settings(settings: Settings) -> Settings:
    """The example alarm rules and safety policy, unless configured otherwise."""
    return settings.model_copy(
        update={
            "alarm_rules": settings.alarm_rules or EXAMPLES / "alarm_rules.json",
            "safety_policy": settings.safety_policy or EXAMPLES / "safety_policy.json",
        }
    )


def seed(settings: Settings, layout: PlantLayout) -> int:
    """Import the factory into the graph unless an earlier run did; returns twins added."""
    store = open_graph_store(settings.graph_url, settings.data_dir.resolve())
    try:
        service = TwinService(store)
        if service.models.list():
            return 0
        report = import_ndjson(service, layout.to_import_ndjson().splitlines())
        if report.errors:
            raise RuntimeError(f"the sample factory did not import: {report.errors[:3]}")
        return report.twins
    finally:
        store.close()


def start_demo(
    settings: Settings,
    *,
    equipment: int = DEMO_EQUIPMENT,
    rate_hz: float = 1.0,
    time_scale: float = 10.0,
    dashboard: bool = True,
) -> Demo:
    """Seed, start the server and the simulator; faults recur every few minutes of plant
    time so alarms show up while you watch."""
    settings = demo_settings(settings)
    layout = sample_plant(equipment)
    seed(settings, layout)
    server = TwinServer(settings, dashboard=dashboard).start()
    try:
        assert server.endpoints is not None and server.api_keys is not None
        host, _, port = server.endpoints.mqtt.removeprefix("mqtt://").rpartition(":")
        simulator = PlantSimulator(
            layout,
            mqtt_host=host,
            mqtt_port=int(port),
            opcua_port=None,
            rate_hz=rate_hz,
            time_scale=time_scale,
            schedule=random_fault_schedule(
                layout, count=max(4, equipment // 2), horizon_s=3600.0, duration_s=(60, 240)
            ),
            # The embedded broker speaks MQTT 3.1.1 only.
            mqtt_protocol=mqtt.MQTTv311 if server.broker is not None else mqtt.MQTTv5,
        )
        simulator.start_background()
        issued = server.api_keys.create("demo-admin", ["admin"])
    except BaseException:
        server.stop()
        raise
    return Demo(server, simulator, layout, issued.secret)


__all__ = ["DEMO_EQUIPMENT", "Demo", "demo_settings", "seed", "start_demo"]
