"""An Intake that records: the boundary the OPC UA tests look at."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from twinforge.ingest.messages import Rejection

T = TypeVar("T")


class RecordingIntake:
    """Keeps every offer and rejection; every offer is accepted at once."""

    def __init__(self) -> None:
        self.offers: list[dict[str, Any]] = []
        self.rejections: list[Rejection] = []
        self._changed = threading.Condition()

    def offer(
        self,
        twin_id: str,
        values: dict[str, Any],
        *,
        component: str | None = None,
        source_time: float | None = None,
        origin: str = "",
        payload: bytes = b"",
        kind: str = "telemetry",
    ) -> Future[bool]:
        with self._changed:
            self.offers.append(
                {
                    "twin_id": twin_id,
                    "values": values,
                    "component": component,
                    "source_time": source_time,
                    "origin": origin,
                }
            )
            self._changed.notify_all()
        future: Future[bool] = Future()
        future.set_result(True)
        return future

    def reject(self, rejection: Rejection) -> None:
        with self._changed:
            self.rejections.append(rejection)
            self._changed.notify_all()

    def wait_offer(self, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first offer whose keys equal ``match``; fails the test after ``timeout``."""
        return self._wait(lambda: [o for o in self.offers if o.items() >= match.items()], timeout)

    def wait_rejection(self, timeout: float = 5.0, **match: Any) -> Rejection:
        return self._wait(
            lambda: [
                r for r in self.rejections if all(getattr(r, k) == v for k, v in match.items())
            ],
            timeout,
        )

    def _wait(self, find: Callable[[], list[T]], timeout: float) -> T:
        with self._changed:
            if not self._changed.wait_for(find, timeout):
                pytest.fail(f"nothing matched within {timeout}s; offers={self.offers[-5:]}")
            return find()[0]
