"""The Subscription root (graphql-transport-ws): live telemetry, twin changes, alerts and
command status.

Each subscription reads a bounded buffer on the event bus: a client that cannot keep up
loses the oldest updates, never slows the server, and is told how many it missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime

import strawberry
from strawberry.scalars import JSON

from twinforge.actors.alarms import Alarm
from twinforge.graphql.errors import NotFoundError
from twinforge.graphql.permissions import Viewer
from twinforge.graphql.types import Alert, Command, TwinChangeKind
from twinforge.runtime.commands import CommandRecord
from twinforge.runtime.events import EventKind, Gap, TwinEvent
from twinforge.runtime.twin_service import TwinService

#: Updates one subscription may hold before the oldest are dropped.
BUFFER = 1000
_RELATIONSHIP_EVENTS = frozenset(
    {
        EventKind.RELATIONSHIP_CREATED,
        EventKind.RELATIONSHIP_REPLACED,
        EventKind.RELATIONSHIP_DELETED,
    }
)


@strawberry.type(description="Telemetry (or reported properties) of one message.")
class TelemetryUpdate:
    twin_id: str
    time: datetime
    values: JSON
    kind: str
    missed: int = strawberry.field(
        default=0, description="Updates dropped just before this one (the client fell behind)."
    )


@strawberry.type
class TwinChange:
    kind: TwinChangeKind
    twin_id: str
    sequence: int
    time: datetime
    data: JSON = strawberry.field(description="The twin, the patch, or the relationship.")
    missed: int = 0


@strawberry.type
class AlertEvent:
    raised: bool
    alert: Alert
    time: datetime
    missed: int = 0


@strawberry.type(description="A twin's physics switched off: its FMU failed.")
class PhysicsOffEvent:
    twin_id: str
    reason: str
    quarantined: bool
    time: datetime
    missed: int = 0


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[Viewer])
    async def telemetry(
        self, info: strawberry.Info, twin_id: str, fields: list[str] | None = None
    ) -> AsyncGenerator[TelemetryUpdate, None]:
        wanted = None if fields is None else frozenset(fields)
        live = info.context.services.live
        missed = 0
        async with live.subscribe(
            maxsize=BUFFER, kinds=[EventKind.TELEMETRY], subjects=[twin_id]
        ) as events:
            async for event in events:
                if isinstance(event, Gap):
                    missed += event.missed
                    continue
                if wanted is not None and wanted.isdisjoint(event.data["values"]):
                    continue
                yield _telemetry_update(event, wanted, missed)
                missed = 0

    @strawberry.subscription(
        permission_classes=[Viewer],
        description="Changes to twins and relationships: of one twin, or of a model's "
        "twins (sub-models included).",
    )
    async def twin_changed(
        self,
        info: strawberry.Info,
        twin_id: str | None = None,
        model: str | None = None,
        kinds: list[TwinChangeKind] | None = None,
    ) -> AsyncGenerator[TwinChange, None]:
        twins = info.context.services.twins
        wanted = [EventKind(k.value) for k in kinds or TwinChangeKind]
        models: frozenset[str] | None = None
        if model is not None:
            models = frozenset(
                m.id for m in twins.models.list() if model in twins.models.lineage(m.id)
            )
        missed = 0
        async with twins.bus.subscribe(
            maxsize=BUFFER,
            kinds=wanted,
            subjects=None if twin_id is None else [twin_id],
            predicate=None if models is None else _of_models(models),
        ) as events:
            async for event in events:
                if isinstance(event, Gap):
                    missed += event.missed
                    continue
                if (
                    models is not None
                    and event.kind in _RELATIONSHIP_EVENTS
                    and not await _twin_of_models(twins, event.subject, models)
                ):
                    continue
                yield TwinChange(
                    kind=TwinChangeKind(event.kind.value),
                    twin_id=event.subject,
                    sequence=event.sequence,
                    time=event.timestamp,
                    data=dict(event.data),
                    missed=missed,
                )
                missed = 0

    @strawberry.subscription(permission_classes=[Viewer])
    async def alerts(
        self, info: strawberry.Info, min_severity: int = 0, twin_id: str | None = None
    ) -> AsyncGenerator[AlertEvent, None]:
        live = info.context.services.live
        missed = 0
        async with live.subscribe(
            maxsize=BUFFER,
            kinds=[EventKind.ALARM_RAISED, EventKind.ALARM_CLEARED],
            subjects=None if twin_id is None else [twin_id],
            predicate=lambda event: event.data["severity"] >= min_severity,
        ) as events:
            async for event in events:
                if isinstance(event, Gap):
                    missed += event.missed
                    continue
                data = event.data
                yield AlertEvent(
                    raised=event.kind is EventKind.ALARM_RAISED,
                    alert=Alert.of(
                        event.subject,
                        Alarm(
                            data["name"],
                            data["severity"],
                            data["since"],
                            data["field"],
                            data["value"],
                        ),
                    ),
                    time=datetime.fromtimestamp(data["time"], UTC),
                    missed=missed,
                )
                missed = 0

    @strawberry.subscription(
        permission_classes=[Viewer],
        description="Physics switching off, of one twin or of all: the FMU failed (Error, "
        "Fatal, NaN, an exception) or crashed its host too often; ingest goes on.",
    )
    async def physics_off(
        self, info: strawberry.Info, twin_id: str | None = None
    ) -> AsyncGenerator[PhysicsOffEvent, None]:
        missed = 0
        async with info.context.services.live.subscribe(
            maxsize=BUFFER,
            kinds=[EventKind.PHYSICS_OFF],
            subjects=None if twin_id is None else [twin_id],
        ) as events:
            async for event in events:
                if isinstance(event, Gap):
                    missed += event.missed
                    continue
                yield PhysicsOffEvent(
                    twin_id=event.subject,
                    reason=event.data["reason"],
                    quarantined=event.data["quarantined"],
                    time=datetime.fromtimestamp(event.data["time"], UTC),
                    missed=missed,
                )
                missed = 0

    @strawberry.subscription(
        permission_classes=[Viewer],
        description="The command as it stands, then every status change until it is final.",
    )
    async def command_status(self, info: strawberry.Info, id: str) -> AsyncGenerator[Command, None]:
        service = info.context.services.commands
        record = None if service is None else service.get(id)
        if service is None or record is None:
            raise NotFoundError(f"id: no command {id!r}")
        loop = asyncio.get_running_loop()
        changes: asyncio.Queue[CommandRecord] = asyncio.Queue()

        def listener(changed: CommandRecord) -> None:
            if changed.id == id:
                loop.call_soon_threadsafe(changes.put_nowait, changed)

        service.add_listener(listener)
        try:
            record = service.get(id) or record  # it may have moved on meanwhile
            yield Command(record=record)
            while not record.final:
                record = await changes.get()
                yield Command(record=record)
        finally:
            service.remove_listener(listener)


def _telemetry_update(
    event: TwinEvent, wanted: frozenset[str] | None, missed: int = 0
) -> TelemetryUpdate:
    values = event.data["values"]
    if wanted is not None:
        values = {k: v for k, v in values.items() if k in wanted}
    return TelemetryUpdate(
        twin_id=event.subject,
        time=datetime.fromtimestamp(event.data["sourceTime"], UTC),
        values=values,
        kind=event.data["kind"],
        missed=missed,
    )


def _of_models(models: frozenset[str]) -> Callable[[TwinEvent], bool]:
    def matches(event: TwinEvent) -> bool:
        data = event.data
        twin = data.get("twin", data)  # twin.patched carries {"patch", "twin"}
        metadata = twin.get("$metadata") if isinstance(twin, dict) else None
        if isinstance(metadata, dict):
            return metadata.get("$model") in models
        # Relationship events carry no model: their source twin's is looked up once they
        # reach the subscriber, off the publishing thread (see _twin_of_models).
        return event.kind in _RELATIONSHIP_EVENTS

    return matches


async def _twin_of_models(twins: TwinService, twin_id: str, models: frozenset[str]) -> bool:
    """Whether twin ``twin_id`` is of one of ``models`` (False once it is gone: a cascade
    deletes a twin's relationships with it, and its own twin.deleted event follows)."""
    found = (await asyncio.to_thread(twins.get_twins, [twin_id])).get(twin_id)
    metadata = found.get("$metadata") if found is not None else None
    return isinstance(metadata, dict) and metadata.get("$model") in models
