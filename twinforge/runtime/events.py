"""Change events of the twin graph, live data of the assets, and the bus that fans them out.

The twin service publishes one :class:`TwinEvent` per change, from whatever thread it runs
on; the ingest pipeline publishes each telemetry or property message once it is durable,
and each alarm the asset actors raise or clear. Two kinds of consumers read them:

* **listeners** (:meth:`EventBus.add_listener`): synchronous callbacks such as topology
  views, called on the publishing thread in sequence order;
* **subscriptions** (:meth:`EventBus.subscribe`): asyncio consumers such as GraphQL
  subscriptions, each with its own bounded buffer, read with ``async for``.

A slow subscription never slows the publisher: when its buffer is full the oldest event is
dropped, and the consumer is told so by a :class:`Gap` item yielded where the dropped
events would have been.

A subscription may name the ``subjects`` it wants (say, the twins a GraphQL client
watches): the bus indexes it under each of them, so publishing an event costs one offer
per subscription on its subject plus one per subscription without subjects, however many
subscriptions watch other twins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

__all__ = ["EventBus", "EventKind", "Gap", "Listener", "Subscription", "TwinEvent"]

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    """What changed in the twin graph, or what an asset reported."""

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
    TELEMETRY = "telemetry"
    """One durable message of a twin: ``{"values": {...}, "sourceTime": float, "kind":
    "telemetry" | "property"}``."""
    ALARM_RAISED = "alarm.raised"
    """``{"name", "severity", "since", "field", "value", "time"}``: ``value`` breached the
    rule at ``time`` (equal to ``since``)."""
    ALARM_CLEARED = "alarm.cleared"
    """Same keys: the alarm raised at ``since`` cleared at ``time``, when ``field`` came
    back inside its limits with ``value``."""
    PHYSICS_OFF = "physics.off"
    """``{"reason", "time", "quarantined"}``: the twin's FMU failed and its physics is off
    until a new FMU version is bound; ingest goes on."""


@dataclass(frozen=True, slots=True)
class TwinEvent:
    """One change, as delivered to every consumer.

    ``subject`` is the model id, the twin id, or for relationships the source twin id.
    ``data`` is the model document, the twin document, ``{"patch": [...], "twin": {...}}``
    for ``twin.patched``, the relationship document (``$relationshipId``, ``$sourceId``,
    ``$targetId``, ``$relationshipName``), or for live data what :class:`EventKind` says.
    The same object reaches every consumer, so ``data`` must be treated as read-only.
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
        subjects: frozenset[str] | None = None,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self._maxsize = maxsize
        self._kinds = kinds
        self._predicate = predicate
        self.subjects = subjects
        """The subjects this subscription is indexed under (None: every subject)."""
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

    def _offer(self, event: TwinEvent) -> asyncio.Future[None] | None:
        """Buffer ``event`` if it matches; runs on the publishing thread. Returns the
        reader's waiter, for the publisher to wake (see :func:`_wake_all`)."""
        if self._loop.is_closed():
            # Nobody can ever read it again: clean up instead of buffering forever.
            self.close()
            return None
        if self._kinds is not None and event.kind not in self._kinds:
            return None
        if self._predicate is not None:
            try:
                if not self._predicate(event):
                    return None
            except Exception:
                logger.exception("subscription predicate failed on event %d", event.sequence)
                return None
        with self._lock:
            if self._closed:
                return None
            if len(self._buffer) >= self._maxsize:
                self._buffer.popleft()
                self.dropped += 1
                self._missed += 1
            self._buffer.append(event)
            waiter, self._waiter = self._waiter, None
        return waiter

    def _wake(self, waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None:
            _wake_all([waiter])


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    """Wake readers with one call per event loop, not one per reader: each call writes to
    the loop's self-pipe, a system call, and a publish may wake a thousand readers."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        by_loop.setdefault(waiter.get_loop(), []).append(waiter)
    for loop, woken in by_loop.items():
        # RuntimeError: the loop closed meanwhile, so nothing is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, woken)


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():  # it may have been cancelled
            waiter.set_result(None)


class EventBus:
    """Fans twin change events out to synchronous listeners and asyncio subscriptions.

    :meth:`publish` is thread-safe and never waits on a consumer. Events are numbered by a
    strictly increasing ``sequence``; every listener and subscription sees them in that
    order. A subscription sees every matching event numbered after it was opened, and no
    earlier one.
    """

    def __init__(self) -> None:
        # Serializes publishing, so sequence order is delivery order even with several
        # publishing threads; re-entrant so that a listener may itself publish.
        self._publish_lock = threading.RLock()
        self._sequence = 0
        self._published = 0
        # Copy-on-write tuples under their own lock: consumers come and go without waiting
        # for a publish (and its listeners) in flight, which iterates a snapshot.
        self._registry_lock = threading.Lock()
        self._subscriptions: tuple[Subscription, ...] = ()  # those without subjects
        # Subject -> the subscriptions naming it. The dict is changed in place under the
        # registry lock (a publisher only looks one subject up), its tuples are replaced.
        self._by_subject: dict[str, tuple[Subscription, ...]] = {}
        self._open: dict[Subscription, None] = {}  # every open subscription, in order
        # How many open subscriptions take each kind (None: those taking every kind), all
        # of them and those without subjects, so publishers can tell what nobody receives.
        self._kind_counts: Counter[EventKind | None] = Counter()
        self._everywhere_counts: Counter[EventKind | None] = Counter()
        self._listeners: tuple[Listener, ...] = ()

    @property
    def published(self) -> int:
        """How many events have been published."""
        return self._published

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._open)

    @property
    def has_consumers(self) -> bool:
        """Whether any subscription or listener is there to receive an event.

        A publisher may check this to skip building events nobody would receive.
        """
        return bool(self._open or self._listeners)

    def publish(self, kind: EventKind | str, subject: str, data: Mapping[str, Any]) -> TwinEvent:
        """Number, timestamp and deliver one event; returns it. Callable from any thread.

        Subscriptions get it first (a cheap append), then listeners are called in order on
        this thread; a failing listener is logged and skipped.
        """
        kind = EventKind(kind)
        with self._publish_lock:
            self._sequence += 1
            self._published += 1
            event = TwinEvent(kind, subject, data, self._sequence, datetime.now(UTC))
            if self._open or self._listeners:
                woken: list[asyncio.Future[None]] = []
                self._deliver(event, woken)
                _wake_all(woken)
        return event

    def wants(self, kind: EventKind) -> bool:
        """Whether a listener, or a subscription accepting ``kind``, would receive an event
        of that kind (for some subject)."""
        counts = self._kind_counts
        return bool(self._listeners or counts[None] or counts[kind])

    def publish_many(
        self,
        kind: EventKind | str,
        items: Iterable[tuple[str, Any]],
        build: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> int:
        """Publish one event of ``kind`` per ``(subject, data)`` item, in order, under one
        lock acquisition and with one timestamp; returns how many were published.

        With ``build``, items are ``(subject, raw)`` and an event's data is ``build(raw)``,
        called only for events someone may receive: the others are numbered and counted
        but never built, so a publisher of many subjects (the ingest pipeline) pays little
        for subjects nobody watches.
        """
        kind = EventKind(kind)
        with self._publish_lock:
            counts = self._everywhere_counts
            everyone = bool(self._listeners or counts[None] or counts[kind])
            by_subject = self._by_subject
            if not (everyone or by_subject):
                count = sum(1 for _ in items)
                self._sequence += count
                self._published += count
                return count
            timestamp = datetime.now(UTC)
            woken: list[asyncio.Future[None]] = []
            count = 0
            for subject, data in items:
                self._sequence += 1
                self._published += 1
                count += 1
                if everyone or subject in by_subject:
                    if build is not None:
                        data = build(data)
                    event = TwinEvent(kind, subject, data, self._sequence, timestamp)
                    self._deliver(event, woken)
            _wake_all(woken)
        return count

    def _deliver(self, event: TwinEvent, woken: list[asyncio.Future[None]]) -> None:
        """Offer ``event`` to its subscriptions, adding the readers to wake to ``woken``,
        then call the listeners (publish lock held)."""
        for subscription in self._subscriptions:
            if (waiter := subscription._offer(event)) is not None:
                woken.append(waiter)
        indexed = self._by_subject.get(event.subject)
        if indexed is not None:
            for subscription in indexed:
                if (waiter := subscription._offer(event)) is not None:
                    woken.append(waiter)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed on %s", listener, event.kind)

    def subscribe(
        self,
        *,
        maxsize: int = 1000,
        kinds: Collection[EventKind | str] | None = None,
        predicate: Callable[[TwinEvent], bool] | None = None,
        subjects: Collection[str] | None = None,
    ) -> Subscription:
        """Open a subscription on the running event loop.

        Only events whose kind is in ``kinds`` (all if None), whose subject is in
        ``subjects`` (all if None; an empty collection matches nothing) and for which
        ``predicate`` returns true are buffered; the predicate runs on the publishing
        thread, so it must be quick and thread-safe. Prefer ``subjects`` to a predicate
        testing the subject: the bus then never offers other subjects' events to it. At
        most ``maxsize`` events wait; beyond that the oldest is dropped and a :class:`Gap`
        marks the loss.
        """
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        if isinstance(subjects, str):  # a lone twin id would be read as its characters
            raise TypeError("subjects must be a collection of subjects, not a string")
        loop = asyncio.get_running_loop()  # raises outside a loop: there would be no reader
        wanted = None if kinds is None else frozenset(EventKind(kind) for kind in kinds)
        named = None if subjects is None else frozenset(subjects)
        subscription = Subscription(self, loop, maxsize, wanted, predicate, named)
        with self._registry_lock:
            self._open[subscription] = None
            self._count_kinds(subscription, 1)
            if named is None:
                self._subscriptions = (*self._subscriptions, subscription)
            else:
                for subject in named:
                    self._by_subject[subject] = (
                        *self._by_subject.get(subject, ()),
                        subscription,
                    )
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
        with self._registry_lock:
            subscriptions = list(self._open)
        for subscription in subscriptions:
            subscription.close()

    def _count_kinds(self, subscription: Subscription, delta: int) -> None:
        """Count ``subscription`` in (or out of) the kind counts; registry lock held."""
        counts, everywhere = Counter(self._kind_counts), Counter(self._everywhere_counts)
        for kind in (None,) if subscription._kinds is None else subscription._kinds:
            counts[kind] += delta
            if subscription.subjects is None:
                everywhere[kind] += delta
        # Copy-on-write, zero counts dropped (a Counter reads a missing key as 0).
        self._kind_counts, self._everywhere_counts = +counts, +everywhere

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._registry_lock:
            if subscription not in self._open:
                return  # closed before
            del self._open[subscription]
            self._count_kinds(subscription, -1)
            if subscription.subjects is None:
                self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
                return
            for subject in subscription.subjects:
                rest = tuple(s for s in self._by_subject.get(subject, ()) if s is not subscription)
                if rest:
                    self._by_subject[subject] = rest
                else:
                    self._by_subject.pop(subject, None)
