"""A fixed-size time series of one telemetry field: the newest ``capacity`` samples."""

from __future__ import annotations

from typing import Any

import numpy as np


class RingBuffer:
    """Values and source times of one field in preallocated numpy arrays.

    Numbers (and booleans) are kept as float64; the first value that is not a number
    (a string, an object) switches the buffer to an object array, so any DTDL telemetry
    schema fits without losing what was stored before.
    """

    __slots__ = ("_next", "_size", "times", "values")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be at least 1, got {capacity}")
        self.times = np.zeros(capacity, dtype=np.float64)
        self.values: np.ndarray = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return len(self.times)

    def __len__(self) -> int:
        return self._size

    def append(self, time: float, value: Any) -> None:
        if self.values.dtype != object and not _is_number(value):
            self.values = self.values.astype(object)
        i = self._next
        self.times[i] = time
        self.values[i] = value
        self._next = (i + 1) % len(self.times)
        self._size = min(self._size + 1, len(self.times))

    def last(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` samples (all when None) as (times, values), oldest first."""
        count = self._size if n is None else max(0, min(n, self._size))
        index = (np.arange(self._next - count, self._next)) % len(self.times)
        return self.times[index], self.values[index]

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the buffer (for a checkpoint)."""
        times, values = self.last()
        return {"capacity": self.capacity, "times": times, "values": values}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RingBuffer:
        buffer = cls(int(state["capacity"]))
        times, values = np.asarray(state["times"]), np.asarray(state["values"])
        count = len(times)
        buffer.values = buffer.values.astype(values.dtype)
        buffer.times[:count] = times
        buffer.values[:count] = values
        buffer._next = count % buffer.capacity
        buffer._size = count
        return buffer


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)  # bool is an int: kept as 0.0 / 1.0
