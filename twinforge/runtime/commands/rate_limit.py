"""Sliding-window counts of recent invocations, per twin and command."""

from __future__ import annotations

from collections import deque

__all__ = ["InvocationCounter"]


class InvocationCounter:
    """Remembers when each (twin, command) was last sent, for ``horizon`` seconds.

    Used from the event loop only, so it needs no lock.
    """

    def __init__(self, horizon: float) -> None:
        self._horizon = horizon
        self._times: dict[tuple[str, str], deque[float]] = {}

    def count(self, twin_id: str, command: str, window: float, now: float) -> int:
        """How many invocations of ``command`` on ``twin_id`` fell in the last ``window`` s."""
        times = self._prune((twin_id, command), now)
        # Times are appended in clock order, so the recent ones sit at the right end.
        return sum(1 for t in reversed(times) if t > now - window)

    def add(self, twin_id: str, command: str, now: float) -> None:
        """Count one invocation at ``now``."""
        key = (twin_id, command)
        self._prune(key, now)
        self._times.setdefault(key, deque()).append(now)

    def _prune(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._times.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self._horizon:
            times.popleft()
        if not times:
            # Forget idle keys, so memory follows the active twins, not all ever seen.
            del self._times[key]
        return times
