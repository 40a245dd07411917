"""Subscription events shared between subscribers.

A thousand clients watching a hundred twins ask the same few subscription queries: each
event would be executed and encoded once per subscriber, the same answer each time. Here
a subscription resolver hands every subscriber of an event the same payload object
(:meth:`SharedEvents.payload`); the executor answers an identical query on that payload
from the first subscriber's result (:meth:`SharedEvents.result`), and the WebSocket
encoder reuses that result's JSON (:meth:`SharedEvents.encoded`).

Only payloads made here are shared, and only results without errors: a payload that
differs per subscriber (it reports what that subscriber missed) is made as usual. A
shared payload's type must hold nothing of one user (no permissions, no resolvers that
read the context): every subscriber of the same query gets the first one's answer.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from inspect import isawaitable
from typing import Any, TypeVar

__all__ = ["SHARED_EVENTS", "SharedEvents"]

T = TypeVar("T")

#: Entries per cache: enough for every subscriber of a burst of events to find the
#: event's answer before it is evicted; an entry holds one event and its answer.
CACHE_SIZE = 4096
_MISSING = object()


class _Lru(OrderedDict[Hashable, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Hashable, value: Any) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


class SharedEvents:
    """The caches; the server's one instance is :data:`SHARED_EVENTS`. Entries hold
    their objects, so an id in a key is never reused while its entry lives."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._payloads = _Lru(size)
        self._shared = _Lru(size)  # id(payload) -> payload
        self._results = _Lru(size)
        self._encoded = _Lru(size)  # id(data) -> [data, json or None]
        self.executed = 0
        """Shared payloads answered by running the query."""
        self.reused = 0
        """Shared payloads answered from another subscriber's result."""

    def payload(self, event: object, variant: Hashable, make: Callable[[], T]) -> T:
        """The payload made of ``event`` for ``variant`` (say, the fields asked for),
        made by ``make`` the first time."""
        key = (id(event), variant)
        with self._lock:
            found = self._payloads.get(key)
            if found is not None and found[0] is event:
                return found[1]  # type: ignore[no-any-return]
            made = make()
            self._payloads.put(key, (event, made))
            self._shared.put(id(made), made)
            return made

    def is_shared(self, payload: object) -> bool:
        return self._shared.get(id(payload), _MISSING) is payload

    def result(
        self,
        payload: object,
        query: tuple[object, ...],
        execute: Callable[[], Any],
    ) -> Any:
        """The answer to ``query`` (objects that identify a query: schema, operation,
        variables) on a shared ``payload``; ``execute`` runs it the first time. An
        answer with errors is not kept."""
        key = (id(payload), *(id(part) for part in query))
        with self._lock:
            found = self._results.get(key)
        if (
            found is not None
            and found[0] is payload
            and all(a is b for a, b in zip(found[1], query, strict=True))
        ):
            self.reused += 1
            return found[2]
        self.executed += 1
        result = execute()
        if (
            isawaitable(result)
            or getattr(result, "errors", None)
            or not isinstance(getattr(result, "data", None), dict)
        ):
            return result
        with self._lock:
            self._results.put(key, (payload, query, result))
            self._encoded.put(id(result.data), [result.data, None])
        return result

    def encoded(self, data: object) -> str | None:
        """The JSON of a shared answer's ``data`` (None: not a shared answer)."""
        with self._lock:
            entry = self._encoded.get(id(data))
        if entry is None or entry[0] is not data:
            return None
        if entry[1] is None:
            entry[1] = json.dumps(data, separators=(",", ":"))
        return entry[1]  # type: ignore[no-any-return]


#: The server's caches: subscriptions run on the API's event loop, whichever app made them.
SHARED_EVENTS = SharedEvents()
