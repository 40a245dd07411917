"""What every resolver reaches through ``info.context``: the services behind the API, the
request's loaders and the authenticated user."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from strawberry.fastapi import BaseContext

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import NO_CREDENTIALS, Authenticator
from twinforge.auth.tokens import TokenIssuer
from twinforge.errors import ClientError
from twinforge.graphql.dtdl_types import SchemaTypes
from twinforge.graphql.errors import Unauthenticated
from twinforge.graphql.loaders import LiveAssets, Loaders
from twinforge.graphql.rate_limit import RateLimiter
from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.runtime.commands import CommandService, Principal
from twinforge.runtime.events import EventBus
from twinforge.runtime.twin_service import TwinService


@dataclass
class ApiServices:
    """The parts of a running server the API talks to; the ones a deployment lacks
    (no fleet, no command service) are None and their fields answer empty or refuse."""

    twins: TwinService
    authenticator: Authenticator
    keys: ApiKeyStore
    tokens: TokenIssuer
    live: EventBus
    assets: LiveAssets | None = None
    commands: CommandService | None = None
    dead_letters: DeadLetterStore | None = None
    rate_limiter: RateLimiter | None = None


class ApiContext(BaseContext):
    """One request's (or one WebSocket connection's) context."""

    def __init__(
        self,
        services: ApiServices,
        schema_types: SchemaTypes,
        refresh: Callable[[], SchemaTypes],
    ) -> None:
        super().__init__()
        self.services = services
        #: The generated types of the schema this request runs on.
        self.schema_types = schema_types
        self._refresh = refresh
        self._principal: Principal | None = None
        self._refused: ClientError | None = None
        self.loaders = Loaders(services.twins, services.assets)

    def refreshed_types(self) -> SchemaTypes:
        """Rebuild the schema now (this request changed the models) and return its types."""
        return self._refresh()

    @property
    def principal(self) -> Principal:
        """The authenticated user; raises the authentication error (UNAUTHENTICATED,
        RATE_LIMITED) when there is none."""
        if self._principal is None:
            raise self._refused or Unauthenticated(NO_CREDENTIALS)
        return self._principal

    async def authenticate(self) -> None:
        """Authenticate the request (or the connection's init payload) and count it
        against the rate limit. Runs before any resolver; argon2 hashing of a key seen
        the first time runs off the event loop."""
        auth = self.services.authenticator
        try:
            if self.connection_params is not None:
                params = self.connection_params
                self._principal = await auth.authenticate_connection_params_async(
                    params if isinstance(params, Mapping) else {}
                )
            elif self.request is not None:
                self._principal = await auth.authenticate_async(self.request.headers)
            limiter = self.services.rate_limiter
            if limiter is not None and self._principal is not None:
                limiter.check(self._principal.name)
        except ClientError as error:
            self._principal = None
            self._refused = error
