"""The Query root: twins, models, relationships, commands, dead letters, audit."""

from __future__ import annotations

import asyncio
from enum import Enum

import strawberry
from strawberry.scalars import JSON

from twinforge.auth.api_keys import ApiKeyInfo
from twinforge.graphql import anomaly
from twinforge.graphql.anomaly import ModelVersionInfo
from twinforge.graphql.errors import BadInput
from twinforge.graphql.pagination import Connection, connection, decode_cursor, page_size
from twinforge.graphql.permissions import Admin, Engineer, Operator, Viewer
from twinforge.graphql.types import (
    ApiKey,
    AuditRecord,
    Command,
    DeadLetter,
    Me,
    Model,
    Relationship,
    TrailRecord,
    TwinNode,
    load_twin,
)
from twinforge.runtime.twin_service import NotFound, Op, Predicate, Traversal, TwinQuery
from twinforge.runtime.twin_service.errors import invalid
from twinforge.runtime.twin_service.queries import MAX_LIMIT
from twinforge.twin_models.dtmi import is_valid_dtmi

OpEnum = strawberry.enum(Op, name="Op", description="How a predicate compares.")


@strawberry.enum
class Direction(Enum):
    OUT = "out"
    IN = "in"
    BOTH = "both"


@strawberry.input(description="A twin property (or component.property) compared to a value.")
class PredicateInput:
    property: str
    op: OpEnum = Op.EQ  # type: ignore[valid-type]
    value: JSON | None = None


@strawberry.input(description="Twins reached from a start twin along relationships.")
class TraversalInput:
    start: str
    relationships: list[str] | None = None
    direction: Direction = Direction.OUT
    min_hops: int = 1
    max_hops: int = 1


@strawberry.type
class Query:
    @strawberry.field(
        permission_classes=[Viewer],
        description="The registry versions of a configured model, oldest first.",
    )
    async def model_versions(
        self, info: strawberry.Info, name: str, interface: str
    ) -> list[ModelVersionInfo]:
        versions = await anomaly.call(anomaly.service_of(info).versions, name, interface)
        return [ModelVersionInfo.of(v) for v in versions]

    @strawberry.field(permission_classes=[Viewer])
    async def twin(self, info: strawberry.Info, id: str) -> TwinNode | None:
        return await load_twin(info, id)

    @strawberry.field(
        permission_classes=[Viewer],
        description="Twins by model (with sub-models), property filters and traversal, "
        "ordered by id.",
    )
    async def twins(
        self,
        info: strawberry.Info,
        model: str | None = None,
        include_submodels: bool = True,
        where: list[PredicateInput] | None = None,
        traversal: TraversalInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[TwinNode]:
        if model is not None and not is_valid_dtmi(model):
            # Not an empty page: no twin could ever match, so the query is surely wrong.
            raise invalid(
                "model", "dtmi", f"{model!r} is not a DTMI (dtmi:<segment>[:<segment>...];<n>)"
            )
        size = page_size(first)
        query = TwinQuery(
            model=model,
            include_submodels=include_submodels,
            where=tuple(Predicate(p.property, Op(p.op), p.value) for p in where or ()),
            traversal=None
            if traversal is None
            else Traversal(
                traversal.start,
                tuple(traversal.relationships or ()),
                traversal.direction.value,
                traversal.min_hops,
                traversal.max_hops,
            ),
            # One more tells whether another page follows (where the store allows it).
            limit=min(size + 1, MAX_LIMIT),
            after=decode_cursor("twin", after),
        )
        context = info.context
        page = await asyncio.to_thread(context.services.twins.query_twins, query)
        items = page.items[:size]
        context.loaders.remember(items)
        more = len(page.items) > size or (query.limit == size and page.next_after is not None)
        return connection(
            [context.schema_types.twin(d) for d in items], [d["$dtId"] for d in items], "twin", more
        )

    @strawberry.field(permission_classes=[Viewer])
    def models(self, info: strawberry.Info, include_decommissioned: bool = True) -> list[Model]:
        context = info.context
        return [
            context.schema_types.model(stored)
            for stored in context.services.twins.models.list()
            if include_decommissioned or not stored.decommissioned
        ]

    @strawberry.field(permission_classes=[Viewer])
    def model(self, info: strawberry.Info, id: str) -> Model | None:
        stored = info.context.services.twins.models.find(id)
        return None if stored is None else info.context.schema_types.model(stored)

    @strawberry.field(permission_classes=[Viewer])
    async def relationship(
        self, info: strawberry.Info, source_id: str, id: str
    ) -> Relationship | None:
        twins = info.context.services.twins
        try:
            doc = await asyncio.to_thread(twins.get_relationship, source_id, id)
        except NotFound:
            return None
        return Relationship(doc=doc)

    @strawberry.field(permission_classes=[Viewer])
    def command(self, info: strawberry.Info, id: str) -> Command | None:
        commands = info.context.services.commands
        record = None if commands is None else commands.get(id)
        return None if record is None else Command(record=record)

    @strawberry.field(permission_classes=[Operator], description="Commands awaiting approval.")
    def pending_commands(self, info: strawberry.Info) -> list[Command]:
        commands = info.context.services.commands
        return [] if commands is None else [Command(record=r) for r in commands.list_pending()]

    @strawberry.field(permission_classes=[Engineer], description="Refused messages, newest first.")
    async def dead_letters(
        self,
        info: strawberry.Info,
        reason: str | None = None,
        twin_id: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[DeadLetter]:
        store = info.context.services.dead_letters
        if store is None:
            return connection([], [], "deadLetter", False)
        size = page_size(first)
        before = _int_cursor("deadLetter", after)
        letters = await asyncio.to_thread(
            store.list, size + 1, reason=reason, twin_id=twin_id, before_id=before
        )
        page = letters[:size]
        return connection(
            [DeadLetter(letter=d) for d in page],
            [str(d.id) for d in page],
            "deadLetter",
            len(letters) > size,
        )

    @strawberry.field(permission_classes=[Admin], description="Command audit log, newest first.")
    async def audit_log(
        self,
        info: strawberry.Info,
        twin_id: str | None = None,
        user: str | None = None,
        command_id: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditRecord]:
        commands = info.context.services.commands
        if commands is None:
            return connection([], [], "audit", False)
        size = page_size(first)
        rows = await asyncio.to_thread(
            commands.audit.query,
            twin=twin_id,
            user=user,
            correlation_id=command_id,
            before_id=_int_cursor("audit", after),
            limit=size + 1,
        )
        page = rows[:size]
        return connection(
            [AuditRecord(entry=e) for e in page],
            [str(e.id) for e in page],
            "audit",
            len(rows) > size,
        )

    @strawberry.field(
        permission_classes=[Admin],
        description="The audit trail of every security-relevant act, newest first.",
    )
    async def audit_trail(
        self,
        info: strawberry.Info,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[TrailRecord]:
        trail = info.context.services.audit
        if trail is None:
            return connection([], [], "trail", False)
        size = page_size(first)
        where = [
            (f"{column} = ?", (value,))
            for column, value in (("actor", actor), ("action", action), ("target", target))
            if value is not None
        ]
        records = await asyncio.to_thread(
            trail.query, where=where, before_seq=_int_cursor("trail", after), limit=size + 1
        )
        page = records[:size]
        return connection(
            [TrailRecord(record=r) for r in page],
            [str(r.seq) for r in page],
            "trail",
            len(records) > size,
        )

    @strawberry.field(permission_classes=[Admin])
    def api_keys(self, info: strawberry.Info) -> list[ApiKey]:
        return [api_key(k) for k in info.context.services.keys.list()]

    @strawberry.field(description="Who this request is authenticated as.")
    def me(self, info: strawberry.Info) -> Me:
        principal = info.context.principal
        return Me(id=principal.id, name=principal.name, roles=sorted(principal.roles))


def api_key(info: ApiKeyInfo) -> ApiKey:
    return ApiKey(
        id=strawberry.ID(info.key_id),
        name=info.name,
        roles=sorted(info.roles),
        created=info.created,
        revoked=info.revoked is not None,
        expires_at=info.expires,
    )


def _int_cursor(kind: str, after: str | None) -> int | None:
    key = decode_cursor(kind, after)
    if key is None:
        return None
    if not key.isdigit():
        raise BadInput(f"after: not a {kind} cursor from this API")
    return int(key)
