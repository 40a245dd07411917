"""The event bus: real threads, real event loops, no mocks."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC

import pytest

from twinforge.runtime.events import EventBus, EventKind, Gap, Subscription, TwinEvent

TIMEOUT = 10  # seconds; a hang is a failure, not a stuck test run


async def take(subscription: Subscription, count: int) -> list[TwinEvent | Gap]:
    """The next ``count`` items of ``subscription``, failing on a hang."""

    async def _take() -> list[TwinEvent | Gap]:
        items: list[TwinEvent | Gap] = []
        async for item in subscription:
            items.append(item)
            if len(items) == count:
                break
        return items

    return await asyncio.wait_for(_take(), TIMEOUT)


def twin(twin_id: str) -> dict[str, object]:
    return {"$dtId": twin_id}


def test_publish_numbers_and_timestamps_events() -> None:
    bus = EventBus()
    first = bus.publish(EventKind.TWIN_CREATED, "pump-1", twin("pump-1"))
    second = bus.publish("twin.deleted", "pump-1", twin("pump-1"))

    assert (first.sequence, second.sequence) == (1, 2)
    assert second.kind is EventKind.TWIN_DELETED
    assert first.timestamp.tzinfo is UTC
    assert first.timestamp <= second.timestamp
    assert bus.published == 2


def test_subscriber_gets_events_published_inside_the_loop_in_order() -> None:
    async def scenario() -> list[TwinEvent | Gap]:
        bus = EventBus()
        async with bus.subscribe() as subscription:
            for index in range(5):
                bus.publish(EventKind.TWIN_CREATED, f"twin-{index}", twin(f"twin-{index}"))
            return await take(subscription, 5)

    items = asyncio.run(scenario())
    assert [item.subject for item in items] == [f"twin-{index}" for index in range(5)]
    assert [item.sequence for item in items] == [1, 2, 3, 4, 5]


def test_events_from_many_threads_reach_every_subscriber_in_sequence_order() -> None:
    threads, per_thread = 4, 250

    async def scenario() -> list[list[TwinEvent | Gap]]:
        bus = EventBus()
        subscriptions = [bus.subscribe(maxsize=threads * per_thread) for _ in range(3)]
        readers = [asyncio.create_task(take(s, threads * per_thread)) for s in subscriptions]

        def publish_many(worker: int) -> None:
            for index in range(per_thread):
                bus.publish(EventKind.TWIN_PATCHED, f"w{worker}-{index}", {"patch": []})

        await asyncio.gather(
            *(asyncio.to_thread(publish_many, worker) for worker in range(threads))
        )
        return await asyncio.gather(*readers)

    for items in asyncio.run(scenario()):
        assert not any(isinstance(item, Gap) for item in items)
        sequences = [item.sequence for item in items]
        assert sequences == sorted(sequences) == list(range(1, threads * per_thread + 1))
        # Each thread's own events stay in the order it published them.
        for worker in range(threads):
            mine = [item.subject for item in items if item.subject.startswith(f"w{worker}-")]
            assert mine == [f"w{worker}-{index}" for index in range(per_thread)]


def test_a_waiting_subscriber_is_woken_by_a_publishing_thread() -> None:
    async def scenario() -> list[TwinEvent | Gap]:
        bus = EventBus()
        async with bus.subscribe() as subscription:
            reader = asyncio.create_task(take(subscription, 1))
            await asyncio.sleep(0.01)  # the reader is now parked on its waiter
            threading.Thread(
                target=bus.publish, args=(EventKind.MODEL_CREATED, "dtmi:x:Pump;1", {})
            ).start()
            return await reader

    [event] = asyncio.run(scenario())
    assert event.kind is EventKind.MODEL_CREATED


def test_kinds_and_predicate_filter_what_a_subscriber_gets() -> None:
    async def scenario() -> tuple[list[TwinEvent | Gap], list[TwinEvent | Gap]]:
        bus = EventBus()
        relationships = bus.subscribe(
            kinds={EventKind.RELATIONSHIP_CREATED, "relationship.deleted"}
        )
        pump = bus.subscribe(predicate=lambda event: event.subject == "pump-1")
        bus.publish(EventKind.TWIN_CREATED, "pump-1", twin("pump-1"))
        bus.publish(EventKind.RELATIONSHIP_CREATED, "tank-1", {"$relationshipId": "r1"})
        bus.publish(EventKind.TWIN_CREATED, "pump-2", twin("pump-2"))
        bus.publish(EventKind.RELATIONSHIP_DELETED, "pump-1", {"$relationshipId": "r2"})
        return await take(relationships, 2), await take(pump, 2)

    relationships, pump = asyncio.run(scenario())
    assert [(e.kind, e.subject) for e in relationships] == [
        (EventKind.RELATIONSHIP_CREATED, "tank-1"),
        (EventKind.RELATIONSHIP_DELETED, "pump-1"),
    ]
    assert [(e.kind, e.subject) for e in pump] == [
        (EventKind.TWIN_CREATED, "pump-1"),
        (EventKind.RELATIONSHIP_DELETED, "pump-1"),
    ]


def test_a_failing_predicate_skips_the_event_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> list[TwinEvent | Gap]:
        bus = EventBus()
        subscription = bus.subscribe(predicate=lambda event: event.data["keep"])
        bus.publish(EventKind.TWIN_CREATED, "a", {})  # KeyError in the predicate
        bus.publish(EventKind.TWIN_CREATED, "b", {"keep": True})
        return await take(subscription, 1)

    with caplog.at_level(logging.ERROR, logger="twinforge.runtime.events"):
        [event] = asyncio.run(scenario())
    assert event.subject == "b"
    assert "predicate failed" in caplog.text


def test_a_full_buffer_drops_the_oldest_and_marks_the_gap() -> None:
    async def scenario() -> tuple[Subscription, list[TwinEvent | Gap], list[TwinEvent | Gap]]:
        bus = EventBus()
        subscription = bus.subscribe(maxsize=3)
        for index in range(10):  # never yields to the reader: 7 of these cannot fit
            bus.publish(EventKind.TWIN_PATCHED, f"e{index}", {"patch": []})
        first = await take(subscription, 4)
        for index in range(10, 12):  # room again: no gap
            bus.publish(EventKind.TWIN_PATCHED, f"e{index}", {"patch": []})
        second = await take(subscription, 2)
        return subscription, first, second

    subscription, first, second = asyncio.run(scenario())
    assert first[0] == Gap(missed=7)
    assert [item.subject for item in first[1:]] == ["e7", "e8", "e9"]
    assert [item.subject for item in second] == ["e10", "e11"]
    assert subscription.dropped == 7


def test_a_gap_sits_where_the_events_were_lost() -> None:
    async def scenario() -> tuple[list[TwinEvent | Gap], int]:
        bus = EventBus()
        subscription = bus.subscribe(maxsize=2)
        bus.publish(EventKind.TWIN_PATCHED, "e0", {})
        bus.publish(EventKind.TWIN_PATCHED, "e1", {})
        items = await take(subscription, 1)  # e0 read; e1 still buffered
        for name in ("e2", "e3", "e4"):  # e1 and e2 are dropped
            bus.publish(EventKind.TWIN_PATCHED, name, {})
        items += await take(subscription, 3)
        return items, subscription.dropped

    items, dropped = asyncio.run(scenario())
    assert [getattr(item, "subject", item) for item in items] == ["e0", Gap(2), "e3", "e4"]
    assert dropped == 2


def test_leaving_the_context_unsubscribes_and_ends_iteration() -> None:
    async def scenario() -> tuple[int, int, list[TwinEvent | Gap]]:
        bus = EventBus()
        async with bus.subscribe() as subscription:
            inside = bus.subscriber_count
        after = bus.subscriber_count
        bus.publish(EventKind.TWIN_CREATED, "late", {})
        return inside, after, [item async for item in subscription]

    inside, after, leftovers = asyncio.run(scenario())
    assert (inside, after, leftovers) == (1, 0, [])


def test_closing_from_another_thread_wakes_a_waiting_reader() -> None:
    async def scenario() -> tuple[list[TwinEvent | Gap], bool]:
        bus = EventBus()
        subscription = bus.subscribe()
        reader = asyncio.create_task(asyncio.wait_for(_drain(subscription), TIMEOUT))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(subscription.close)
        return await reader, subscription.closed

    async def _drain(subscription: Subscription) -> list[TwinEvent | Gap]:
        return [item async for item in subscription]

    assert asyncio.run(scenario()) == ([], True)


def test_bus_close_ends_every_subscription() -> None:
    async def scenario() -> tuple[list[list[TwinEvent | Gap]], int]:
        bus = EventBus()
        subscriptions = [bus.subscribe() for _ in range(3)]

        async def drain(subscription: Subscription) -> list[TwinEvent | Gap]:
            return [item async for item in subscription]

        readers = [asyncio.create_task(drain(s)) for s in subscriptions]
        await asyncio.sleep(0.01)
        bus.close()
        return await asyncio.wait_for(asyncio.gather(*readers), TIMEOUT), bus.subscriber_count

    assert asyncio.run(scenario()) == ([[], [], []], 0)


def test_a_cancelled_reader_leaves_the_subscription_usable() -> None:
    async def scenario() -> list[TwinEvent | Gap]:
        bus = EventBus()
        async with bus.subscribe() as subscription:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(subscription), 0.01)
            bus.publish(EventKind.TWIN_CREATED, "after", {})
            return await take(subscription, 1)

    [event] = asyncio.run(scenario())
    assert event.subject == "after"


def test_a_thousand_subscribers_each_get_all_hundred_events() -> None:
    async def scenario() -> list[list[TwinEvent | Gap]]:
        bus = EventBus()
        subscriptions = [bus.subscribe(maxsize=100) for _ in range(1000)]
        readers = [asyncio.create_task(take(s, 100)) for s in subscriptions]
        await asyncio.sleep(0)  # let the readers park on their waiters
        await asyncio.to_thread(
            lambda: [bus.publish(EventKind.TWIN_PATCHED, f"e{i}", {}) for i in range(100)]
        )
        results = await asyncio.gather(*readers)
        assert bus.subscriber_count == 1000
        bus.close()
        assert bus.subscriber_count == 0
        return results

    expected = list(range(1, 101))
    for items in asyncio.run(scenario()):
        assert [item.sequence for item in items] == expected


def test_listeners_run_in_order_and_a_failing_one_is_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[tuple[str, int]] = []

    def broken(event: TwinEvent) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(lambda event: seen.append(("first", event.sequence)))
    bus.add_listener(broken)
    bus.add_listener(lambda event: seen.append(("last", event.sequence)))

    with caplog.at_level(logging.ERROR, logger="twinforge.runtime.events"):
        event = bus.publish(EventKind.TWIN_CREATED, "pump-1", twin("pump-1"))

    assert event.sequence == 1
    assert seen == [("first", 1), ("last", 1)]
    assert "listener bug" in caplog.text

    bus.remove_listener(broken)
    caplog.clear()
    bus.publish(EventKind.TWIN_DELETED, "pump-1", twin("pump-1"))
    assert seen[-2:] == [("first", 2), ("last", 2)]
    assert not caplog.text


def test_listeners_see_concurrent_publishes_in_sequence_order() -> None:
    bus = EventBus()
    seen: list[tuple[int, str]] = []
    bus.add_listener(lambda event: seen.append((event.sequence, threading.current_thread().name)))

    def publish_many() -> None:
        for _ in range(200):
            bus.publish(EventKind.TWIN_PATCHED, "pump-1", {})

    workers = [threading.Thread(target=publish_many, name=f"w{n}") for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert [sequence for sequence, _ in seen] == list(range(1, 801))
    # Listeners ran on the publishing threads, not on some dispatcher thread.
    assert {name for _, name in seen} == {"w0", "w1", "w2", "w3"}


def test_a_subscription_whose_loop_closed_is_dropped_at_the_next_publish() -> None:
    bus = EventBus()

    async def abandon() -> Subscription:
        subscription = bus.subscribe()
        reader = asyncio.create_task(anext(subscription))  # parked on a waiter
        await asyncio.sleep(0)
        reader.cancel()
        return subscription  # never closed: its loop goes away with asyncio.run

    subscription = asyncio.run(abandon())
    assert bus.subscriber_count == 1

    bus.publish(EventKind.TWIN_CREATED, "pump-1", twin("pump-1"))

    assert bus.subscriber_count == 0
    assert subscription.closed


def test_subscribe_needs_a_running_loop_and_a_positive_size() -> None:
    bus = EventBus()
    with pytest.raises(RuntimeError):
        bus.subscribe()

    async def bad_size() -> None:
        bus.subscribe(maxsize=0)

    with pytest.raises(ValueError, match="maxsize"):
        asyncio.run(bad_size())
