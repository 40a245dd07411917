"""Per-request DataLoaders: every twin, relationship list and live value a query touches
is fetched in one batched round trip per kind and level, never one per parent (N+1).

The stores are synchronous, so each batch runs on a worker thread and the event loop
keeps serving other requests meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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


class Loaders:
    """One set per request, so cached values never outlive the request that read them."""

    def __init__(self, twins: TwinService, assets: LiveAssets | None) -> None:
        self._twins = twins
        self._assets = assets
        self.twin = DataLoader[str, dict[str, Any] | None](load_fn=self._load_twins)
        self.outgoing = DataLoader[str, list[dict[str, Any]]](load_fn=self._load_outgoing)
        self.incoming = DataLoader[str, list[dict[str, Any]]](load_fn=self._load_incoming)
        self.snapshot = DataLoader[str, dict[str, Any] | None](load_fn=self._load_snapshots)
        self.alarms = DataLoader[str, list[Alarm]](load_fn=self._load_alarms)
        self.series = DataLoader[SeriesKey, dict[str, list[Any]]](load_fn=self._load_series)

    def remember(self, documents: Sequence[dict[str, Any]]) -> None:
        """Prime the twin loader with documents a list query already returned."""
        for document in documents:
            self.twin.prime(document["$dtId"], document)

    async def _load_twins(self, ids: list[str]) -> list[dict[str, Any] | None]:
        found = await asyncio.to_thread(self._twins.get_twins, ids)
        return [found.get(twin_id) for twin_id in ids]

    async def _load_outgoing(self, ids: list[str]) -> list[list[dict[str, Any]]]:
        found = await asyncio.to_thread(self._twins.relationships_of, ids)
        return [found.get(twin_id, []) for twin_id in ids]

    async def _load_incoming(self, ids: list[str]) -> list[list[dict[str, Any]]]:
        found = await asyncio.to_thread(self._twins.incoming_relationships_of, ids)
        return [found.get(twin_id, []) for twin_id in ids]

    async def _load_snapshots(self, ids: list[str]) -> list[dict[str, Any] | None]:
        if self._assets is None:
            return [None] * len(ids)
        found = await asyncio.to_thread(self._assets.snapshots, ids)
        return [found.get(twin_id) for twin_id in ids]

    async def _load_alarms(self, ids: list[str]) -> list[list[Alarm]]:
        if self._assets is None:
            return [[] for _ in ids]
        found = await asyncio.to_thread(self._assets.alarms_of, ids)
        return [found.get(twin_id, []) for twin_id in ids]

    async def _load_series(self, keys: list[SeriesKey]) -> list[dict[str, list[Any]]]:
        if self._assets is None:
            return [{"times": [], "values": []} for _ in keys]
        return await asyncio.to_thread(self._assets.series_many, keys)
