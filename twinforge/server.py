"""The twinforge server: an ordered list of parts, embedded defaults or configured URLs.

:class:`TwinServer` starts the graph (embedded FalkorDB, or Neo4j/FalkorDB by URL), Ray
with its dashboard, the live feed, the asset fleet, the Prometheus endpoint, the ingest
pipeline, MQTT (embedded broker or ``TWINFORGE_MQTT_URL``) and, when configured, OPC UA,
the command service with its safety policy and audit log, and the GraphQL API; it stops
them in reverse order. ``twinforge serve`` runs it; a new feature adds a part.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, TypeVar

from twinforge.actors.part import FleetPart, RayPart, start_fleet, start_ray
from twinforge.config import Settings, get_settings
from twinforge.connectivity.mqtt.part import MqttPart, start_mqtt
from twinforge.connectivity.opcua.part import OpcUaPart, start_opcua
from twinforge.ingest.part import IngestPart, start_ingest
from twinforge.lifecycle import Part, Running, stop_each
from twinforge.metrics import MetricsPart, start_metrics
from twinforge.runtime.commands import CommandTransport
from twinforge.runtime.commands.part import CommandsPart, start_commands
from twinforge.runtime.part import GraphPart, LiveFeed, start_graph, start_live_feed
from twinforge.twin_models.elements import Interface
from twinforge.web.part import ApiPart, start_api

__all__ = [
    "ApiPart",
    "CommandsPart",
    "FleetPart",
    "GraphPart",
    "IngestPart",
    "LiveFeed",
    "MetricsPart",
    "MqttPart",
    "OpcUaPart",
    "RayPart",
    "TwinServer",
]

P = TypeVar("P")


class TwinServer(Running):
    """Starts its parts in order and stops them in reverse; :meth:`part` finds one."""

    def __init__(self, settings: Settings | None = None, *, dashboard: bool = True) -> None:
        self.settings = settings or get_settings()
        self.dashboard = dashboard
        self.parts: list[Part] = []

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> TwinServer:
        try:
            self._start_parts(self.settings.data_dir.resolve())
        except BaseException:
            self.stop()
            raise
        # Everything built so far (Ray, the graph client, schemas) lives as long as the
        # server: moved out of the collector's view, full collections stop rescanning it
        # (they took up to 0.4 s each under API load). Collect first, so that start-up
        # garbage is not kept for good.
        gc.collect()
        gc.freeze()
        return self

    def add(self, part: P) -> P:
        """Count ``part`` as started: it is stopped with the server."""
        self.parts.append(part)  # type: ignore[arg-type]
        return part

    def _start_parts(self, data_dir: Path) -> None:
        settings = self.settings
        data_dir.mkdir(parents=True, exist_ok=True)
        graph = self.add(start_graph(settings.graph_url, data_dir))
        self.add(
            start_ray(
                settings.ray_address,
                dashboard=self.dashboard,
                dashboard_port=settings.dashboard_port,
            )
        )
        live = self.add(start_live_feed())
        fleet = self.add(
            start_fleet(
                graph.twins,
                data_dir,
                history_url=settings.history_url,
                graph_url=graph.url_for_other_processes(settings.graph_url),
                alarm_rules=settings.alarm_rules,
                assets_per_host=settings.assets_per_host,
            )
        )
        metrics = self.add(start_metrics(settings.metrics_port)).metrics
        ingest = self.add(
            start_ingest(
                data_dir,
                model_of=fleet.sync.model_of,
                interface_of=graph.interface_of_model,
                router=fleet.fleet,
                metrics=metrics,
                live=live.bus,
            )
        )
        graph.twins.bus.add_listener(ingest.on_model_change)
        self.add(start_mqtt(settings, ingest.pipeline))
        if settings.opcua_url:
            self.add(start_opcua(settings.opcua_url, settings.opcua_mappings, ingest.pipeline))
        commands = self.add(
            start_commands(
                settings.safety_policy,
                data_dir,
                interface_of=self._interface_of_twin,
                transport_for=self._transport_for,
                alarms=fleet.fleet,
            )
        )
        metrics.actor_processes(len(fleet.fleet.directory.hosts()))
        metrics.assets_live(len(fleet.sync.twins()))
        services = {
            "twins": graph.twins,
            "live": live.bus,
            "assets": fleet.fleet,
            "commands": commands.service,
            "dead_letters": ingest.dead_letters,
        }
        self.add(start_api(settings, data_dir, services))

    def stop(self) -> None:
        """Stop every part started, in reverse order; safe to call more than once."""
        parts, self.parts = self.parts, []
        stop_each(part.stop for part in reversed(parts))

    def part(self, kind: type[P]) -> P:
        """The started part of type ``kind``; ``LookupError`` when there is none."""
        for part in self.parts:
            if isinstance(part, kind):
                return part
        raise LookupError(f"no {kind.__name__} is running")

    def has(self, kind: type[Any]) -> bool:
        return any(isinstance(part, kind) for part in self.parts)

    @property
    def endpoints(self) -> dict[str, str]:
        """Where each part can be reached, label to URL, in start order."""
        return {label: url for part in self.parts for label, url in part.endpoints.items()}

    def banner(self) -> list[str]:
        """What the CLI prints once the server is up: a line per endpoint, the last part
        started (the API people use) first."""
        return [f"{label + ':':<15} {url}" for label, url in reversed(self.endpoints.items())]

    def status(self) -> dict[str, Any]:
        """Counts for the CLI and health checks (empty once stopped)."""
        if not self.has(IngestPart):
            return {}
        fleet, pipeline = self.part(FleetPart), self.part(IngestPart).pipeline
        return {
            "assets": len(fleet.sync.twins()),
            "hosts": len(fleet.fleet.directory.hosts()),
            "received": self.part(MqttPart).ingest.received,
            "accepted": pipeline.accepted,
            "rejected": pipeline.rejected,
        }

    # -- glue between parts ----------------------------------------------------------

    def _interface_of_twin(self, twin_id: str) -> Interface:
        model = self.part(FleetPart).sync.model_of(twin_id)
        interface = None if model is None else self.part(GraphPart).interface_of_model(model)
        if interface is None:
            raise LookupError(f"no twin {twin_id!r}")
        return interface

    def _transport_for(self, twin_id: str) -> CommandTransport:
        if self.has(OpcUaPart) and twin_id in (opcua := self.part(OpcUaPart)).twins:
            return opcua.commands
        return self.part(MqttPart).commands
