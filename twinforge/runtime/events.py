"""Change events of the twin graph and the bus that fans them out.

The twin service publishes one :class:`TwinEvent` per change, from whatever thread it runs
on. Two kinds of consumers read them:

* **listeners** (:meth:`EventBus.add_listener`): synchronous callbacks such as topology
  views, called on the publishing thread in sequence order;
* **subscriptions** (:meth:`EventBus.subscribe`): asyncio consumers such as GraphQL
  subscriptions, each with its own bounded buffer, read with ``async for``.

A slow subscription never slows the publisher: when its buffer is full the oldest event is
dropped, and the consumer is told so by a :class:`Gap` item yielded where the dropped
events would have been.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

__all__ = ["EventBus", "EventKind", "Gap", "Listener", "Subscription", "TwinEvent"]

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    """What changed in the twin graph."""

    MODEL_CREATED = "model.created"
    MODEL_DECOMMISSIONED = "model.decommissioned"
    MODEL_DELETED = "model.deleted"
    TWIN_CREATED = "twin.created"
    TWIN_REPLACED = "twin.replaced"
    TWIN_PATCHED = "twin.patched"
    TWIN_DELETED = "twin.deleted"
    RELATIONSHIP_CREATED = "relationship.created"
    RELATIONSHIP_REPLACED = "relationship.replaced"
    RELATIONSHIP_DELETED = "relationship.deleted"


@dataclass(frozen=True, slots=True)
class TwinEvent:
    """One change, as delivered to every consumer.

    ``subject`` is the model id, the twin id, or for relationships the source twin id.
    ``data`` is the model document, the twin document, ``{"patch": [...], "twin": {...}}``
    for ``twin.patched``, or the relationship document (``$relationshipId``, ``$sourceId``,
    ``$targetId``, ``$relationshipName``). The same object reaches every consumer, so
    ``data`` must be treated as read-only.
    """

    kind: EventKind
    subject: str
    data: Mapping[str, Any]
    sequence: int
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Gap:
    """Yielded by a :class:`Subscription` in place of ``missed`` events it had to drop.

    It comes right before the oldest event still buffered, so a consumer that needs a
    complete picture (say, a UI showing a twin's state) knows to reload it.
    """

    missed: int


Listener = Callable[[TwinEvent], None]


class Subscription:
    """An asyncio consumer's view of the bus: ``async for item in subscription``.

    Yields :class:`TwinEvent` items in sequence order, and a :class:`Gap` where events were
    dropped because more than ``maxsize`` were waiting. Use it as an async context manager,
    or call :meth:`close`, to unsubscribe; iteration then stops and buffered events are
    discarded. Made by :meth:`EventBus.subscribe`, it is bound to the event loop that was
    running then; if that loop closes first, the bus drops it at the next publish.
    """

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        maxsize: int,
        kinds: frozenset[EventKind] | None,
        predicate: Callable[[TwinEvent], bool] | None,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self._maxsize = maxsize
        self._kinds = kinds
        self._predicate = predicate
        # A plain deque under a thread lock rather than an asyncio.Queue: publishers on
        # other threads append directly, so the bound holds even when the loop is busy
        # (scheduling one loop callback per event would buffer unboundedly in the loop).
        self._lock = threading.Lock()
        self._buffer: deque[TwinEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._missed = 0
        self._closed = False
        self.dropped = 0
        """Events dropped so far because the buffer was full."""

    @property
    def closed(self) -> bool:
        """Whether this subscription has been closed (by the consumer or the bus)."""
        return self._closed

    def close(self) -> None:
        """Unsubscribe and end iteration; safe to call from any thread, more than once."""
        self._bus._unsubscribe(self)
        with self._lock:
            self._closed = True
            self._buffer.clear()
            self._missed = 0
            waiter, self._waiter = self._waiter, None
        self._wake(waiter)

    async def aclose(self) -> None:
        """Async spelling of :meth:`close`, as on async generators."""
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TwinEvent | Gap:
        while True:
            with self._lock:
                # Drops always take the oldest buffered event, so the gap sits at the head.
                if self._missed:
                    gap = Gap(self._missed)
                    self._missed = 0
                    return gap
                if self._buffer:
                    return self._buffer.popleft()
                if self._closed:
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None

    def _offer(self, event: TwinEvent) -> None:
        """Buffer ``event`` if it matches; runs on the publishing thread."""
        if self._loop.is_closed():
            # Nobody can ever read it again: clean up instead of buffering forever.
            self.close()
            return
        if self._kinds is not None and event.kind not in self._kinds:
            return
        if self._predicate is not None:
            try:
                if not self._predicate(event):
                    return
            except Exception:
                logger.exception("subscription predicate failed on event %d", event.sequence)
                return
        with self._lock:
            if self._closed:
                return
            if len(self._buffer) >= self._maxsize:
                self._buffer.popleft()
                self.dropped += 1
                self._missed += 1
            self._buffer.append(event)
            waiter, self._waiter = self._waiter, None
        self._wake(waiter)

    def _wake(self, waiter: asyncio.Future[None] | None) -> None:
        if waiter is None:
            return
        # RuntimeError: the loop closed meanwhile, so nothing is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # it may have been cancelled
        waiter.set_result(None)


class EventBus:
    """Fans twin change events out to synchronous listeners and asyncio subscriptions.

    :meth:`publish` is thread-safe and never waits on a consumer. Events are numbered by a
    strictly increasing ``sequence``; every listener and subscription sees them in that
    order.
    """

    def __init__(self) -> None:
        # Serializes publishing, so sequence order is delivery order even with several
        # publishing threads; re-entrant so that a listener may itself publish.
        self._publish_lock = threading.RLock()
        self._sequence = itertools.count(1)
        self._published = 0
        # Copy-on-write tuples under their own lock: consumers come and go without waiting
        # for a publish (and its listeners) in flight, which iterates a snapshot.
        self._registry_lock = threading.Lock()
        self._subscriptions: tuple[Subscription, ...] = ()
        self._listeners: tuple[Listener, ...] = ()

    @property
    def published(self) -> int:
        """How many events have been published."""
        return self._published

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def publish(self, kind: EventKind | str, subject: str, data: Mapping[str, Any]) -> TwinEvent:
        """Number, timestamp and deliver one event; returns it. Callable from any thread.

        Subscriptions get it first (a cheap append), then listeners are called in order on
        this thread; a failing listener is logged and skipped.
        """
        kind = EventKind(kind)
        with self._publish_lock:
            event = TwinEvent(
                kind=kind,
                subject=subject,
                data=data,
                sequence=next(self._sequence),
                timestamp=datetime.now(UTC),
            )
            self._published += 1
            for subscription in self._subscriptions:
                subscription._offer(event)
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception("event listener %r failed on %s", listener, kind)
        return event

    def subscribe(
        self,
        *,
        maxsize: int = 1000,
        kinds: Collection[EventKind | str] | None = None,
        predicate: Callable[[TwinEvent], bool] | None = None,
    ) -> Subscription:
        """Open a subscription on the running event loop.

        Only events whose kind is in ``kinds`` (all if None) and for which ``predicate``
        returns true are buffered; the predicate runs on the publishing thread, so it must
        be quick and thread-safe. At most ``maxsize`` events wait; beyond that the oldest
        is dropped and a :class:`Gap` marks the loss.
        """
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        loop = asyncio.get_running_loop()  # raises outside a loop: there would be no reader
        wanted = None if kinds is None else frozenset(EventKind(kind) for kind in kinds)
        subscription = Subscription(self, loop, maxsize, wanted, predicate)
        with self._registry_lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` synchronously for every event published from now on."""
        with self._registry_lock:
            self._listeners = (*self._listeners, callback)

    def remove_listener(self, callback: Listener) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        with self._registry_lock:
            self._listeners = tuple(
                listener for listener in self._listeners if listener != callback
            )

    def close(self) -> None:
        """Close every subscription, ending their iteration (e.g. at server shutdown)."""
        for subscription in self._subscriptions:
            subscription.close()

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._registry_lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
