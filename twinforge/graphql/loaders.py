"""Per-request DataLoaders: every twin, relationship list and live value a query touches
is fetched in one batched round trip per kind and level, never one per parent (N+1).

The stores are synchronous, so each batch runs on a worker thread and the event loop
keeps serving other requests meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cached_property, partial
from typing import Any, Protocol

from strawberry.dataloader import DataLoader

from twinforge.actors.alarms import Alarm
from twinforge.runtime.twin_service import TwinService

SeriesKey = tuple[str, str, int | None]


class LiveAssets(Protocol):
    """The asset actors' live state, read in batches (the fleet implements it)."""

    def snapshots(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def alarms_of(self, twin_ids: Sequence[str]) -> dict[str, list[Alarm]]: ...

    def series_many(self, requests: Sequence[SeriesKey]) -> list[dict[str, list[Any]]]: ...


class PhysicsStatus(Protocol):
    """The twins' physics, read in batches (the fleet part implements it)."""

    def physics_of(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]: ...


class AnomalyStatus(Protocol):
    """The twins' anomaly models, read in batches (the model service implements it)."""

    def anomaly_of(self, twin_ids: list[str]) -> dict[str, list[dict[str, Any]]]: ...


class Loaders:
    """One set per request, so cached values never outlive the request that read them.
    Each loader is made on first use, and its batch function holds the services, not
    this object: no reference cycle, so a finished request is freed at once instead of
    waiting for (and lengthening) the garbage collector's full passes."""

    def __init__(
        self,
        twins: TwinService,
        assets: LiveAssets | None,
        physics: PhysicsStatus | None = None,
        models: AnomalyStatus | None = None,
    ) -> None:
        self._twins = twins
        self._assets = assets
        self._physics = physics
        self._models = models

    @cached_property
    def twin(self) -> DataLoader[str, dict[str, Any] | None]:
        return DataLoader(load_fn=partial(_load_twins, self._twins))

    @cached_property
    def outgoing(self) -> DataLoader[str, list[dict[str, Any]]]:
        return DataLoader(load_fn=partial(_load_outgoing, self._twins))

    @cached_property
    def incoming(self) -> DataLoader[str, list[dict[str, Any]]]:
        return DataLoader(load_fn=partial(_load_incoming, self._twins))

    @cached_property
    def snapshot(self) -> DataLoader[str, dict[str, Any] | None]:
        return DataLoader(load_fn=partial(_load_snapshots, self._assets))

    @cached_property
    def alarms(self) -> DataLoader[str, list[Alarm]]:
        return DataLoader(load_fn=partial(_load_alarms, self._assets))

    @cached_property
    def series(self) -> DataLoader[SeriesKey, dict[str, list[Any]]]:
        return DataLoader(load_fn=partial(_load_series, self._assets))

    @cached_property
    def physics(self) -> DataLoader[str, dict[str, Any] | None]:
        return DataLoader(load_fn=partial(_load_physics, self._physics))

    @cached_property
    def anomaly(self) -> DataLoader[str, list[dict[str, Any]]]:
        return DataLoader(load_fn=partial(_load_anomaly, self._models))

    def remember(self, documents: Sequence[dict[str, Any]]) -> None:
        """Prime the twin loader with documents a list query already returned."""
        for document in documents:
            self.twin.prime(document["$dtId"], document)


async def _load_twins(twins: TwinService, ids: list[str]) -> list[dict[str, Any] | None]:
    found = await asyncio.to_thread(twins.get_twins, ids)
    return [found.get(twin_id) for twin_id in ids]


async def _load_outgoing(twins: TwinService, ids: list[str]) -> list[list[dict[str, Any]]]:
    found = await asyncio.to_thread(twins.relationships_of, ids)
    return [found.get(twin_id, []) for twin_id in ids]


async def _load_incoming(twins: TwinService, ids: list[str]) -> list[list[dict[str, Any]]]:
    found = await asyncio.to_thread(twins.incoming_relationships_of, ids)
    return [found.get(twin_id, []) for twin_id in ids]


async def _load_snapshots(assets: LiveAssets | None, ids: list[str]) -> list[dict[str, Any] | None]:
    if assets is None:
        return [None] * len(ids)
    found = await asyncio.to_thread(assets.snapshots, ids)
    return [found.get(twin_id) for twin_id in ids]


async def _load_alarms(assets: LiveAssets | None, ids: list[str]) -> list[list[Alarm]]:
    if assets is None:
        return [[] for _ in ids]
    found = await asyncio.to_thread(assets.alarms_of, ids)
    return [found.get(twin_id, []) for twin_id in ids]


async def _load_physics(
    physics: PhysicsStatus | None, ids: list[str]
) -> list[dict[str, Any] | None]:
    if physics is None:
        return [None] * len(ids)
    found = await asyncio.to_thread(physics.physics_of, ids)
    return [found.get(twin_id) for twin_id in ids]


async def _load_anomaly(models: AnomalyStatus | None, ids: list[str]) -> list[list[dict[str, Any]]]:
    if models is None:
        return [[] for _ in ids]
    found = await asyncio.to_thread(models.anomaly_of, ids)
    return [found.get(twin_id, []) for twin_id in ids]


async def _load_series(
    assets: LiveAssets | None, keys: list[SeriesKey]
) -> list[dict[str, list[Any]]]:
    if assets is None:
        return [{"times": [], "values": []} for _ in keys]
    return await asyncio.to_thread(assets.series_many, keys)
