"""Starting, stopping and closing: what a running server is made of, and ``with`` support.

A server is a list of parts, each started by its subsystem's ``start_...`` function and
stopped in reverse order. A part offers ``stop()`` and ``endpoints`` (label to URL, for
the banner); everything else it holds is its own typed attributes. This module imports
nothing of twinforge, so every subsystem may use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, Self

__all__ = ["Closing", "Part", "Running", "stop_each"]

log = logging.getLogger(__name__)


class Part(Protocol):
    @property
    def endpoints(self) -> Mapping[str, str]: ...

    def stop(self) -> None: ...


def stop_each(steps: Iterable[Callable[[], object] | None]) -> None:
    """Run every step, in order, even when one fails: a failed step is logged, and the
    rest still have something to release."""
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception:
            log.exception("stopping %s failed", getattr(step, "__qualname__", step))


class Closing:
    """``with`` support for what holds a resource until :meth:`close`."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Running:
    """``with`` support for what runs from :meth:`start` until :meth:`stop`."""

    __slots__ = ()

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
