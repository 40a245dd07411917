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
from twinforge.audit.part import start_audit
from twinforge.config import Settings, get_settings
from twinforge.connectivity.mqtt.part import MqttPart, start_mqtt
from twinforge.connectivity.opcua.part import OpcUaPart, start_opcua
from twinforge.ingest.dead_letters import DeadLetterBudget
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
        self._final_status: dict[str, Any] = {}

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
        audit = self.add(start_audit(settings, data_dir))
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
                physics=settings.physics,
                ml=settings.ml,
                mlflow_uri=settings.mlflow_uri,
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
                dead_letter_budget=DeadLetterBudget(
                    settings.dead_letter_max_bytes,
                    settings.dead_letter_max_age_s,
                    settings.dead_letter_source_max_bytes,
                ),
            )
        )
        graph.twins.bus.add_listener(ingest.on_model_change)
        self.add(start_mqtt(settings, ingest.pipeline, audit.trail))
        if settings.opcua_url:
            self.add(start_opcua(settings, ingest.pipeline))
        commands = self.add(
            start_commands(
                settings.safety_policy,
                audit.trail,
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
            "physics": fleet,
            "models": fleet.models,
            "commands": commands.service,
            "dead_letters": ingest.dead_letters,
            "audit": audit.trail,
        }
        self.add(start_api(settings, data_dir, services))

    def stop(self) -> None:
        """Stop every part started, in reverse order; safe to call more than once. The
        counts once everything has stopped stay in :meth:`status`."""
        parts, self.parts = self.parts, []
        if not parts:
            return
        running = self._status(parts)
        stop_each(part.stop for part in reversed(parts))
        if running:
            # Read again now that MQTT has disconnected and the pipeline has drained.
            self._final_status = running | _counts(parts)

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
        """Counts for the CLI and health checks: live while running, the final ones once
        stopped (empty before a start). ``left_for_redelivery``: MQTT messages received but
        not acknowledged at stop, which the broker sends again on the next start (so
        ``received`` can exceed ``accepted + rejected``)."""
        return self._status(self.parts) if self.parts else dict(self._final_status)

    @staticmethod
    def _status(parts: list[Part]) -> dict[str, Any]:
        fleet = _find(parts, FleetPart)
        if fleet is None or _find(parts, MqttPart) is None:
            return {}
        return {
            "assets": len(fleet.sync.twins()),
            "hosts": len(fleet.fleet.directory.hosts()),
            **_counts(parts),
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


def _find(parts: list[Part], kind: type[P]) -> P | None:
    return next((part for part in parts if isinstance(part, kind)), None)


def _counts(parts: list[Part]) -> dict[str, int]:
    """Ingest's counters (readable after the parts stopped): every message received is
    accepted, rejected or left for redelivery (some accepted ones may be too: made
    durable after the disconnect, so never acknowledged)."""
    mqtt, ingest = _find(parts, MqttPart), _find(parts, IngestPart)
    assert mqtt is not None and ingest is not None
    return {
        "received": mqtt.ingest.received,
        "accepted": ingest.pipeline.accepted,
        "rejected": ingest.pipeline.rejected,
        "left_for_redelivery": mqtt.ingest.left_for_redelivery,
        "dead_letters_dropped": sum(ingest.dead_letters.dropped().values()),
    }
