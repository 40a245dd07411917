"""The API's part of a running server: identity (API keys, JWTs) and the GraphQL app
served by uvicorn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.devices import DeviceStore
from twinforge.auth.token_revocations import TokenRevocations
from twinforge.auth.tokens import TokenIssuer, load_or_create_secret
from twinforge.config import Settings
from twinforge.graphql.context import ApiServices
from twinforge.graphql.rate_limit import RateLimiter
from twinforge.lifecycle import stop_each
from twinforge.web.app import create_app
from twinforge.web.serving import ApiServer, ServingLimits

__all__ = ["ApiPart", "start_api"]


@dataclass
class ApiPart:
    keys: ApiKeyStore
    devices: DeviceStore
    server: ApiServer
    revocations: TokenRevocations | None = None

    @property
    def endpoints(self) -> dict[str, str]:
        return {"GraphQL": self.server.url, "GraphQL WS": self.server.ws_url}

    def stop(self) -> None:
        closing = (self.revocations.close,) if self.revocations is not None else ()
        stop_each((self.server.stop, self.keys.close, self.devices.close, *closing))


def start_api(settings: Settings, data_dir: Path, services: dict[str, object]) -> ApiPart:
    """Serve GraphQL on ``settings.api_host:api_port`` over ``services`` (the
    :class:`ApiServices` fields other than identity, which this part makes)."""
    keys = ApiKeyStore.in_data_dir(data_dir)
    devices = DeviceStore.in_data_dir(data_dir)
    revocations = TokenRevocations.in_data_dir(data_dir)
    try:
        tokens = TokenIssuer(
            settings.jwt_secret or load_or_create_secret(data_dir / "jwt_secret"),
            revocations=revocations,
        )
        limit = settings.api_rate_limit
        app = create_app(
            ApiServices(
                authenticator=Authenticator(keys, tokens),
                keys=keys,
                tokens=tokens,
                devices=devices,
                rate_limiter=RateLimiter(limit, int(2 * limit)) if limit > 0 else None,
                failure_limiter=RateLimiter(
                    settings.api_auth_failure_rate, settings.api_auth_failure_burst
                ),
                session_check_s=settings.api_session_check_s,
                introspection=settings.api_introspection,
                **services,  # type: ignore[arg-type]
            )
        )
        server = ApiServer(
            app, settings.api_host, settings.api_port, serving_limits(settings)
        ).start()
    except BaseException:
        keys.close()
        devices.close()
        revocations.close()
        raise
    return ApiPart(keys, devices, server, revocations)


def serving_limits(settings: Settings) -> ServingLimits:
    return ServingLimits(
        header_timeout_s=settings.api_header_timeout_s,
        request_timeout_s=settings.api_request_timeout_s,
        keep_alive_timeout_s=settings.api_keep_alive_timeout_s,
        max_connections=settings.api_max_connections,
        tls_cert_file=settings.api_tls_cert_file,
        tls_key_file=settings.api_tls_key_file,
    )
