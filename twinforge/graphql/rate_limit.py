"""Request rate per principal (or failed authentications per client address): a token
bucket each, bounded in memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from twinforge.graphql.errors import RateLimited

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per principal: ``burst`` requests at once, refilled at
    ``rate_per_s``. Thread-safe; holds at most ``max_buckets`` buckets, dropping idle
    (refilled) ones first, so memory follows the active principals."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s: must be positive, not {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst: at least 1, not {burst}")
        if max_buckets < 1:
            raise ValueError(f"max_buckets: at least 1, not {max_buckets}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_buckets = max_buckets
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently used first, so the idle buckets sit at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, principal_name: str, cost: float = 1.0) -> None:
        """Take ``cost`` from the principal's bucket, or raise :class:`RateLimited`."""
        self.take(principal_name, self._principal_refusal(principal_name), cost)

    def take(self, key: str, refusal: Callable[[float], RateLimited], cost: float = 1.0) -> None:
        """Take ``cost`` from ``key``'s bucket, or raise ``refusal(seconds to wait)``."""
        wait = self._bucket(key, cost, take=True)
        if wait is not None:
            raise refusal(wait)

    def ensure_left(self, key: str, refusal: Callable[[float], RateLimited]) -> None:
        """Raise ``refusal(seconds to wait)`` unless ``key``'s bucket has one left;
        takes nothing."""
        wait = self._bucket(key, 1.0, take=False)
        if wait is not None:
            raise refusal(wait)

    def _principal_refusal(self, principal_name: str) -> Callable[[float], RateLimited]:
        def refusal(wait: float) -> RateLimited:
            return RateLimited(
                f"rate limited: {principal_name} may send {self.burst} requests at once and"
                f" {self.rate_per_s:g} per second after that; retry in {wait:.2f} s",
                retry_after=wait,
            )

        return refusal

    def _bucket(self, key: str, cost: float, *, take: bool) -> float | None:
        """None when ``key`` has ``cost`` left (taken when ``take``), else the wait."""
        if not 0 < cost <= self.burst:
            raise ValueError(f"cost: between 0 and the burst {self.burst}, not {cost}")
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                self._make_room(now)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            else:
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
                bucket.updated = now
                self._buckets.move_to_end(key)
            if bucket.tokens >= cost:
                if take:
                    bucket.tokens -= cost
                return None
            return (cost - bucket.tokens) / self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def _make_room(self, now: float) -> None:
        """Drop refilled buckets (the same as new ones) from the least recently used end,
        and past the bound the least recently used ones even if not refilled."""
        while self._buckets:
            name, oldest = next(iter(self._buckets.items()))
            refilled = oldest.tokens + (now - oldest.updated) * self.rate_per_s >= self.burst
            if not refilled and len(self._buckets) < self._max_buckets:
                break
            del self._buckets[name]
