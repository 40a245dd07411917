"""What every resolver reaches through ``info.context``: the services behind the API, the
request's loaders and the authenticated user."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from strawberry.fastapi import BaseContext

from twinforge.audit import AuditTrail
from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import NO_CREDENTIALS, Authenticator
from twinforge.auth.devices import DeviceStore
from twinforge.auth.tokens import TokenIssuer
from twinforge.errors import ClientError
from twinforge.graphql.anomaly import ModelService
from twinforge.graphql.dtdl_types import SchemaTypes
from twinforge.graphql.errors import RateLimited, Unauthenticated
from twinforge.graphql.loaders import LiveAssets, Loaders
from twinforge.graphql.physics import PhysicsService
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
    #: Failed authentications per client address; checked before any argon2 work.
    failure_limiter: RateLimiter | None = None
    #: Seconds between re-checks of a WebSocket's credentials.
    session_check_s: float = 2.0
    #: Introspection (and GraphiQL) for ``everyone`` or only ``authenticated`` callers.
    introspection: str = "everyone"
    devices: DeviceStore | None = None
    #: Where mutations record who did what; None: a bare API (tests) records nothing.
    audit: AuditTrail | None = None
    physics: PhysicsService | None = None
    models: ModelService | None = None


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
        #: The HTTP request or the WebSocket this context serves (its client address).
        self.connection: HTTPConnection | None = None
        self.loaders = Loaders(services.twins, services.assets, services.physics, services.models)

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

    @property
    def authenticated(self) -> bool:
        return self._principal is not None

    @property
    def address_refused(self) -> RateLimited | None:
        """The refusal when this client's address failed to authenticate too often."""
        refused = self._refused
        return refused if isinstance(refused, AddressRateLimited) else None

    async def authenticate(self) -> None:
        """Authenticate the request (or the connection's init payload) and count it
        against the rate limit. Runs before any resolver; argon2 hashing of a key seen the
        first time runs off the event loop, and only while this client's address has
        failures left in its budget."""
        connection = self.connection or self.request
        address = connection.client.host if connection and connection.client else "-"
        try:
            self._principal = await self._verify(address)
            limiter = self.services.rate_limiter
            if limiter is not None and self._principal is not None:
                limiter.check(self._principal.id)
        except ClientError as error:
            self._principal = None
            self._refused = error

    async def recheck(self) -> ClientError | None:
        """Verify this connection's credentials again (revoked? expired?); the error
        saying why they no longer hold, or None while they do."""
        try:
            principal = await self._verify(None)
        except ClientError as error:
            return error
        if principal is None or self._principal is None or principal.id != self._principal.id:
            return Unauthenticated("the connection's credentials changed; connect again")
        return None

    async def _verify(self, address: str | None) -> Principal | None:
        auth = self.services.authenticator
        failures = self.services.failure_limiter if address is not None else None

        def before_hashing() -> None:
            if failures is not None and address is not None:
                failures.ensure_left(address, _too_many_failures(address))

        try:
            if self.connection_params is not None:
                params = self.connection_params
                return await auth.authenticate_connection_params_async(
                    params if isinstance(params, Mapping) else {}, before_hashing
                )
            if self.request is not None:
                return await auth.authenticate_async(self.request.headers, before_hashing)
        except Unauthenticated as error:
            if failures is not None and address is not None and error.message != NO_CREDENTIALS:
                failures.take(address, _too_many_failures(address))
            raise
        return None


class AddressRateLimited(RateLimited):
    """Too many failed authentications from one client address (HTTP 429)."""


def _too_many_failures(address: str) -> Callable[[float], RateLimited]:
    def refusal(wait: float) -> RateLimited:
        return AddressRateLimited(
            f"rate limited: too many failed authentications from {address}; retry in {wait:.2f} s",
            retry_after=wait,
        )

    return refusal
