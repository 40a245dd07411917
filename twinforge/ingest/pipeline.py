"""The ingest pipeline: validate, dead-letter, batch per asset host, confirm durability.

Transports call :meth:`IngestPipeline.offer` from their own threads. Accepted values are
grouped per asset host and sent in batches by one sender thread; each message's future
completes once its batch is in the host's write-ahead log, and only then does the
transport acknowledge the message to the broker or server. A failed send is retried
(the batch is kept) until it succeeds, so nothing accepted is dropped.

Given a live :class:`~twinforge.runtime.events.EventBus`, the pipeline then publishes each
durable message (``telemetry``) and each alarm the hosts raised or cleared on the way
(``alarm.raised``, ``alarm.cleared``), for GraphQL subscriptions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from twinforge.ingest.dead_letters import DeadLetterStore
from twinforge.ingest.messages import BAD_TIMESTAMP, OUT_OF_ORDER, UNKNOWN_TWIN, Entry, Rejection
from twinforge.ingest.validation import Refusal, TelemetryValidator
from twinforge.metrics import ServerMetrics
from twinforge.runtime.events import EventBus, EventKind
from twinforge.twin_models import TELEMETRY, ValueKind

if TYPE_CHECKING:
    from twinforge.actors.asset_host import IngestResult

log = logging.getLogger(__name__)


class Router(Protocol):
    """Where accepted values go (the actor fleet implements it)."""

    def route(self, twin_id: str) -> int | None: ...

    def send(self, host: int, entries: list[Entry], derived: bool = True) -> Future[IngestResult]:
        """``derived``: whether the result should carry the values physics derived."""


@dataclass(slots=True)
class _Batch:
    host: int
    entries: list[Entry] = field(default_factory=list)
    #: One future for the whole batch, shared by its messages: a Future per message
    #: (a Condition each) cost more than the rest of the pipeline.
    done: Future[bool] = field(default_factory=Future)
    times: list[float] = field(default_factory=list)  # source times, for latency
    transports: list[str] = field(default_factory=list)  # for the metrics
    attempts: int = 0


class IngestPipeline:
    """Implements :class:`twinforge.ingest.messages.Intake` on top of an asset fleet.

    ``out_of_order_s``: a value older than its twin's newest accepted source time by
    more than this is refused (``outOfOrder``); ``future_skew_s``: a source time further
    ahead of this machine's clock is refused (``badTimestamp``). ``live``: where durable
    messages and alarm changes are published (see the module docstring); events nobody
    subscribes to are never built.
    """

    def __init__(
        self,
        validator: TelemetryValidator,
        router: Router,
        dead_letters: DeadLetterStore,
        metrics: ServerMetrics | None = None,
        *,
        max_batch: int = 2000,
        max_delay_s: float = 0.02,
        out_of_order_s: float = 300.0,
        future_skew_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        live: EventBus | None = None,
    ) -> None:
        self.validator = validator
        self.router = router
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.out_of_order_s = out_of_order_s
        self.future_skew_s = future_skew_s
        self.clock = clock
        self.live = live
        self.accepted = 0
        self.rejected = 0
        self._newest: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._batches: dict[int, _Batch] = {}
        self._retry: list[tuple[float, _Batch]] = []
        self._letters: list[Rejection] = []
        self._letters_done: Future[bool] = Future()  # shared by the letters waiting
        self._in_flight = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ingest-sender", daemon=True)
        self._thread.start()

    # -- Intake --------------------------------------------------------------------

    def offer(
        self,
        twin_id: str,
        values: dict[str, Any],
        *,
        component: str | None = None,
        source_time: float | None = None,
        origin: str = "",
        payload: bytes = b"",
        kind: ValueKind = TELEMETRY,
    ) -> Future[bool]:
        now = self.clock()
        transport = origin.partition(":")[0] or "unknown"
        refusal = self.validator.check(twin_id, values, component=component, kind=kind)
        ts = now if source_time is None else source_time
        if refusal is None:
            refusal = self._check_time(twin_id, ts, now)
        host = self.router.route(twin_id) if refusal is None else None
        if refusal is not None or host is None:
            reason, field_name, message = (
                (refusal.reason, refusal.field, refusal.message)
                if refusal is not None
                else (UNKNOWN_TWIN, None, f"twin {twin_id!r} has no asset host")
            )
            rejection = Rejection(reason, message, origin, now, payload, twin_id, field_name)
            return self._dead_letter(rejection)
        fields = values if component is None else {f"{component}/{n}": v for n, v in values.items()}
        entry: Entry = (twin_id, kind, fields, ts, now)
        with self._lock:
            batch = self._batches.get(host)
            if batch is None:
                batch = self._batches[host] = _Batch(host)
                if len(self._batches) == 1:
                    self._wake.notify()  # the sender may be idle: the first of a round
            batch.entries.append(entry)
            batch.times.append(ts)
            batch.transports.append(transport)
            if len(batch.entries) >= self.max_batch:
                # Only then: a notify during the round's max_delay_s wait ends it early,
                # and batches of a few messages cost a Ray call each.
                self._wake.notify()
            return batch.done

    def reject(self, rejection: Rejection) -> Future[bool]:
        return self._dead_letter(rejection)

    # -- lifecycle -----------------------------------------------------------------

    def drain(self, timeout: float = 30.0) -> None:
        """Return once everything offered so far is durable or dead-lettered."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._wake.notify()
            while self._batches or self._retry or self._letters or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"ingest did not drain within {timeout} s")
                self._wake.wait(min(left, 0.01))

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.drain(timeout)
        finally:
            with self._lock:
                self._closing = True
                self._wake.notify()
            self._thread.join(timeout)

    # -- internals -----------------------------------------------------------------

    def _check_time(self, twin_id: str, ts: float, now: float) -> Refusal | None:
        if ts > now + self.future_skew_s:
            return Refusal(BAD_TIMESTAMP, "$ts", f"source time {ts} is ahead of now ({now})")
        newest = self._newest.get(twin_id)
        if newest is not None and ts < newest - self.out_of_order_s:
            return Refusal(
                OUT_OF_ORDER,
                "$ts",
                f"source time {ts} is {newest - ts:.1f} s older than the newest accepted "
                f"value (window {self.out_of_order_s} s)",
            )
        if newest is None or ts > newest:
            self._newest[twin_id] = ts
        return None

    def _dead_letter(self, rejection: Rejection) -> Future[bool]:
        with self._lock:
            self._letters.append(rejection)
            self._wake.notify()
            return self._letters_done

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._closing or self._letters or self._due_retry() or self._batches):
                    self._wake.wait(self._retry_wait())
                if self._closing and not (self._batches or self._letters or self._retry):
                    return
                # Let the batches fill for max_delay_s unless one is already full.
                if self._batches and not self._letters and self._fullest() < self.max_batch:
                    self._wake.wait(self.max_delay_s)
                batches = list(self._batches.values())
                self._batches.clear()
                letters, self._letters = self._letters, []
                letters_done, self._letters_done = self._letters_done, Future()
                now = time.monotonic()
                due = [b for at, b in self._retry if at <= now]
                self._retry = [(at, b) for at, b in self._retry if at > now]
                self._in_flight += len(batches) + len(due) + bool(letters)
            if letters:
                self._write_letters(letters, letters_done)
            for batch in batches + due:
                self._send(batch)

    def _fullest(self) -> int:
        return max(len(batch.entries) for batch in self._batches.values())

    def _due_retry(self) -> bool:
        now = time.monotonic()
        return any(at <= now for at, _ in self._retry)

    def _retry_wait(self) -> float | None:
        if not self._retry:
            return None
        return max(0.0, min(at for at, _ in self._retry) - time.monotonic())

    def _send(self, batch: _Batch) -> None:
        try:
            live = self.live
            wanted = live is not None and live.wants(EventKind.TELEMETRY)
            sent = self.router.send(batch.host, batch.entries, wanted)
        except Exception as error:
            self._failed(batch, error)
            return
        sent.add_done_callback(lambda done: self._sent(batch, done))

    def _sent(self, batch: _Batch, done: Future[IngestResult]) -> None:
        error = done.exception()
        if error is not None:
            self._failed(batch, error)
            return
        now = self.clock()
        batch.done.set_result(True)
        if self.live is not None:
            self._publish_live(self.live, batch, done.result())
        if self.metrics is not None:
            self.metrics.batch(len(batch.entries))
            for transport, count in Counter(batch.transports).items():
                self.metrics.received(transport, count)  # counted here: once per batch
                self.metrics.accepted(transport, count)
            self.metrics.latency([now - t for t in batch.times])
        with self._lock:
            self.accepted += len(batch.entries)
            self._in_flight -= 1
            self._wake.notify_all()

    def _publish_live(self, live: EventBus, batch: _Batch, result: IngestResult) -> None:
        """Publish a durable batch's messages, then the alarms they raised or cleared (in
        the order the host saw them). A message the host skipped (a redelivery it had
        applied before, a twin it no longer hosts) is left out: subscribers saw it once.
        Runs on Ray's callback thread: logs, never raises."""
        try:
            if live.wants(EventKind.TELEMETRY):
                skipped = set(getattr(result, "skipped", ()))  # a router may answer a count
                entries = (e for i, e in enumerate(batch.entries) if i not in skipped)
                live.publish_many(
                    EventKind.TELEMETRY, ((e[0], e) for e in entries), _telemetry_data
                )
                derived = getattr(result, "derived", ())
                if derived:  # expected values and residuals physics computed
                    live.publish_many(
                        EventKind.TELEMETRY, ((e[0], e) for e in derived), _telemetry_data
                    )
            for change in getattr(result, "alarms", ()):
                kind = EventKind.ALARM_RAISED if change.raised else EventKind.ALARM_CLEARED
                if live.wants(kind):
                    live.publish(kind, change.twin_id, change.event_data())
            for off in getattr(result, "physics_off", ()):
                if live.wants(EventKind.PHYSICS_OFF):
                    live.publish(EventKind.PHYSICS_OFF, off.twin_id, off.event_data())
        except Exception:
            log.exception("live events of a batch for asset host %d were not published", batch.host)

    def _failed(self, batch: _Batch, error: BaseException) -> None:
        batch.attempts += 1
        delay = min(5.0, 0.05 * 2 ** min(batch.attempts, 7))
        log.warning(
            "asset host %d: batch of %d failed (%s); retry in %.2f s",
            batch.host,
            len(batch.entries),
            error,
            delay,
        )
        with self._lock:
            self._retry.append((time.monotonic() + delay, batch))
            self._in_flight -= 1
            self._wake.notify_all()

    def _write_letters(self, letters: list[Rejection], done: Future[bool]) -> None:
        while True:
            try:
                self.dead_letters.add_many(letters)
                break
            except Exception:  # the store must not lose refusals either: retry
                log.exception("dead-letter store write failed; retrying")
                time.sleep(0.5)
        if self.metrics is not None:
            for rejection in letters:
                transport = rejection.origin.partition(":")[0] or "unknown"
                self.metrics.received(transport)
                self.metrics.rejected(transport, rejection.reason)
        done.set_result(False)
        with self._lock:
            self.rejected += len(letters)
            self._in_flight -= 1
            self._wake.notify_all()


def _telemetry_data(entry: Entry) -> dict[str, Any]:
    """The data of the ``telemetry`` event of a durable entry."""
    _, kind, values, source_time, _ = entry
    return {
        "values": values,
        "sourceTime": source_time,
        "kind": kind,
    }
