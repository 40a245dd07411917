"""The generic GraphQL types: models, twins, relationships, live values, alerts, commands,
dead letters and audit records. The types generated from DTDL (``dtdl_types``) implement
the ``Twin`` interface defined here."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON

from twinforge.actors.alarms import Alarm
from twinforge.audit import Record
from twinforge.graphql.pagination import Connection, connection, page_size, slice_page
from twinforge.graphql.permissions import Engineer
from twinforge.ingest.dead_letters import DeadLetter as StoredDeadLetter
from twinforge.runtime.commands import AuditEntry, CommandRecord, CommandStatus
from twinforge.runtime.twin_service import StoredModel

if TYPE_CHECKING:
    from twinforge.graphql.anomaly import TwinAnomaly
    from twinforge.graphql.physics import TwinPhysics

#: Relationships sort by source, then id: this separator sorts below any id character.
_KEY_SEPARATOR = "\x1f"


def timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@strawberry.type(description="A stored DTDL interface.")
class Model:
    stored: strawberry.Private[StoredModel]
    graphql_type: str | None = strawberry.field(
        description="The GraphQL type its twins have (null until the schema is rebuilt "
        "after the model's upload)."
    )

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.stored.id)

    @strawberry.field
    def display_name(self) -> str | None:
        name = self.stored.document.get("displayName")
        if isinstance(name, dict):
            return name.get("en") or next(iter(name.values()), None)
        return name if isinstance(name, str) else None

    @strawberry.field
    def upload_time(self) -> str:
        return self.stored.upload_time

    @strawberry.field
    def decommissioned(self) -> bool:
        return self.stored.decommissioned

    @strawberry.field
    def dependencies(self) -> list[str]:
        return list(self.stored.dependencies)

    @strawberry.field(description="The DTDL document as uploaded.")
    def document(self) -> JSON:
        return self.stored.document


@strawberry.type(description="One sample of a telemetry field.")
class TelemetryPoint:
    time: datetime
    value: JSON


@strawberry.type(description="An alarm an asset raised on its telemetry.")
class Alert:
    twin_id: str
    name: str
    severity: int
    since: datetime
    field: str
    value: JSON

    @classmethod
    def of(cls, twin_id: str, alarm: Alarm) -> Alert:
        return cls(
            twin_id=twin_id,
            name=alarm.name,
            severity=alarm.severity,
            since=datetime.fromtimestamp(alarm.since, UTC),
            field=alarm.field,
            value=alarm.value,
        )


@strawberry.interface(name="Twin", description="Every twin, whatever its model.")
class TwinNode:
    doc: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def dt_id(self) -> strawberry.ID:
        return strawberry.ID(self.doc["$dtId"])

    @strawberry.field
    def etag(self) -> str:
        return self.doc["$etag"]

    @strawberry.field
    def model_id(self) -> str:
        return self.doc["$metadata"]["$model"]

    @strawberry.field
    def model(self, info: strawberry.Info) -> Model | None:
        stored = info.context.services.twins.models.find(self.doc["$metadata"]["$model"])
        return None if stored is None else info.context.schema_types.model(stored)

    @strawberry.field(description="The twin document: properties, components, $metadata.")
    def document(self) -> JSON:
        return self.doc

    @strawberry.field
    async def relationships(
        self,
        info: strawberry.Info,
        name: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Relationship]:
        found = await info.context.loaders.outgoing.load(self.doc["$dtId"])
        if name is not None:
            found = [r for r in found if r["$relationshipName"] == name]
        return relationship_page(found, first, after)

    @strawberry.field
    async def incoming_relationships(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[Relationship]:
        found = await info.context.loaders.incoming.load(self.doc["$dtId"])
        return relationship_page(found, first, after)

    @strawberry.field(description="Last value of every telemetry field the asset received.")
    async def last_values(self, info: strawberry.Info) -> JSON:
        snapshot = await info.context.loaders.snapshot.load(self.doc["$dtId"])
        return {} if snapshot is None else snapshot.get("last", {})

    @strawberry.field(description="Active alarms, most severe first.")
    async def alerts(self, info: strawberry.Info) -> list[Alert]:
        alarms = await info.context.loaders.alarms.load(self.doc["$dtId"])
        twin_id = self.doc["$dtId"]
        return sorted((Alert.of(twin_id, a) for a in alarms), key=lambda a: -a.severity)

    @strawberry.field(
        description="Its FMU's expected values and residuals, and whether it runs (null: "
        "no FMU is bound to its interface)."
    )
    async def physics(
        self, info: strawberry.Info
    ) -> Annotated[TwinPhysics, strawberry.lazy("twinforge.graphql.physics")] | None:
        from twinforge.graphql.physics import twin_physics  # it imports this module

        return await twin_physics(info, self.doc["$dtId"])

    @strawberry.field(
        description="Its anomaly models' last answers (score, threshold, level, cluster, "
        "the fields that contributed most), or that rules stand in for a missing model."
    )
    async def anomaly(
        self, info: strawberry.Info
    ) -> list[Annotated[TwinAnomaly, strawberry.lazy("twinforge.graphql.anomaly")]]:
        from twinforge.graphql.anomaly import twin_anomaly  # it imports this module

        return await twin_anomaly(info, self.doc["$dtId"])

    @strawberry.field(description="Newest samples of one telemetry field, oldest first.")
    async def telemetry(
        self, info: strawberry.Info, field: str, last: int = 100
    ) -> list[TelemetryPoint]:
        series = await load_series(info, self.doc["$dtId"], field, last)
        return [
            TelemetryPoint(time=datetime.fromtimestamp(t, UTC), value=v)
            for t, v in zip(series["times"], series["values"], strict=True)
        ]


@strawberry.type(description="A twin whose model has no generated type (yet).")
class GenericTwin(TwinNode):
    pass


async def load_series(
    info: strawberry.Info, twin_id: str, field: str, last: int
) -> dict[str, list[Any]]:
    return await info.context.loaders.series.load((twin_id, field, page_size(last, field="last")))


@strawberry.type
class Relationship:
    doc: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def id(self) -> str:
        return self.doc["$relationshipId"]

    @strawberry.field
    def name(self) -> str:
        return self.doc["$relationshipName"]

    @strawberry.field
    def source_id(self) -> str:
        return self.doc["$sourceId"]

    @strawberry.field
    def target_id(self) -> str:
        return self.doc["$targetId"]

    @strawberry.field
    def etag(self) -> str:
        return self.doc["$etag"]

    @strawberry.field(description="The relationship's own properties.")
    def properties(self) -> JSON:
        return {k: v for k, v in self.doc.items() if not k.startswith("$")}

    @strawberry.field
    async def source(self, info: strawberry.Info) -> TwinNode | None:
        return await load_twin(info, self.doc["$sourceId"])

    @strawberry.field
    async def target(self, info: strawberry.Info) -> TwinNode | None:
        return await load_twin(info, self.doc["$targetId"])


def relationship_key(doc: dict[str, Any]) -> str:
    return f"{doc['$sourceId']}{_KEY_SEPARATOR}{doc['$relationshipId']}"


def relationship_page(
    docs: list[dict[str, Any]], first: int | None, after: str | None
) -> Connection[Relationship]:
    items, keys, more = slice_page(docs, relationship_key, "relationship", first, after)
    return connection([Relationship(doc=d) for d in items], keys, "relationship", more)


async def load_twin(info: strawberry.Info, twin_id: str) -> TwinNode | None:
    document = await info.context.loaders.twin.load(twin_id)
    return None if document is None else info.context.schema_types.twin(document)


CommandStatusEnum = strawberry.enum(CommandStatus, name="CommandStatus")


@strawberry.type(description="A command invocation and where it stands.")
class Command:
    record: strawberry.Private[CommandRecord]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.record.id)

    @strawberry.field
    def twin_id(self) -> str:
        return self.record.twin_id

    @strawberry.field
    def name(self) -> str:
        return self.record.command

    @strawberry.field
    def status(self) -> CommandStatusEnum:  # type: ignore[valid-type]
        return self.record.status

    @strawberry.field
    def request(self) -> JSON | None:
        return self.record.request

    @strawberry.field(description="Who invoked it: key:<key id> or jwt:<subject>.")
    def user(self) -> str:
        return self.record.user

    @strawberry.field
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.record.created, UTC)

    @strawberry.field
    def updated(self) -> datetime:
        return datetime.fromtimestamp(self.record.updated, UTC)

    @strawberry.field(description="The safety policy's verdict: allow, needsApproval, deny.")
    def decision(self) -> str | None:
        return self.record.decision

    @strawberry.field(description="Why it was denied, invalid, rejected or failed.")
    def reason(self) -> str | None:
        return self.record.reason

    @strawberry.field
    def response(self) -> JSON | None:
        return self.record.response

    @strawberry.field
    def reply_status(self) -> int | None:
        return self.record.reply_status

    @strawberry.field
    def approver(self) -> str | None:
        return self.record.approver


@strawberry.type(description="A message ingest refused, with the reason and the payload.")
class DeadLetter:
    letter: strawberry.Private[StoredDeadLetter]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.letter.id))

    @strawberry.field
    def reason(self) -> str:
        return self.letter.reason

    @strawberry.field
    def message(self) -> str:
        return self.letter.message

    @strawberry.field
    def origin(self) -> str:
        return self.letter.origin

    @strawberry.field
    def received(self) -> datetime:
        return datetime.fromtimestamp(self.letter.received_time, UTC)

    @strawberry.field
    def twin_id(self) -> str | None:
        return self.letter.twin_id

    @strawberry.field
    def field(self) -> str | None:
        return self.letter.field

    @strawberry.field(
        description="The payload as text (invalid UTF-8 replaced); engineers and up.",
        permission_classes=[Engineer],
    )
    def payload(self) -> str:
        return self.letter.payload.decode("utf-8", errors="replace")

    @strawberry.field
    def payload_size(self) -> int:
        return self.letter.payload_size

    @strawberry.field
    def payload_truncated(self) -> bool:
        return self.letter.payload_truncated

    @strawberry.field
    def payload_sha256(self) -> str:
        return self.letter.payload_sha256


@strawberry.type(description="One record of the hash-chained audit trail.")
class TrailRecord:
    record: strawberry.Private[Record]

    @strawberry.field(description="Position in the chain, from 1.")
    def seq(self) -> int:
        return self.record.seq

    @strawberry.field
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.record.time, UTC)

    @strawberry.field(description="Who acted: key:<id>, jwt:<subject> or local:<os user>.")
    def actor(self) -> str:
        return self.record.actor

    @strawberry.field
    def roles(self) -> list[str]:
        return list(self.record.roles)

    @strawberry.field(description="What was done, e.g. key.create, twin.delete, command.approve.")
    def action(self) -> str:
        return self.record.action

    @strawberry.field(description="What it was done to, e.g. twin:<id>, key:<id>.")
    def target(self) -> str:
        return self.record.target

    @strawberry.field
    def outcome(self) -> str:
        return self.record.outcome

    @strawberry.field
    def details(self) -> JSON:
        return self.record.as_json()["details"]

    @strawberry.field
    def prev_hash(self) -> str:
        return self.record.prev_hash

    @strawberry.field
    def hash(self) -> str:
        return self.record.hash


@strawberry.type(description="One row of the command audit log.")
class AuditRecord:
    entry: strawberry.Private[AuditEntry]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.entry.id))

    @strawberry.field
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.entry.time, UTC)

    @strawberry.field
    def action(self) -> str:
        return self.entry.action

    @strawberry.field
    def command_id(self) -> str:
        return self.entry.correlation_id

    @strawberry.field
    def user(self) -> str:
        return self.entry.user

    @strawberry.field
    def roles(self) -> list[str]:
        return sorted(self.entry.roles)

    @strawberry.field
    def twin_id(self) -> str:
        return self.entry.twin

    @strawberry.field
    def model_id(self) -> str | None:
        return self.entry.model

    @strawberry.field
    def command(self) -> str:
        return self.entry.command

    @strawberry.field
    def request(self) -> JSON | None:
        return self.entry.request

    @strawberry.field
    def decision(self) -> str | None:
        return self.entry.decision

    @strawberry.field
    def reason(self) -> str | None:
        return self.entry.reason

    @strawberry.field
    def status(self) -> str:
        return self.entry.status

    @strawberry.field
    def response(self) -> JSON | None:
        return self.entry.response

    @strawberry.field
    def error(self) -> str | None:
        return self.entry.error

    @strawberry.field
    def approver(self) -> str | None:
        return self.entry.approver


@strawberry.type(description="An API key, without its secret.")
class ApiKey:
    id: strawberry.ID
    name: str
    roles: list[str]
    created: datetime
    revoked: bool
    expires_at: datetime | None = strawberry.field(
        default=None, description="When the key stops working; null: when revoked."
    )


@strawberry.type(description="A new API key; the secret is shown this once.")
class IssuedApiKey:
    key: ApiKey
    secret: str


@strawberry.type(description="A new JWT; revoke it by its jti.")
class IssuedToken:
    token: str
    jti: str
    subject: str
    expires_at: datetime


@strawberry.type(description="An MQTT credential of the embedded broker; its id is the username.")
class DeviceCredential:
    id: strawberry.ID
    name: str
    kind: str
    twins: list[str]
    created: datetime
    revoked: bool


@strawberry.type(
    description="A new device credential; the password is shown this once. The device's "
    "client id must be the username or start with the username and '-'."
)
class IssuedDeviceCredential:
    credential: DeviceCredential
    username: str
    password: str


@strawberry.type(description="Who the request is authenticated as.")
class Me:
    id: str = strawberry.field(description="The identity: key:<key id> or jwt:<subject>.")
    name: str = strawberry.field(description="For display only (a key's name, a subject).")
    roles: list[str]


@strawberry.enum
class TwinChangeKind(Enum):
    CREATED = "twin.created"
    REPLACED = "twin.replaced"
    PATCHED = "twin.patched"
    DELETED = "twin.deleted"
    RELATIONSHIP_CREATED = "relationship.created"
    RELATIONSHIP_REPLACED = "relationship.replaced"
    RELATIONSHIP_DELETED = "relationship.deleted"


__all__ = [
    "Alert",
    "ApiKey",
    "AuditRecord",
    "Command",
    "DeadLetter",
    "GenericTwin",
    "IssuedApiKey",
    "Me",
    "Model",
    "Relationship",
    "TelemetryPoint",
    "TwinChangeKind",
    "TwinNode",
    "load_twin",
]
