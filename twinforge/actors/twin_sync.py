"""Keeps the fleet's assets in step with the twin graph.

At start every twin in the graph gets an asset; afterwards the twin service's events add,
re-model and remove assets as twins are created, replaced and deleted, so ingest knows
each twin's model without asking the graph per message.
"""

from __future__ import annotations

import logging
import threading

from twinforge.actors.fleet import AssetFleet
from twinforge.runtime.events import EventKind, TwinEvent
from twinforge.runtime.twin_service import TwinQuery, TwinService

log = logging.getLogger(__name__)

_PAGE = 1000


class TwinSync:
    """Twin id -> model id, mirrored from the graph into ``fleet``."""

    def __init__(self, service: TwinService, fleet: AssetFleet) -> None:
        self.service = service
        self.fleet = fleet
        self._models: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self) -> TwinSync:
        """Load every twin from the graph, host them, then follow the event bus."""
        self.service.bus.add_listener(self._on_event)
        after: str | None = None
        while True:
            page = self.service.query_twins(TwinQuery(limit=_PAGE, after=after))
            batch = {t["$dtId"]: t["$metadata"]["$model"] for t in page.items}
            with self._lock:
                self._models.update(batch)
            self.fleet.add(batch)
            if page.next_after is None:
                return self
            after = page.next_after

    def model_of(self, twin_id: str) -> str | None:
        return self._models.get(twin_id)

    def twins(self) -> dict[str, str]:
        with self._lock:
            return dict(self._models)

    def _on_event(self, event: TwinEvent) -> None:
        try:
            if event.kind in (EventKind.TWIN_CREATED, EventKind.TWIN_REPLACED):
                model = event.data["$metadata"]["$model"]
                self._host(event.subject, model)
            elif event.kind == EventKind.TWIN_PATCHED:
                model = event.data["twin"]["$metadata"]["$model"]
                if self._models.get(event.subject) != model:  # a patch of $model
                    self._host(event.subject, model)
            elif event.kind == EventKind.TWIN_DELETED:
                with self._lock:
                    self._models.pop(event.subject, None)
                self.fleet.remove([event.subject])
        except Exception:  # a listener must not fail the change that was already made
            log.exception("asset update for %s (%s) failed", event.subject, event.kind)

    def _host(self, twin_id: str, model: str) -> None:
        self.fleet.add({twin_id: model})
        with self._lock:
            self._models[twin_id] = model
