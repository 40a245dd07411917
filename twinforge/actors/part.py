"""The actors' parts of a running server: Ray, and the asset fleet kept in step with the
graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from twinforge.actors.alarms import AlarmRule, load_alarm_rules
from twinforge.actors.asset_host import HostConfig
from twinforge.actors.fleet import AssetFleet
from twinforge.actors.twin_sync import TwinSync
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
    endpoints: dict[str, str] = field(default_factory=dict)

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
) -> FleetPart:
    """Host every twin of the graph, with the alarm rules of ``alarm_rules`` (a JSON file)."""
    rules = load_alarm_rules(alarm_rules) if alarm_rules else []
    fleet = AssetFleet(
        HostConfig(
            data_dir,
            history_url=history_url,
            graph_url=graph_url,
            alarm_rules=tuple(rules),
            lineage=_lineages(twins, rules),
        ),
        assets_per_host=assets_per_host,
    )
    try:
        sync = TwinSync(twins, fleet).start()
    except BaseException:
        fleet.close()
        raise
    return FleetPart(fleet, sync)


def _lineages(twins: TwinService, rules: list[AlarmRule]) -> dict[str, tuple[str, ...]]:
    if not rules:
        return {}
    return {model.id: tuple(twins.models.lineage(model.id)) for model in twins.models.list()}
