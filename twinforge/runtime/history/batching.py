"""Batching many small writes, from many threads, into few store transactions."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from itertools import islice

from twinforge.lifecycle import Closing
from twinforge.runtime.history._encoding import encode_point
from twinforge.runtime.history.point import HistoryPoint
from twinforge.runtime.history.store import HistoryStore

log = logging.getLogger(__name__)


class BufferFullError(TimeoutError):
    """The writer's buffer stayed full for the whole timeout; the points were not accepted."""


class BatchingWriter(Closing):
    """Buffers points and writes them to ``store`` from a background thread.

    A write starts once ``max_batch`` points are waiting or the oldest has waited
    ``max_delay_s``, whichever comes first. It takes everything waiting, up to
    ``max_transaction`` points, so a backlog drains in few large transactions: with many
    interleaved series, SQLite writes 50,000 points in one transaction 3-4x faster than in
    25 of 2,000. Points are checked when put (ValueError, as from ``HistoryStore.append``),
    so a bad point fails its caller and never a batch.

    Nothing accepted is dropped: a failed write keeps its points, records ``last_error``
    and is retried with exponential backoff; once ``max_pending`` points wait, ``put``
    blocks and, after its timeout, raises :class:`BufferFullError`. Callers that may
    acknowledge only durable points call :meth:`flush` or ``put_many(..., wait=True)``.
    Values must not be mutated after they are put. The writer does not close ``store``.
    """

    def __init__(
        self,
        store: HistoryStore,
        *,
        max_delay_s: float = 0.05,
        max_batch: int = 2000,
        max_pending: int = 1_000_000,
        max_transaction: int = 50_000,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
    ) -> None:
        if max_delay_s < 0 or retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError(
                "need max_delay_s >= 0 and 0 < retry_initial_s <= retry_max_s, got "
                f"{max_delay_s=}, {retry_initial_s=}, {retry_max_s=}"
            )
        if not 1 <= max_batch <= min(max_pending, max_transaction):
            raise ValueError(
                "need 1 <= max_batch <= max_pending and max_transaction, got "
                f"{max_batch=}, {max_pending=}, {max_transaction=}"
            )
        self._store = store
        self._max_delay_s = max_delay_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._max_transaction = max_transaction
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        # One lock; three conditions so each wake-up reaches only the threads it concerns.
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)  # the background thread waits
        self._has_space = threading.Condition(self._lock)  # put() waits while full
        self._progress = threading.Condition(self._lock)  # flush() waits for durability
        self._buffer: deque[HistoryPoint] = deque()
        self._accepted = 0  # points ever accepted; the buffer holds the newest ones
        self._durable = 0  # points ever written; FIFO, so all up to this count
        self._urgent_until = 0  # a flush() waits for points up to this count
        self._oldest_at = 0.0  # monotonic time the oldest buffered point arrived
        self._closing = False
        self._last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Points accepted and not yet written."""
        with self._lock:
            return len(self._buffer)

    @property
    def last_error(self) -> BaseException | None:
        """Why the last write failed, or None once a write has succeeded since."""
        with self._lock:
            return self._last_error

    def put(self, point: HistoryPoint, *, timeout: float | None = 30.0) -> None:
        """Accept one point; block up to ``timeout`` s (None: forever) while full."""
        encode_point(point)
        self._enqueue((point,), timeout)

    def put_many(
        self, points: Sequence[HistoryPoint], *, wait: bool = False, timeout: float | None = 30.0
    ) -> None:
        """Accept all of ``points`` or none; with ``wait``, return once they are durable.

        Raises ValueError for an invalid point or more points than ``max_pending``;
        :class:`BufferFullError` (not accepted) when no room came within ``timeout`` s;
        with ``wait``, TimeoutError (accepted, not yet durable) when the write did not
        succeed within the same ``timeout``.
        """
        points = list(points)
        for index, point in enumerate(points):
            encode_point(point, f"points[{index}]")
        if len(points) > self._max_pending:
            raise ValueError(
                f"points: {len(points)} points exceed max_pending={self._max_pending}; "
                "put them in smaller parts"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._enqueue(points, timeout)
        if wait:
            self._wait_durable(target, deadline)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every point accepted before the call is durable.

        Raises TimeoutError (naming ``last_error``) if that takes longer than ``timeout`` s;
        the points stay pending and are still retried.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
        self._wait_durable(target, deadline)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting points, flush, and stop the background thread.

        Raises TimeoutError if the flush takes longer than ``timeout`` s; the thread then
        keeps retrying, and close() may be called again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closing = True
            target = self._accepted
            self._has_work.notify()
            self._has_space.notify_all()  # blocked producers now fail: the writer is closed
        self._wait_durable(target, deadline)
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _enqueue(self, points: Sequence[HistoryPoint], timeout: float | None) -> int:
        count = len(points)
        with self._lock:
            if len(self._buffer) + count > self._max_pending and not self._closing:
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self._buffer) + count > self._max_pending and not self._closing:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BufferFullError(
                            f"history writer: {len(self._buffer)} points pending (max_pending="
                            f"{self._max_pending}) for {timeout} s; points not accepted; "
                            f"last error: {self._last_error!r}"
                        )
                    self._has_space.wait(remaining)
            if self._closing:
                raise RuntimeError("history writer is closed")
            before = len(self._buffer)
            if not before:
                self._oldest_at = time.monotonic()
            self._buffer.extend(points)
            self._accepted += count
            # The background thread only needs waking to start a deadline, or when a full
            # batch is first reached; not on every put while a write is under way.
            if not before or before < self._max_batch <= before + count:
                self._has_work.notify()
            return self._accepted

    def _wait_durable(self, target: int, deadline: float | None) -> None:
        with self._lock:
            if self._durable >= target:
                return
            if target > self._urgent_until:
                self._urgent_until = target
                self._has_work.notify()
            while self._durable < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"history writer: {target - self._durable} points not yet durable "
                        f"({len(self._buffer)} pending); last error: {self._last_error!r}"
                    )
                self._progress.wait(remaining)

    def _next_batch(self) -> list[HistoryPoint] | None:
        """Wait until a batch is due and return it (left in the buffer), or None to stop."""
        with self._lock:
            while True:
                if self._buffer:
                    if (
                        len(self._buffer) >= self._max_batch
                        or self._closing
                        or self._urgent_until > self._durable
                    ):
                        break
                    remaining = self._oldest_at + self._max_delay_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self._has_work.wait(remaining)
                elif self._closing:
                    return None
                else:
                    self._has_work.wait()
            return list(islice(self._buffer, self._max_transaction))

    def _run(self) -> None:
        backoff = self._retry_initial_s
        while (batch := self._next_batch()) is not None:
            taken_at = time.monotonic()
            try:
                self._store.append(batch)
            except Exception as exc:
                log.warning(
                    "history writer: writing %d points failed, retrying in %.2f s: %r",
                    len(batch),
                    backoff,
                    exc,
                )
                with self._lock:
                    self._last_error = exc
                time.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max_s)
                continue
            backoff = self._retry_initial_s
            with self._lock:
                for _ in range(len(batch)):
                    self._buffer.popleft()
                self._durable += len(batch)
                self._last_error = None
                if self._buffer:
                    # What is left arrived before the write started: due by then + delay.
                    self._oldest_at = taken_at
                self._has_space.notify_all()
                self._progress.notify_all()
