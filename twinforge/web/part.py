"""The API's part of a running server: identity (API keys, JWTs) and the GraphQL app
served by uvicorn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.tokens import TokenIssuer, load_or_create_secret
from twinforge.config import Settings
from twinforge.graphql.context import ApiServices
from twinforge.graphql.rate_limit import RateLimiter
from twinforge.lifecycle import stop_each
from twinforge.web.app import create_app
from twinforge.web.serving import ApiServer

__all__ = ["ApiPart", "start_api"]


@dataclass
class ApiPart:
    keys: ApiKeyStore
    server: ApiServer

    @property
    def endpoints(self) -> dict[str, str]:
        return {"GraphQL": self.server.url}

    def stop(self) -> None:
        stop_each((self.server.stop, self.keys.close))


def start_api(settings: Settings, data_dir: Path, services: dict[str, object]) -> ApiPart:
    """Serve GraphQL on ``settings.api_host:api_port`` over ``services`` (the
    :class:`ApiServices` fields other than identity, which this part makes)."""
    keys = ApiKeyStore.in_data_dir(data_dir)
    try:
        tokens = TokenIssuer(settings.jwt_secret or load_or_create_secret(data_dir / "jwt_secret"))
        limit = settings.api_rate_limit
        app = create_app(
            ApiServices(
                authenticator=Authenticator(keys, tokens),
                keys=keys,
                tokens=tokens,
                rate_limiter=RateLimiter(limit, int(2 * limit)) if limit > 0 else None,
                **services,  # type: ignore[arg-type]
            )
        )
        server = ApiServer(app, settings.api_host, settings.api_port).start()
    except BaseException:
        keys.close()
        raise
    return ApiPart(keys, server)
