"""The twinforge server: every part wired together, embedded defaults or configured URLs.

:class:`TwinServer` starts the graph (embedded FalkorDB, or Neo4j/FalkorDB by URL), Ray
with its dashboard and the asset fleet, the ingest pipeline behind MQTT (embedded broker
or ``TWINFORGE_MQTT_URL``) and, when configured, OPC UA, the command service with its
safety policy and audit log, the GraphQL API and the Prometheus endpoint.
``twinforge serve`` runs it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinforge.actors.alarms import AlarmRule, load_alarm_rules
from twinforge.actors.asset_host import HostConfig
from twinforge.actors.fleet import AssetFleet
from twinforge.actors.twin_sync import TwinSync
from twinforge.config import Settings, get_settings
from twinforge.graphql.api_keys import ApiKeyStore
from twinforge.graphql.app import create_app
from twinforge.graphql.auth import Authenticator
from twinforge.graphql.context import ApiServices
from twinforge.graphql.limits import RateLimiter
from twinforge.graphql.serving import ApiServer
from twinforge.graphql.tokens import TokenIssuer, load_or_create_secret
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.embedded_broker import EmbeddedBroker, mqtt_endpoint
from twinforge.ingest.metrics import IngestMetrics, MetricsServer
from twinforge.ingest.mqtt import MQTT_3_1_1, MQTT_5, MqttIngest, load_topic_mappings
from twinforge.ingest.mqtt_commands import MqttCommandTransport
from twinforge.ingest.opcua import OpcUaIngest, discover_mappings, load_mappings
from twinforge.ingest.opcua_commands import OpcUaCommandTransport
from twinforge.ingest.pipeline import IngestPipeline
from twinforge.ingest.validation import TelemetryValidator
from twinforge.runtime.commands import AuditLog, CommandService, CommandTransport, SafetyPolicy
from twinforge.runtime.events import EventBus, EventKind, TwinEvent
from twinforge.runtime.stores import FalkorDBStore, GraphStore, open_graph_store
from twinforge.runtime.twin_service import NotFound, TwinService
from twinforge.twin_models.elements import Interface

log = logging.getLogger(__name__)

#: Client id of the server's MQTT session: fixed, so a restarted server resumes the
#: persistent session and receives what the broker kept while it was down.
MQTT_CLIENT_ID = "twinforge-ingest"


@dataclass
class Endpoints:
    """Where a running server can be reached."""

    graphql: str
    mqtt: str
    metrics: str
    dashboard: str | None
    opcua: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class TwinServer:
    """Starts and stops every part; attributes give access to them while running."""

    def __init__(self, settings: Settings | None = None, *, dashboard: bool = True) -> None:
        self.settings = settings or get_settings()
        self.dashboard = dashboard
        self.graph: GraphStore | None = None
        self.twins: TwinService | None = None
        self.fleet: AssetFleet | None = None
        self.sync: TwinSync | None = None
        self.metrics = IngestMetrics()
        self.metrics_server: MetricsServer | None = None
        self.dead_letters: DeadLetterStore | None = None
        self.validator: TelemetryValidator | None = None
        self.pipeline: IngestPipeline | None = None
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttIngest | None = None
        self.opcua: OpcUaIngest | None = None
        self.commands: CommandService | None = None
        self.live = EventBus()
        """Telemetry and alarm events of the asset actors, for GraphQL subscriptions."""
        self.api_keys: ApiKeyStore | None = None
        self.api: ApiServer | None = None
        self.endpoints: Endpoints | None = None
        self._mqtt_commands: MqttCommandTransport | None = None
        self._opcua_commands: OpcUaCommandTransport | None = None
        self._opcua_twins: frozenset[str] = frozenset()
        self._ray_started = False

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> TwinServer:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        settings = self.settings
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.graph = open_graph_store(settings.graph_url, data_dir)
        self.twins = TwinService(self.graph)
        dashboard_url = self._start_ray()
        rules = load_alarm_rules(settings.alarm_rules) if settings.alarm_rules else []
        self.fleet = AssetFleet(
            HostConfig(
                data_dir,
                history_url=settings.history_url,
                graph_url=self._graph_url_for_actors(),
                alarm_rules=tuple(rules),
                lineage=self._lineages(rules),
            ),
            assets_per_host=settings.assets_per_host,
        )
        self.sync = TwinSync(self.twins, self.fleet).start()
        self.metrics_server, _ = self.metrics.serve(port=settings.metrics_port)
        self.dead_letters = DeadLetterStore.in_data_dir(data_dir)
        self.validator = TelemetryValidator(self.sync.model_of, self._interface_of_model)
        self.twins.bus.add_listener(self._on_model_change)
        self.pipeline = IngestPipeline(
            self.validator, self.fleet, self.dead_letters, self.metrics, live=self.live
        )
        host, port, self.broker = mqtt_endpoint(settings)
        mappings = (
            load_topic_mappings(settings.mqtt_mappings.read_text(encoding="utf-8"))
            if settings.mqtt_mappings
            else []
        )
        # The embedded broker (amqtt) speaks MQTT 3.1.1 only; real brokers get MQTT 5.
        protocol = MQTT_3_1_1 if self.broker is not None else MQTT_5
        self.mqtt = MqttIngest(
            self.pipeline,
            host,
            port,
            client_id=MQTT_CLIENT_ID,
            mappings=mappings,
            protocol=protocol,
        ).start()
        self._mqtt_commands = MqttCommandTransport(host, port, protocol=protocol).start()
        if settings.opcua_url:
            self._start_opcua(settings.opcua_url)
        policy = (
            SafetyPolicy.from_file(settings.safety_policy)
            if settings.safety_policy
            else SafetyPolicy.from_config({})
        )
        self.commands = CommandService(
            self._interface_of_twin,
            self._transport_for,
            policy,
            AuditLog(data_dir / "audit.sqlite3"),
            self.fleet,
        )
        self.metrics.actor_processes(len(self.fleet.directory.hosts()))
        self.metrics.assets_live(len(self.sync.twins()))
        self.api = self._start_api(data_dir)
        # Everything built so far (Ray, the graph client, schemas) lives as long as the
        # server: moved out of the collector's view, full collections stop rescanning it
        # (they took up to 0.4 s each under API load). Collect first, so that start-up
        # garbage is not kept for good.
        gc.collect()
        gc.freeze()
        self.endpoints = Endpoints(
            graphql=self.api.url,
            mqtt=f"mqtt://{host}:{port}",
            metrics=self.metrics_server.url,
            dashboard=dashboard_url,
            opcua=settings.opcua_url,
        )

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call more than once."""
        for step in (
            lambda: self.api and self.api.stop(),
            self.live.close,
            lambda: self.mqtt and self.mqtt.stop(),
            lambda: self.opcua and self.opcua.stop(),
            lambda: self.pipeline and self.pipeline.close(),
            lambda: self._mqtt_commands and self._mqtt_commands.stop(),
            lambda: self._opcua_commands and asyncio.run(self._opcua_commands.close()),
            lambda: self.fleet and self.fleet.close(),
            lambda: self.broker and self.broker.stop(),
            lambda: self.metrics_server and self.metrics_server.stop(),
            lambda: self.dead_letters and self.dead_letters.close(),
            lambda: self.api_keys and self.api_keys.close(),
            lambda: self.graph and self.graph.close(),
            self._stop_ray,
        ):
            try:
                step()
            except Exception:
                log.exception("shutdown step failed")
        self.api = self.api_keys = None
        self.mqtt = self.opcua = self.pipeline = self.fleet = self.broker = None
        self._mqtt_commands = self._opcua_commands = None
        self.metrics_server = self.dead_letters = self.graph = None

    def __enter__(self) -> TwinServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- parts ---------------------------------------------------------------------

    def _start_ray(self) -> str | None:
        import ray

        if ray.is_initialized():
            return None
        context = ray.init(
            address=self.settings.ray_address,
            namespace="twinforge",
            include_dashboard=self.dashboard if self.settings.ray_address is None else None,
            dashboard_host="127.0.0.1",
            dashboard_port=self.settings.dashboard_port,
            log_to_driver=False,
            configure_logging=False,
        )
        self._ray_started = True
        url = getattr(context, "dashboard_url", None)
        return f"http://{url}" if url and not url.startswith("http") else url

    def _stop_ray(self) -> None:
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def _start_api(self, data_dir: Path) -> ApiServer:
        settings = self.settings
        assert self.twins is not None
        self.api_keys = ApiKeyStore.in_data_dir(data_dir)
        secret = settings.jwt_secret or load_or_create_secret(data_dir / "jwt_secret")
        tokens = TokenIssuer(secret)
        services = ApiServices(
            twins=self.twins,
            authenticator=Authenticator(self.api_keys, tokens),
            keys=self.api_keys,
            tokens=tokens,
            live=self.live,
            assets=self.fleet,
            commands=self.commands,
            dead_letters=self.dead_letters,
            rate_limiter=RateLimiter(settings.api_rate_limit, int(2 * settings.api_rate_limit))
            if settings.api_rate_limit > 0
            else None,
        )
        return ApiServer(create_app(services), settings.api_host, settings.api_port).start()

    def _start_opcua(self, endpoint: str) -> None:
        settings = self.settings
        if settings.opcua_mappings:
            mappings = load_mappings(settings.opcua_mappings)
        else:
            mappings = asyncio.run(discover_mappings(endpoint))
        assert self.pipeline is not None
        self.opcua = OpcUaIngest(endpoint, mappings, self.pipeline)
        self.opcua.start()
        self._opcua_twins = frozenset(m.twin_id for m in mappings)
        self._opcua_commands = OpcUaCommandTransport(endpoint)

    def _graph_url_for_actors(self) -> str | None:
        """The URL actor processes use for property write-back: the configured one, or
        the embedded FalkorDB's own address."""
        if self.settings.graph_url:
            return self.settings.graph_url
        if isinstance(self.graph, FalkorDBStore) and self.graph.server is not None:
            return self.graph.server.url
        return None

    def _lineages(self, rules: list[AlarmRule]) -> dict[str, tuple[str, ...]]:
        assert self.twins is not None
        if not rules:
            return {}
        return {
            model.id: tuple(self.twins.models.lineage(model.id))
            for model in self.twins.models.list()
        }

    def _interface_of_model(self, model_id: str) -> Interface | None:
        assert self.twins is not None
        try:
            return self.twins.models.interface(model_id)
        except NotFound:
            return None

    def _interface_of_twin(self, twin_id: str) -> Interface:
        assert self.sync is not None
        model = self.sync.model_of(twin_id)
        interface = None if model is None else self._interface_of_model(model)
        if interface is None:
            raise LookupError(f"no twin {twin_id!r}")
        return interface

    def _transport_for(self, twin_id: str) -> CommandTransport:
        if twin_id in self._opcua_twins and self._opcua_commands is not None:
            return self._opcua_commands
        assert self._mqtt_commands is not None
        return self._mqtt_commands

    def _on_model_change(self, event: TwinEvent) -> None:
        if event.kind in (EventKind.MODEL_CREATED, EventKind.MODEL_DELETED) and self.validator:
            self.validator.forget()

    def status(self) -> dict[str, Any]:
        """Counts for the CLI and health checks."""
        assert self.fleet is not None and self.pipeline is not None and self.mqtt is not None
        return {
            "assets": len(self.sync.twins()) if self.sync else 0,
            "hosts": len(self.fleet.directory.hosts()),
            "received": self.mqtt.received,
            "accepted": self.pipeline.accepted,
            "rejected": self.pipeline.rejected,
        }
