"""Process-wide settings, read from ``TWINFORGE_*`` environment variables.

Every external service has an embedded default and a URL setting: leave the URL unset to
use the embedded service, set it to talk to a real one.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
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

    mlflow_uri: str | None = None
    """MLflow tracking URI of the model registry (``http(s)://host:port`` for a tracking
    server, or a database URL). None means embedded SQLite and artifacts under ``data_dir/ml``."""

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

    physics: Path | None = None
    """Physics configuration (JSON list): the FMUs bound to DTDL interfaces, which the
    asset actors step beside the live data (see :mod:`twinforge.physics.config`)."""

    ml: Path | None = None
    """Model configuration (JSON list): the anomaly models the twins of an interface carry
    (see :mod:`twinforge.ml.config`); twins whose model is missing say they are on their
    threshold rules."""

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

    # -- embedded MQTT broker security --
    mqtt_max_packet_bytes: int = Field(default=256 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Largest MQTT packet the embedded broker takes; a bigger one closes that connection."""

    mqtt_publish_rate: float = Field(default=2000.0, gt=0)
    """PUBLISH packets per second each embedded-broker client may send (bursts of twice
    that); above it the broker reads that client more slowly, dropping nothing."""

    mqtt_tls_cert_file: Path | None = None
    """PEM certificate chain for a TLS listener of the embedded broker. None: no TLS."""

    mqtt_tls_key_file: Path | None = None
    """PEM private key of ``mqtt_tls_cert_file``."""

    mqtt_tls_port: int = Field(default=8883, ge=0, le=65535)
    """Port of the embedded broker's TLS listener (0: any free port)."""

    mqtt_tls_host: str = "0.0.0.0"
    """Interface of the embedded broker's TLS listener (the plain one stays on loopback)."""

    # -- dead letters --
    dead_letter_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    """Bytes of dead letters kept in all; past it the oldest are deleted (and counted)."""

    dead_letter_max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Seconds a dead letter is kept; older ones are deleted (and counted)."""

    dead_letter_source_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    """Bytes of dead letters kept per source (a twin of the graph, or one bucket per
    transport for everything else), so that one noisy sender cannot push out the others';
    at most ``dead_letter_max_bytes``."""

    # -- OPC UA security --
    opcua_security: str = "Basic256Sha256,SignAndEncrypt"
    """``Policy,Mode`` of the OPC UA connection: policy ``Basic256Sha256``,
    ``Aes128_Sha256_RsaOaep`` or ``Aes256_Sha256_RsaPss``, mode ``Sign`` or
    ``SignAndEncrypt``; ``None`` (no signing, no encryption) only when set so."""

    opcua_username: str | None = None
    """User name for the OPC UA session; needs ``opcua_password`` or ``opcua_password_file``."""

    opcua_password: SecretStr | None = None
    """Password of ``opcua_username`` (prefer ``opcua_password_file``)."""

    opcua_password_file: Path | None = None
    """File holding the password of ``opcua_username`` (one trailing newline is dropped)."""

    opcua_user_certificate: Path | None = None
    """Certificate (PEM or DER) for an X.509 user identity, instead of a user name."""

    opcua_user_private_key: Path | None = None
    """PEM private key of ``opcua_user_certificate``."""

    opcua_certificate: Path | None = None
    """twinforge's OPC UA application certificate (PEM or DER, the application URI in its
    SubjectAltName). None: one made on first start under ``data_dir/opcua/own``."""

    opcua_private_key: Path | None = None
    """PEM private key of ``opcua_certificate``."""

    opcua_trust_dir: Path | None = None
    """Folder of trusted OPC UA server certificates (or their CAs); a server whose
    certificate is not there is refused and its certificate saved to ``rejected`` beside
    it. None: ``data_dir/opcua/trusted``."""

    opcua_trust_on_first_use: bool = False
    """Trust the first server's certificate when the trust folder is empty (saved there,
    then pinned). Off: a first connection by a man in the middle would be trusted too."""

    # -- API sessions and limits --
    api_session_check_s: float = Field(default=2.0, gt=0, le=60)
    """Seconds between re-checks of a GraphQL WebSocket's credentials; a revoked or
    expired key or token ends the session within this."""

    api_auth_failure_rate: float = Field(default=1.0, gt=0)
    """Failed authentications per second one client address may make (bursts of
    ``api_auth_failure_burst``); past it the address gets 429 before any argon2 work."""

    api_auth_failure_burst: int = Field(default=10, ge=1)
    """Failed authentications one client address may make at once."""

    api_header_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds a client has to send a request's head (from connecting, or from its
    first byte on a kept-alive connection); then the connection is closed."""

    api_request_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds a client has to send a whole request, body included."""

    api_keep_alive_timeout_s: int = Field(default=30, ge=1)
    """Seconds an idle kept-alive connection stays open."""

    api_max_connections: int = Field(default=2048, ge=1)
    """Connections (WebSockets included) the API holds at once; past it, 503."""

    api_introspection: Literal["everyone", "authenticated"] = "everyone"
    """Who may introspect the schema and open GraphiQL: ``everyone`` or only
    ``authenticated`` callers."""

    api_tls_cert_file: Path | None = None
    """PEM certificate chain for HTTPS/WSS on the GraphQL API. None: plain HTTP."""

    api_tls_key_file: Path | None = None
    """PEM private key of ``api_tls_cert_file``."""

    @model_validator(mode="after")
    def _api_tls_pair(self) -> "Settings":
        if (self.api_tls_cert_file is None) != (self.api_tls_key_file is None):
            raise ValueError("api_tls_cert_file and api_tls_key_file: set both (TLS) or neither")
        return self

    # -- MQTT client (a broker named by mqtt_url) --
    mqtt_username: str | None = None
    """User name twinforge logs in with at the ``mqtt_url`` broker."""

    mqtt_password: SecretStr | None = None
    """Password of ``mqtt_username``; never logged. Or ``mqtt_password_file``."""

    mqtt_password_file: Path | None = None
    """File holding the password of ``mqtt_username`` (a Docker or Kubernetes secret);
    surrounding whitespace is dropped. Not together with ``mqtt_password``."""

    mqtt_ca_file: Path | None = None
    """PEM CA bundle the ``mqtts://`` broker's certificate must chain to (None: the
    system's CAs)."""

    mqtt_cert_file: Path | None = None
    """PEM client certificate presented to the ``mqtts://`` broker (with ``mqtt_key_file``)."""

    mqtt_key_file: Path | None = None
    """PEM private key of ``mqtt_cert_file``."""

    # -- audit --
    audit_syslog: str | None = None
    """Forward every audit record, as a JSON line with its hash, to syslog at
    ``udp://host:port``, ``tcp://host:port`` or a unix socket path (``/dev/log``)."""

    audit_forward_file: Path | None = None
    """Append every audit record, as a JSON line with its hash, to this existing file
    (best owned by another user and append-only to us, so the owner cannot rewrite it)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once.

    Tests that change the environment call ``get_settings.cache_clear()``.
    """
    return Settings()
