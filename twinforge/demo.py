"""``twinforge demo``: the sample factory, everything embedded.

:class:`Demo` is a :class:`TwinServer` plus the simulated plant: it seeds the graph with
the factory's DTDL models (``twinforge/sim/factory/models``) and twins, binds the
factory's FMUs to its pumps, molding machines and CNC machines (unless ``physics`` is
configured), starts the server's parts, then the plant simulator with faults scheduled
so that alarms come and go, and gives an admin API key (the same one on every start,
kept in the data dir).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from twinforge.actors.part import FleetPart
from twinforge.actors.training import ModelService
from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.devices import plant_credential
from twinforge.config import Settings
from twinforge.runtime.stores import open_graph_store
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.server import ApiPart, MqttPart, TwinServer
from twinforge.sim.factory import ALARM_RULES, ML, SAFETY_POLICY, sample_physics
from twinforge.sim.fmus import FMU_NAMES, fmu_path
from twinforge.sim.layout import PlantLayout, sample_plant
from twinforge.sim.machines import random_fault_schedule
from twinforge.sim.part import SimulatorPart, start_simulator
from twinforge.sim.simulator import PlantSimulator

__all__ = [
    "DEMO_EQUIPMENT",
    "Demo",
    "build_sample_fmus",
    "demo_admin_key",
    "demo_settings",
    "seed",
    "write_sample_physics",
]

log = logging.getLogger(__name__)

DEMO_EQUIPMENT = 24
#: Seconds of plant history after which the demo trains the models its twins still
#: lack, and again after as long for those that had too little history: until then
#: they are on their alarm rules.
TRAIN_AFTER_S = 90.0
DEMO_ADMIN = "demo-admin"
#: The demo admin key's secret, owner-only, so that each start shows the same key.
ADMIN_KEY_FILE = "demo_admin_key"
#: The sample factory's physics bindings, with the paths of the FMUs built here.
PHYSICS_FILE = "sample_physics.json"


def demo_admin_key(keys: ApiKeyStore, data_dir: Path) -> str:
    """The demo's admin key: the one kept in ``data_dir`` while it is live, else a new
    one (older demo admin keys, whose secrets are lost, are revoked: names are unique)."""
    path = data_dir / ADMIN_KEY_FILE
    try:
        saved = path.read_text().strip()
    except OSError:
        saved = ""
    if saved and keys.verify(saved) is not None:
        return saved
    for old in keys.list():
        if old.name == DEMO_ADMIN and old.revoked is None:
            keys.revoke(old.key_id)
    secret = keys.create(DEMO_ADMIN, ["admin"]).secret
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    os.replace(temporary, path)
    return secret


def demo_settings(settings: Settings) -> Settings:
    """The sample factory's alarm rules, safety policy and models, unless configured
    otherwise."""
    return settings.model_copy(
        update={
            "alarm_rules": settings.alarm_rules or ALARM_RULES,
            "safety_policy": settings.safety_policy or SAFETY_POLICY,
            "ml": settings.ml or ML,
        }
    )


@dataclass
class ModelTrainingPart:
    """Trains, once the plant has run a while, each model of the demo that has no
    promoted version yet, and promotes it: the twins learn their plant's normal."""

    thread: threading.Thread
    stopping: threading.Event
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=120)


def start_model_training(service: ModelService, after_s: float) -> ModelTrainingPart:
    stopping = threading.Event()

    def run() -> None:
        pending = list(service.bindings)
        while pending and not stopping.wait(after_s):
            for name, interface in list(pending):
                if stopping.is_set():
                    return
                try:
                    if not any(v.promoted for v in service.versions(name, interface)):
                        version = service.train(name, interface, hours=24.0)
                        service.promote(name, interface, version.version)
                        log.info("demo: %s model of %s trained and promoted", name, interface)
                    pending.remove((name, interface))
                except ValueError as error:  # too little history yet: again later
                    log.info("demo: %s model of %s not trained yet: %s", name, interface, error)
                except Exception:  # the server stopping, or a bug: no retry
                    log.exception("demo: %s model of %s not trained", name, interface)
                    pending.remove((name, interface))

    thread = threading.Thread(target=run, name="demo-model-training", daemon=True)
    thread.start()
    return ModelTrainingPart(thread, stopping)


def write_sample_physics(data_dir: Path) -> Path:
    """Build the sample factory's FMUs (once per machine) and write its physics
    configuration, with their absolute paths, into ``data_dir``; the file's path."""
    bindings = [b.model_dump(mode="json") for b in sample_physics()]
    path = data_dir / PHYSICS_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(bindings, indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path


def build_sample_fmus(cache_dir: Path | None = None) -> dict[str, Path]:
    """Build twinforge's own FMUs, the sample factory's, into ``cache_dir`` (default: the
    FMU cache); each built FMU's path by name (``twinforge physics build --ours``)."""
    return {name: fmu_path(name, cache_dir) for name in FMU_NAMES}


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


class Demo(TwinServer):
    """The server with the sample factory seeded and its simulator playing; faults recur
    every few minutes of plant time so alarms show up while you watch."""

    def __init__(
        self,
        settings: Settings,
        *,
        equipment: int = DEMO_EQUIPMENT,
        rate_hz: float = 1.0,
        time_scale: float = 1.0,
        dashboard: bool = True,
        train_after_s: float | None = TRAIN_AFTER_S,
    ) -> None:
        super().__init__(demo_settings(settings), dashboard=dashboard)
        self.train_after_s = train_after_s
        """None: no models trained by the demo (``twinforge ml train`` does it)."""
        self.layout = sample_plant(equipment)
        self.rate_hz = rate_hz
        self.time_scale = time_scale
        self.admin_key = ""

    def _start_parts(self, data_dir: Path) -> None:
        if self.settings.physics is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            physics = write_sample_physics(data_dir)
            self.settings = self.settings.model_copy(update={"physics": physics})
        seed(self.settings, self.layout)
        super()._start_parts(data_dir)
        mqtt = self.part(MqttPart)
        plant = mqtt.endpoint
        client_id = ""
        if mqtt.broker is not None:
            # On the embedded broker the plant is a device that owns its twins; against
            # a configured broker it logs in as the server does.
            username, password = plant_credential(data_dir, [t.id for t in self.layout.twins])
            plant = replace(plant, username=username, password=password)
            client_id = f"{username}-plant"
        simulator = PlantSimulator(
            self.layout,
            mqtt_endpoint=plant,
            client_id=client_id,
            mqtt_protocol=mqtt.protocol,
            opcua_port=None,
            rate_hz=self.rate_hz,
            time_scale=self.time_scale,
            # The twins' FMUs step by the telemetry's stamps: the plant's clock keeps
            # them at the plant's pace. At the default real time it is the wall clock:
            # a faster one ran ahead of it, and ingest refused stamps from the future
            # (nine in ten messages of a 300 s demo at 10x were dead-lettered).
            plant_clock=True,
            schedule=random_fault_schedule(
                self.layout,
                count=max(4, len(self.layout.equipment()) // 2),
                horizon_s=900.0 * self.time_scale,
                duration_s=(60, 240),
            ),
        )
        self.add(start_simulator(simulator))
        models = self.part(FleetPart).models
        if models is not None and self.train_after_s is not None:
            self.add(start_model_training(models, self.train_after_s))
        self.admin_key = demo_admin_key(self.part(ApiPart).keys, data_dir)

    @property
    def simulator(self) -> PlantSimulator:
        return self.part(SimulatorPart).simulator

    def banner(self) -> list[str]:
        return [
            *super().banner(),
            f"{'Admin API key:':<15} {self.admin_key}",
            f"{'':<15} (send it as 'Authorization: Bearer <key>'; in GraphiQL, add it",
            f"{'':<15}  under Headers)",
        ]
