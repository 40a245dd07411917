"""The schema: generic roots plus the types generated from the stored DTDL models, rebuilt
when models are uploaded or deleted, without a restart."""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from twinforge.graphql.dtdl_types import SCALARS, SchemaTypes, generate
from twinforge.graphql.mutation import Mutation
from twinforge.graphql.query import Query
from twinforge.graphql.query_rules import security_extensions
from twinforge.graphql.subscription import Subscription
from twinforge.graphql.types import GenericTwin
from twinforge.runtime.events import EventKind, TwinEvent
from twinforge.runtime.twin_service import TwinService
from twinforge.twin_models import elements as el

log = logging.getLogger(__name__)

#: Decommissioning keeps a model's type (its twins still exist): no rebuild for that.
_MODEL_EVENTS = frozenset({EventKind.MODEL_CREATED, EventKind.MODEL_DELETED})


class _Executor(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # graphql-core keeps two bound methods of the executor on it: a reference cycle
        # that left each request's executor, context and loaders to the collector's full
        # passes (20-30 ms each, several a second under load). Weakly bound, a finished
        # request is freed at once.
        executor = weakref.ref(self)
        kind = type(self)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=lambda values: kind.gather_async_work(executor(), values),
            track=lambda values: kind.track_async_work(executor(), values),
        )

    def build_per_event_executor(self, payload: Any) -> _Executor:
        executor = super().build_per_event_executor(payload)
        # graphql-core 3.3.2 shares the subfield memo with the subscription's executor,
        # keyed on lists each event makes anew: it grows for as long as the
        # subscription lives. Each event gets its own.
        executor._relevant_sub_fields = {}
        return executor


class _Schema(strawberry.Schema):
    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        # strawberry logs every error with a traceback, bad input included; ErrorCodes
        # logs the internal ones, which are the only ones worth a traceback.
        return None


@dataclass(frozen=True)
class BuiltSchema:
    schema: strawberry.Schema
    types: SchemaTypes


def build_schema(
    interfaces: list[el.Interface], *, guard_introspection: bool = False
) -> BuiltSchema:
    """The schema for twins of ``interfaces`` (the stored models); ``guard_introspection``:
    introspection for authenticated callers only."""
    types = generate(interfaces)
    schema = _Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[GenericTwin, *types.types],
        config=StrawberryConfig(scalar_map=SCALARS),
        extensions=security_extensions(guard_introspection=guard_introspection),
        execution_context_class=_Executor,
    )
    return BuiltSchema(schema, types)


class SchemaHolder:
    """The current schema. Model events mark it stale; the next request rebuilds it once
    (an upload of a hundred models costs one build, not a hundred). Requests in flight
    keep the schema they started with."""

    def __init__(self, twins: TwinService, *, guard_introspection: bool = False) -> None:
        self._twins = twins
        self._guard_introspection = guard_introspection
        self._lock = threading.Lock()
        self._stale = True
        self._built: BuiltSchema | None = None
        twins.bus.add_listener(self._on_event)

    def current(self) -> BuiltSchema:
        with self._lock:
            if self._stale or self._built is None:
                self._stale = False
                self._built = self._build()
            return self._built

    def refresh(self) -> BuiltSchema:
        """Rebuild now (after this process changed the models itself)."""
        with self._lock:
            self._stale = True
        return self.current()

    def close(self) -> None:
        self._twins.bus.remove_listener(self._on_event)

    def _build(self) -> BuiltSchema:
        catalog = self._twins.models
        found = catalog.model_set.interfaces
        interfaces = [found[m.id] for m in catalog.list() if m.id in found]
        built = build_schema(interfaces, guard_introspection=self._guard_introspection)
        log.info("GraphQL schema built: %d DTDL types", len(built.types.twin_types))
        return built

    def _on_event(self, event: TwinEvent) -> None:
        if event.kind in _MODEL_EVENTS:
            self._stale = True
