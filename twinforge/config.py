"""Process-wide settings, read from ``TWINFORGE_*`` environment variables.

Every external service has an embedded default and a URL setting: leave the URL unset to
use the embedded service, set it to talk to a real one.
"""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """twinforge settings; each field ``name`` is read from ``TWINFORGE_NAME``."""

    model_config = SettingsConfigDict(env_prefix="TWINFORGE_", extra="ignore")

    graph_url: str | None = None
    """Graph database URL (``falkordb://...``, ``bolt://...`` or ``neo4j://...``).
    None means the embedded FalkorDB, run as a child process with its data in ``data_dir``."""

    mqtt_url: str | None = None
    """MQTT broker URL (``mqtt://host:port``). None means the embedded broker."""

    history_url: str | None = None
    """Telemetry history store URL. None means the embedded store under ``data_dir``."""

    data_dir: Path = Path(".twinforge")
    """Directory for the embedded services' data, write-ahead logs and caches."""

    mqtt_mappings: Path | None = None
    """JSON list of topic mappings for telemetry outside ``twins/{id}/telemetry``."""

    opcua_url: str | None = None
    """OPC UA server (``opc.tcp://host:port``) to subscribe to and command. None: none."""

    opcua_mappings: Path | None = None
    """JSON list of OPC UA node mappings; None discovers them by the plant convention."""

    safety_policy: Path | None = None
    """Safety policy for commands (JSON). None: roles only (operators and up may command;
    DTDL request schemas still apply)."""

    alarm_rules: Path | None = None
    """Threshold alarm rules (JSON list) that the asset actors evaluate on telemetry."""

    assets_per_host: int = 700
    """Assets hosted per Ray actor process (each process costs about 110 MB; see
    :data:`twinforge.actors.fleet.DEFAULT_ASSETS_PER_HOST`)."""

    ray_address: str | None = None
    """Ray cluster to join (``host:port``); None starts a local one."""

    dashboard_port: int = 8265
    """Ray dashboard port of a local cluster."""

    metrics_port: int = 9464
    """Prometheus metrics port (0: any free port)."""

    api_host: str = "127.0.0.1"
    """Interface the GraphQL API listens on (``0.0.0.0`` for every one)."""

    api_port: int = 8000
    """GraphQL API port (0: any free port); the endpoint is ``/graphql``."""

    jwt_secret: str | None = None
    """Secret that signs JWT bearer tokens. None: a random one kept in ``data_dir``."""

    api_rate_limit: float = 1000.0
    """Requests per second each API key or user may make (bursts of twice that)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once.

    Tests that change the environment call ``get_settings.cache_clear()``.
    """
    return Settings()
