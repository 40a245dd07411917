"""The actors' parts of a running server: Ray, and the asset fleet kept in step with the
graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinforge.actors.alarms import load_alarm_rules
from twinforge.actors.asset_host import HostConfig
from twinforge.actors.fleet import AssetFleet
from twinforge.actors.physics import plans_file, save_plans
from twinforge.actors.training import ModelService, twins_of
from twinforge.actors.twin_sync import TwinSync
from twinforge.ml.config import ModelBinding, load_model_config
from twinforge.physics.checks import PhysicsPlan
from twinforge.physics.config import PhysicsBinding, load_physics_config
from twinforge.physics.library import PhysicsLibrary
from twinforge.physics.what_if import WhatIf, WhatIfResult
from twinforge.runtime.twin_service import TwinService

__all__ = ["FleetPart", "RayPart", "start_fleet", "start_ray"]


@dataclass
class RayPart:
    """Ray, started here (and shut down on stop) unless this process had it running."""

    started: bool
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def start_ray(address: str | None, *, dashboard: bool, dashboard_port: int) -> RayPart:
    """Join the cluster at ``address``, or start a local Ray (with its dashboard)."""
    import ray

    if ray.is_initialized():
        return RayPart(started=False)
    context = ray.init(
        address=address,
        namespace="twinforge",
        include_dashboard=dashboard if address is None else None,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
        configure_logging=False,
    )
    url = getattr(context, "dashboard_url", None)
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return RayPart(started=True, endpoints={"Ray dashboard": url} if url else {})


@dataclass
class FleetPart:
    """An asset per twin, in asset hosts on Ray, following the graph's twins."""

    fleet: AssetFleet
    sync: TwinSync
    physics: PhysicsLibrary
    models: ModelService | None = None
    """The API's model service (None: no model configuration)."""
    endpoints: dict[str, str] = field(default_factory=dict)

    # The API's physics service: reads and what-if runs go to the fleet.

    def physics_of(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return self.fleet.physics_of(twin_ids)

    def simulate(self, twin_id: str, request: WhatIf) -> WhatIfResult:
        return self.fleet.simulate(twin_id, request)

    def bind_fmu(
        self, interface: str, fmu: bytes, binding: PhysicsBinding | None = None
    ) -> PhysicsPlan:
        """Check and bind a new FMU version to ``interface``; the running twins of it
        swap to it on their next sample, without a restart."""
        plan = self.physics.upload(interface, fmu, binding)
        save_plans(self.fleet.config.data_dir, self.physics.all_plans())
        self.fleet.set_physics(self.physics.all_plans())
        return plan

    def stop(self) -> None:
        self.fleet.close()


def start_fleet(
    twins: TwinService,
    data_dir: Path,
    *,
    history_url: str | None,
    graph_url: str | None,
    alarm_rules: Path | None,
    assets_per_host: int,
    physics: Path | list[PhysicsBinding] | None = None,
    ml: Path | list[ModelBinding] | None = None,
    mlflow_uri: str | None = None,
) -> FleetPart:
    """Host every twin of the graph, with the alarm rules of ``alarm_rules`` (a JSON file),
    the FMUs of ``physics`` (a physics configuration file, or its bindings) and the
    anomaly models of ``ml`` (a model configuration file, or its entries)."""
    models = load_model_config(ml) if isinstance(ml, Path) else ml or []
    rules = load_alarm_rules(alarm_rules) if alarm_rules else []
    bindings = load_physics_config(physics) if isinstance(physics, Path) else physics or []
    library = PhysicsLibrary(data_dir, bindings, twins.models.interface)
    plans = library.all_plans()
    if plans or plans_file(data_dir).exists():  # an earlier run's plans must not linger
        save_plans(data_dir, plans)
    fleet = AssetFleet(
        HostConfig(
            data_dir,
            history_url=history_url,
            graph_url=graph_url,
            alarm_rules=tuple(rules),
            lineage=_lineages(twins) if rules or plans or models else {},
            physics=plans,
            ml=tuple((m.name, m.interface) for m in models),
        ),
        assets_per_host=assets_per_host,
    )
    try:
        sync = TwinSync(twins, fleet).start()
    except BaseException:
        fleet.close()
        raise
    service = None
    if models:
        service = ModelService(
            fleet,
            lambda interface: twins_of(twins, interface),
            models,
            data_dir=data_dir,
            history_url=history_url,
            mlflow_uri=mlflow_uri,
        )
    return FleetPart(fleet, sync, library, service)


def _lineages(twins: TwinService) -> dict[str, tuple[str, ...]]:
    return {model.id: tuple(twins.models.lineage(model.id)) for model in twins.models.list()}
