"""The FastAPI application: GraphQL over HTTP (with GraphiQL) and graphql-transport-ws at
``/graphql``, GraphiQL's assets under ``/graphql/static``, plus ``/healthz``."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from typing import Any

from cross_web import HTTPException
from fastapi import FastAPI, Request, Response
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from twinforge.errors import ClientError
from twinforge.graphql.context import ApiContext, ApiServices
from twinforge.graphql.introspection import AUTHENTICATED
from twinforge.graphql.schema import BuiltSchema, SchemaHolder
from twinforge.graphql.subscription_groups import Member, SubscriptionGroups, shared_root
from twinforge.web.body_limit import MAX_BODY_BYTES, BodySizeLimit
from twinforge.web.graphiql import ASSETS_PATH, GraphiQLAssets, graphiql_html

#: The schema a request started on, so that its execution and its context agree even if
#: an upload rebuilds the schema meanwhile.
_REQUEST_SCHEMA: contextvars.ContextVar[BuiltSchema] = contextvars.ContextVar("schema")
#: The request's context, for the GraphiQL page (strawberry renders it without one).
_REQUEST_CONTEXT: contextvars.ContextVar[ApiContext] = contextvars.ContextVar("context")
#: The longest close reason a WebSocket frame carries (125 bytes less the code).
_MAX_CLOSE_REASON = 123


class _TransportWS(BaseGraphQLTransportWSHandler[ApiContext, None]):
    view: _GraphQL
    _watch: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self._watch is None:
            self._watch = asyncio.create_task(self._watch_credentials())
            self._watch.add_done_callback(self._task_done)

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await super().shutdown()

    async def _watch_credentials(self) -> None:
        """Re-verify the connection's credentials every few seconds: a key revoked or
        expired, a token revoked or expired ends the session, each operation with a
        GraphQL error saying why, then the socket (4403)."""
        interval = self.context.services.session_check_s
        while True:
            await asyncio.sleep(interval)
            lapsed = await self.context.recheck()
            if lapsed is None:
                continue
            error = {"message": lapsed.message, "extensions": lapsed.extensions}
            for operation in list(self.operations.values()):
                if operation.task is not None:
                    operation.task.cancel()
                with contextlib.suppress(Exception):
                    await operation.send_operation_message(
                        {"id": operation.id, "type": "error", "payload": [error]}
                    )
            reason = lapsed.message.encode()[:_MAX_CLOSE_REASON].decode(errors="ignore")
            with contextlib.suppress(Exception):
                await self.websocket.close(code=4403, reason=reason)
            return

    async def handle_task_exception(self, error: Exception) -> None:
        if isinstance(error, WebSocketDisconnected):
            return  # the client went away mid-send: normal, not worth a traceback
        await super().handle_task_exception(error)

    async def run_operation(self, operation: Operation[ApiContext, None]) -> None:
        root = shared_root(operation.query, operation.operation_name)
        if root is None:
            await super().run_operation(operation)
            return
        # Everyone with the same query, variables and roles on this schema gets the
        # same answers: one group runs it for all of them.
        variables = json.dumps(operation.variables, sort_keys=True, default=str)
        key = (
            self.schema,
            operation.query,
            variables,
            operation.operation_name,
            self.context.principal.roles,
        )
        member = Member(operation.id, root)
        group = self.view.groups.join(
            key,
            member,
            lambda group: group.run(
                self.schema,
                operation.query,
                operation.variables,
                operation.operation_name,
                self.context,
                self.root_value,
            ),
        )
        try:
            end = await member.deliver(self.websocket.ws.send_text)  # type: ignore[attr-defined]
        except (WebSocketDisconnect, OSError, RuntimeError):
            return  # the socket closed; the handler cleans up when it notices
        finally:
            self.view.groups.leave(group, member)
        if end.kind == "pre_execution_error" and end.result is not None:
            await self._handle_pre_execution_error(operation, end.result)
        elif end.kind == "incremental":
            await self._reject_incremental_delivery(operation)
        else:
            await operation.send_operation_message({"id": operation.id, "type": "complete"})


class _GraphQL(GraphQL[ApiContext, None]):
    """strawberry's own ASGI app, on the schema the holder has now."""

    graphql_transport_ws_handler_class = _TransportWS

    def __init__(self, holder: SchemaHolder, services: ApiServices) -> None:
        self._holder = holder
        self._services = services
        self.groups = SubscriptionGroups()
        super().__init__(
            holder.current().schema,
            graphql_ide="graphiql",
            subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
            keep_alive=True,
            keep_alive_interval=15,
        )

    @property
    def graphql_ide_html(self) -> str:
        return graphiql_html()  # on the package's own assets: no CDN, works offline

    @property  # type: ignore[override]
    def schema(self) -> Any:
        built = _REQUEST_SCHEMA.get(None)
        return (built or self._holder.current()).schema

    @schema.setter
    def schema(self, _value: Any) -> None:
        pass  # the holder owns it

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> ApiContext:
        built = self._holder.current()
        _REQUEST_SCHEMA.set(built)
        context = ApiContext(self._services, built.types, lambda: self._holder.refresh().types)
        context.connection = request
        _REQUEST_CONTEXT.set(context)
        if isinstance(request, Request):  # a WebSocket authenticates with its init payload
            context.request = request
            await context.authenticate()
            if (refused := context.address_refused) is not None:
                raise HTTPException(429, refused.message)
        return context

    async def render_graphql_ide(self, request: Request) -> Response:
        context = _REQUEST_CONTEXT.get(None)
        if self._services.introspection == AUTHENTICATED and (
            context is None or not context.authenticated
        ):
            return PlainTextResponse(
                "GraphiQL is for authenticated callers here (TWINFORGE_API_INTROSPECTION="
                "authenticated): send Authorization: Bearer <token or API key>",
                status_code=401,
            )
        return await super().render_graphql_ide(request)

    async def on_ws_connect(self, context: ApiContext) -> dict[str, object] | None:
        # Authenticate once per connection: a subscription socket without valid
        # credentials is closed (4403) before any operation runs.
        await context.authenticate()
        try:
            _ = context.principal
        except ClientError as error:
            raise ConnectionRejectionError({"message": str(error), "code": error.code}) from error
        return None


_GRAPHQL_SCOPES = frozenset({"http", "websocket"})


class _App(FastAPI):
    """Hands ``/graphql`` straight to strawberry's app, behind the body size limit:
    FastAPI's router, dependency solving and middleware around it cost a quarter of a
    small query's CPU (measured). The rest (``/healthz``, GraphiQL's assets) goes through
    FastAPI and takes no body."""

    def __init__(self, graphql: _GraphQL) -> None:
        super().__init__(title="twinforge", docs_url=None, redoc_url=None)
        self.graphql = BodySizeLimit(graphql, max_bytes=MAX_BODY_BYTES)
        self.mount(ASSETS_PATH, GraphiQLAssets(), name="graphiql-assets")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in _GRAPHQL_SCOPES and scope["path"] == "/graphql":
            await self.graphql(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(services: ApiServices) -> FastAPI:
    """The API of a running server; ``app.state.schema_holder`` rebuilds its schema,
    ``app.state.subscription_groups`` are the subscriptions running for many clients."""
    holder = SchemaHolder(
        services.twins, guard_introspection=services.introspection == AUTHENTICATED
    )
    graphql = _GraphQL(holder, services)
    app = _App(graphql)
    app.state.schema_holder = holder
    app.state.subscription_groups = graphql.groups

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": len(services.twins.models.list())}

    return app
