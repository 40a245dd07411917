"""OPC UA ingest: one subscription on a server, each data change handed to an Intake.

OPC UA has no per-message acknowledgement a client could withhold, so the futures
:meth:`Intake.offer` returns are only watched for errors (logged); what protects values
is the server-side monitored-item queue (``queue_size`` values per node between
publishes) and re-reading every node's current value on each reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription

from twinforge.connectivity.opcua.nodes import (
    SESSION_TIMEOUT_MS,
    NodeMapping,
    discover_mappings,
    load_mappings,
    parse_mappings,
    resolve_node_id,
)
from twinforge.connectivity.opcua.security import ClientSecurity, OpcUaSecurityError
from twinforge.ingest.messages import WRONG_TYPE, Intake, Rejection
from twinforge.lifecycle import Running

__all__ = [
    "BAD_STATUS_REASON",
    "NodeMapping",
    "OpcUaIngest",
    "discover_mappings",
    "load_mappings",
    "parse_mappings",
]

log = logging.getLogger(__name__)

#: Reason for values the server marks Bad (sensor failure, comm loss). No dedicated
#: constant exists in messages.py yet; ``extra["statusCode"]`` carries the OPC UA name.
BAD_STATUS_REASON = WRONG_TYPE
_MONITORED_ITEMS_PER_CALL = 500  # stays under common servers' MaxMonitoredItemsPerCall
_DISCONNECT_TIMEOUT_S = 2.0


class NotJsonValue(ValueError):
    """An OPC UA value with no JSON form (bytes, structures, NaN...)."""


def json_value(value: Any) -> Any:
    """The JSON form of an OPC UA variant value; DateTime becomes ISO 8601 UTC text."""
    if value is None:
        raise NotJsonValue("null variant (no value)")
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonValue(f"{value} is not a JSON number")
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list):
        return [json_value(item) for item in value]
    raise NotJsonValue(f"OPC UA {type(value).__name__} has no JSON form")


def source_time(data: ua.DataValue, now: float) -> float:
    """SourceTimestamp in epoch seconds, else ServerTimestamp, else ``now``.

    OPC UA's null DateTime (1601-01-01) and anything before 1970 count as absent.
    """
    for stamp in (data.SourceTimestamp, data.ServerTimestamp):
        if stamp is None:
            continue
        moment = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        seconds = moment.timestamp()
        if seconds > 0:
            return seconds
    return now


class OpcUaIngest(Running):
    """Subscribes to the mapped nodes of one OPC UA server and offers their values.

    Each data change becomes ``intake.offer(twin_id, {field: value}, component=...,
    source_time=..., origin="opcua:<node id>")``; Bad-status and non-JSON values become
    ``intake.reject``. Uncertain-status values are offered (OPC UA allows their use).

    When the server goes away, or the subscription dies, the ingest reconnects with
    exponential backoff (``reconnect_initial_s`` doubling up to ``reconnect_max_s``, with
    jitter) and creates the subscription again; the first notification of every item is
    the node's current value. Nodes the server refuses to monitor are listed in
    ``failed_nodes`` (node id → OPC UA status name) and logged, not fatal.

    Run it with :meth:`start`/:meth:`stop` (or ``with``) in its own thread and event loop,
    or ``await run()`` in an asyncio program (cancel it, or call :meth:`stop`, to end).
    """

    def __init__(
        self,
        endpoint: str,
        mappings: Iterable[NodeMapping],
        intake: Intake,
        *,
        security: ClientSecurity,
        publishing_interval_ms: float = 100.0,
        queue_size: int = 100,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        watchdog_interval_s: float = 1.0,
        request_timeout_s: float = 4.0,
    ) -> None:
        if publishing_interval_ms <= 0 or queue_size < 1:
            raise ValueError(
                "need publishing_interval_ms > 0 and queue_size >= 1, got "
                f"{publishing_interval_ms=}, {queue_size=}"
            )
        if not 0 < reconnect_initial_s <= reconnect_max_s:
            raise ValueError(
                "need 0 < reconnect_initial_s <= reconnect_max_s, got "
                f"{reconnect_initial_s=}, {reconnect_max_s=}"
            )
        if watchdog_interval_s <= 0 or request_timeout_s <= 0:
            raise ValueError(
                "need watchdog_interval_s > 0 and request_timeout_s > 0, got "
                f"{watchdog_interval_s=}, {request_timeout_s=}"
            )
        self.endpoint = endpoint
        self.security = security
        self.mappings = list(mappings)
        if not self.mappings:
            raise ValueError("mappings: need at least one node mapping")
        self._intake = intake
        self._publishing_interval_ms = publishing_interval_ms
        self._queue_size = queue_size
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._watchdog_interval_s = watchdog_interval_s
        self._request_timeout_s = request_timeout_s
        self.received = 0  # values received, offered or rejected (per mapping fed)
        self.rejected = 0  # of those, handed to intake.reject
        self.reconnects = 0  # connections made after the first
        self.failed_nodes: dict[str, str] = {}
        self.last_error: BaseException | None = None  # kept after recovery
        self._connections = 0
        self._connected = threading.Event()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        # Resolved node id text → the mappings it feeds (one node may feed several twins).
        self._routes: dict[str, list[NodeMapping]] = {}

    @property
    def connected(self) -> bool:
        """Whether the subscription is live right now."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the subscription is live; False when ``timeout`` passed first."""
        return self._connected.wait(timeout)

    # -- threaded use ------------------------------------------------------------------

    def start(self) -> None:
        """Run in a background thread with its own event loop until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("OpcUaIngest already started")
        self._stop_requested.clear()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self.run(),), name="opcua-ingest", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect and end :meth:`run` (from any thread); joins the thread if started."""
        self._stop_requested.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: run() has ended
                loop.call_soon_threadsafe(wake.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("OPC UA ingest for %s did not stop within %ss", self.endpoint, timeout)
            self._thread = None

    async def run(self) -> None:
        """Connect, subscribe and deliver until :meth:`stop` or cancellation; never raises
        for server trouble (it is logged, kept in ``last_error`` and retried)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        delay = self._reconnect_initial_s
        try:
            while not self._stop_requested.is_set():
                connections = self._connections
                try:
                    await self._until_woken(self._session())
                except OpcUaSecurityError as exc:
                    if str(exc) != str(self.last_error):  # once per cause, not per retry
                        log.error("%s", exc)
                    self.last_error = exc
                except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
                    self.last_error = exc
                    log.info("OPC UA %s: %r", self.endpoint, exc)
                except Exception as exc:  # a bug here must not end ingest for good
                    self.last_error = exc
                    log.exception("OPC UA ingest for %s failed; reconnecting", self.endpoint)
                if self._connections > connections:
                    delay = self._reconnect_initial_s  # it worked for a while: start over
                if self._stop_requested.is_set():
                    break
                await self._sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._reconnect_max_s)
        finally:
            self._connected.clear()
            self._loop = self._wake = None

    async def _until_woken(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until it ends (re-raising its error) or :meth:`stop` wakes us."""
        assert self._wake is not None
        await _first_of(asyncio.create_task(work), self._wake)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _session(self) -> None:
        """One connection: subscribe, deliver until the connection or subscription is lost."""
        client = Client(
            self.endpoint,
            timeout=self._request_timeout_s,
            watchdog_intervall=self._watchdog_interval_s,
        )
        client.session_timeout = SESSION_TIMEOUT_MS
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            log.info("OPC UA connection to %s lost: %r", self.endpoint, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        await self.security.connect(client)
        try:
            subscription = await self._subscribe(client)
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
            self._connected.set()
            await self._deliver_until_lost(subscription, lost)
        finally:
            self._connected.clear()
            try:
                await asyncio.wait_for(client.disconnect(), _DISCONNECT_TIMEOUT_S)
            except Exception as exc:  # the server is usually gone already
                log.debug("OPC UA disconnect from %s: %r", self.endpoint, exc)

    async def _subscribe(self, client: Client) -> Subscription:
        namespaces = await client.get_namespace_array()
        routes: dict[str, list[NodeMapping]] = {}
        failed: dict[str, str] = {}
        for mapping in self.mappings:
            try:
                key = resolve_node_id(mapping.node_id, namespaces).to_string()
            except LookupError as exc:
                failed[mapping.node_id] = str(exc)
                continue
            routes.setdefault(key, []).append(mapping)
        self._routes = routes
        subscription = await client.create_subscription(
            self._publishing_interval_ms, None, queue_maxsize=100_000
        )
        keys = list(routes)
        for start in range(0, len(keys), _MONITORED_ITEMS_PER_CALL):
            batch = keys[start : start + _MONITORED_ITEMS_PER_CALL]
            results = await subscription.subscribe_data_change(
                [client.get_node(key) for key in batch],
                queuesize=self._queue_size,
                sampling_interval=0,  # the server's fastest, or on change
            )
            for key, result in zip(batch, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    for mapping in routes[key]:
                        failed[mapping.node_id] = result.name
        if failed:
            log.warning("OPC UA %s refused to monitor %s", self.endpoint, failed)
        self.failed_nodes = failed
        return subscription

    async def _deliver_until_lost(self, subscription: Subscription, lost: asyncio.Event) -> None:
        await _first_of(asyncio.create_task(self._consume(subscription)), lost)

    async def _consume(self, subscription: Subscription) -> None:
        async for event in subscription:
            if isinstance(event, DataChangeEvent):
                self._on_data_change(event)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if not status.is_good():
                    # The server ended the subscription (timeout, shutdown): start over.
                    raise ConnectionError(f"subscription ended by the server: {status.name}")

    def _on_data_change(self, event: DataChangeEvent) -> None:
        now = time.time()
        data: ua.DataValue = event.data.monitored_item.Value
        key = event.node.nodeid.to_string()
        for mapping in self._routes.get(key, ()):
            self.received += 1
            origin = f"opcua:{mapping.node_id}"
            status = data.StatusCode
            if status is not None and status.is_bad():
                self._reject(
                    mapping,
                    BAD_STATUS_REASON,
                    f"{origin}: the server marks the value of field {mapping.field!r} "
                    f"{status.name} (Bad quality)",
                    now,
                    event.value,
                    statusCode=status.name,
                )
                continue
            try:
                value = json_value(event.value)
            except NotJsonValue as exc:
                self._reject(
                    mapping,
                    WRONG_TYPE,
                    f"{origin}: field {mapping.field!r} must have a JSON value: {exc}",
                    now,
                    event.value,
                )
                continue
            self._offer(mapping, value, source_time(data, now), origin)

    def _offer(self, mapping: NodeMapping, value: Any, at: float, origin: str) -> None:
        try:
            future = self._intake.offer(
                mapping.twin_id,
                {mapping.field: value},
                component=mapping.component,
                source_time=at,
                origin=origin,
            )
        except Exception:  # the intake's bug must not stop the subscription
            log.exception("intake.offer failed for %s", origin)
            return
        future.add_done_callback(_log_failure(origin))

    def _reject(
        self,
        mapping: NodeMapping,
        reason: str,
        message: str,
        now: float,
        value: Any,
        **extra: Any,
    ) -> None:
        self.rejected += 1
        rejection = Rejection(
            reason=reason,
            message=message,
            origin=f"opcua:{mapping.node_id}",
            received_time=now,
            payload=repr(value).encode()[:1024],
            twin_id=mapping.twin_id,
            field=mapping.field,
            extra={"nodeId": mapping.node_id, "component": mapping.component, **extra},
        )
        try:
            self._intake.reject(rejection)
        except Exception:
            log.exception("intake.reject failed for %s", rejection.origin)


async def _first_of(task: asyncio.Task[None], event: asyncio.Event) -> None:
    """Wait for ``task`` or ``event``; cancel the task if the event came first (letting its
    cleanup finish), else re-raise the task's error."""
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        task.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    if not task.cancelled():
        task.result()


def _log_failure(origin: str) -> Callable[[Future[bool]], None]:
    def done(future: Future[bool]) -> None:
        if not future.cancelled() and future.exception() is not None:
            # OPC UA cannot redeliver; the next data change carries the node's new value.
            log.warning("intake did not take %s: %r", origin, future.exception())

    return done
