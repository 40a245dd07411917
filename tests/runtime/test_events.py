"""The event bus: real threads, real event loops, no mocks."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC

import pytest
from support.bus_reading import take as take_within

from twinforge.runtime.events import EventBus, EventKind, Gap, Subscription, TwinEvent

TIMEOUT = 10  # seconds; a hang is a failure, not a stuck test run


async def take(subscription: Subscription, count: int) -> list[TwinEvent | Gap]:
    return await take_within(subscription, count, TIMEOUT)


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


# -- subjects --------------------------------------------------------------------------


def test_a_subscription_with_subjects_gets_only_their_events() -> None:
    async def scenario() -> list[list[TwinEvent | Gap]]:
        bus = EventBus()
        pump = bus.subscribe(subjects=["pump-1"])
        both = bus.subscribe(subjects={"pump-1", "tank-1"})
        everything = bus.subscribe()
        for subject in ("pump-1", "tank-1", "valve-1", "pump-1"):
            bus.publish(EventKind.TELEMETRY, subject, {"values": {}})
        return [await take(pump, 2), await take(both, 3), await take(everything, 4)]

    pump, both, everything = asyncio.run(scenario())
    assert [(e.subject, e.sequence) for e in pump] == [("pump-1", 1), ("pump-1", 4)]
    assert [(e.subject, e.sequence) for e in both] == [("pump-1", 1), ("tank-1", 2), ("pump-1", 4)]
    assert [e.sequence for e in everything] == [1, 2, 3, 4]


def test_other_subjects_events_are_never_offered_to_a_subscription() -> None:
    offered: list[str] = []

    def count(event: TwinEvent) -> bool:  # runs once per event offered to the subscription
        offered.append(event.subject)
        return True

    async def scenario() -> list[TwinEvent | Gap]:
        bus = EventBus()
        subscription = bus.subscribe(subjects=["twin-7"], predicate=count)
        others = [bus.subscribe(subjects=[f"twin-{n}"], maxsize=1) for n in range(100)]
        for round_ in range(10):
            for n in range(100):
                bus.publish(EventKind.TELEMETRY, f"twin-{n}", {"round": round_})
        items = await take(subscription, 10)
        assert all(other.dropped == 9 for other in others)  # each saw its own ten only
        return items

    items = asyncio.run(scenario())
    assert offered == ["twin-7"] * 10
    assert [item.data["round"] for item in items] == list(range(10))


def test_kinds_and_subjects_combine() -> None:
    async def scenario() -> list[TwinEvent | Gap]:
        bus = EventBus()
        alarms = bus.subscribe(subjects=["pump-1"], kinds={EventKind.ALARM_RAISED, "alarm.cleared"})
        bus.publish(EventKind.TELEMETRY, "pump-1", {"values": {"powerKw": 80}})
        bus.publish(EventKind.ALARM_RAISED, "pump-2", {"name": "hot"})
        bus.publish(EventKind.ALARM_RAISED, "pump-1", {"name": "hot"})
        bus.publish(EventKind.ALARM_CLEARED, "pump-1", {"name": "hot"})
        return await take(alarms, 2)

    items = asyncio.run(scenario())
    assert [(e.kind, e.subject) for e in items] == [
        (EventKind.ALARM_RAISED, "pump-1"),
        (EventKind.ALARM_CLEARED, "pump-1"),
    ]


def test_closing_removes_a_subscription_from_the_subject_index() -> None:
    async def scenario() -> None:
        bus = EventBus()
        first = bus.subscribe(subjects=["a", "b"])
        second = bus.subscribe(subjects=["b"])
        assert bus._by_subject == {"a": (first,), "b": (first, second)}
        assert bus.subscriber_count == 2

        first.close()
        first.close()  # twice is fine
        assert bus._by_subject == {"b": (second,)}
        assert bus.subscriber_count == 1
        bus.publish(EventKind.TELEMETRY, "b", {})
        assert [item async for item in first] == []
        [event] = await take(second, 1)
        assert event.subject == "b"

        async with bus.subscribe(subjects=["c"]):
            assert set(bus._by_subject) == {"b", "c"}
        assert set(bus._by_subject) == {"b"}

        bus.close()
        assert bus._by_subject == {}
        assert bus.subscriber_count == 0
        assert not bus.has_consumers

    asyncio.run(scenario())


def test_a_gap_marks_the_loss_on_a_subject_subscription() -> None:
    async def scenario() -> tuple[list[TwinEvent | Gap], int]:
        bus = EventBus()
        subscription = bus.subscribe(subjects=["pump-1"], maxsize=2)
        for index in range(5):
            bus.publish(EventKind.TELEMETRY, "pump-1", {"i": index})
            bus.publish(EventKind.TELEMETRY, "pump-2", {"i": index})  # not counted as lost
        return await take(subscription, 3), subscription.dropped

    items, dropped = asyncio.run(scenario())
    assert items[0] == Gap(missed=3)
    assert [item.data["i"] for item in items[1:]] == [3, 4]
    assert dropped == 3


def test_a_subject_subscription_whose_loop_closed_is_dropped_at_its_next_event() -> None:
    bus = EventBus()

    async def abandon() -> Subscription:
        return bus.subscribe(subjects=["pump-1"])

    subscription = asyncio.run(abandon())
    bus.publish(EventKind.TELEMETRY, "pump-2", {})
    assert bus.subscriber_count == 1  # not offered that one
    bus.publish(EventKind.TELEMETRY, "pump-1", {})
    assert (bus.subscriber_count, bus._by_subject, subscription.closed) == (0, {}, True)


def test_subjects_must_be_a_collection_not_a_string() -> None:
    async def scenario() -> None:
        EventBus().subscribe(subjects="pump-1")

    with pytest.raises(TypeError, match="subjects"):
        asyncio.run(scenario())


def test_many_subject_subscriptions_from_many_threads_stay_in_order() -> None:
    twins, per_twin, threads = 100, 10, 4

    async def scenario() -> list[list[TwinEvent | Gap]]:
        bus = EventBus()
        # Ten subscriptions per twin, as GraphQL clients watching a plant.
        subscriptions = [
            bus.subscribe(subjects=[f"twin-{n % twins}"], maxsize=per_twin * threads)
            for n in range(twins * 10)
        ]
        readers = [asyncio.create_task(take(s, per_twin * threads)) for s in subscriptions]
        await asyncio.sleep(0)

        def publish(worker: int) -> None:
            for index in range(per_twin):
                bus.publish_many(
                    EventKind.TELEMETRY,
                    [(f"twin-{n}", {"worker": worker, "i": index}) for n in range(twins)],
                )

        await asyncio.gather(*(asyncio.to_thread(publish, w) for w in range(threads)))
        results = await asyncio.gather(*readers)
        assert bus.published == twins * per_twin * threads
        return results

    for n, items in enumerate(asyncio.run(scenario())):
        assert {item.subject for item in items} == {f"twin-{n % twins}"}
        sequences = [item.sequence for item in items]
        assert sequences == sorted(sequences)
        for worker in range(threads):
            mine = [item.data["i"] for item in items if item.data["worker"] == worker]
            assert mine == list(range(per_twin))


# -- publish_many, consumers -------------------------------------------------------------


def test_publish_many_numbers_like_publish_and_builds_only_what_is_watched() -> None:
    built: list[str] = []

    def build(raw: str) -> dict[str, str]:
        built.append(raw)
        return {"raw": raw}

    async def scenario() -> tuple[list[TwinEvent | Gap], list[TwinEvent | Gap]]:
        bus = EventBus()
        assert bus.publish_many(EventKind.TELEMETRY, [("a", "a0"), ("b", "b0")], build) == 2
        assert built == []  # nobody listens: numbered and counted only
        watch_a = bus.subscribe(subjects=["a"])
        alarms = bus.subscribe(kinds=[EventKind.ALARM_RAISED])  # every subject, other kind
        bus.publish(EventKind.TWIN_CREATED, "a", {})
        items = [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")]
        assert bus.publish_many(EventKind.TELEMETRY, iter(items), build) == 4
        bus.publish_many(EventKind.ALARM_RAISED, [("b", {"name": "hot"})])
        assert bus.published == 8
        return await take(watch_a, 3), await take(alarms, 1)

    watched, alarms = asyncio.run(scenario())
    assert built == ["a1", "a2"]
    assert [(e.kind, e.sequence) for e in watched] == [
        (EventKind.TWIN_CREATED, 3),
        (EventKind.TELEMETRY, 4),
        (EventKind.TELEMETRY, 7),
    ]
    assert [e.data for e in watched[1:]] == [{"raw": "a1"}, {"raw": "a2"}]
    assert watched[1].timestamp == watched[2].timestamp  # one batch, one timestamp
    assert [(e.subject, e.sequence) for e in alarms] == [("b", 8)]


def test_publish_many_reaches_listeners_for_every_subject() -> None:
    bus = EventBus()
    seen: list[tuple[str, int]] = []
    bus.add_listener(lambda event: seen.append((event.subject, event.sequence)))
    bus.publish_many("telemetry", [("a", {}), ("b", {})])
    assert seen == [("a", 1), ("b", 2)]


def test_has_consumers_and_wants_follow_subscriptions_and_listeners() -> None:
    async def scenario() -> None:
        bus = EventBus()
        assert not bus.has_consumers and not bus.wants(EventKind.TELEMETRY)
        alarms = bus.subscribe(kinds=[EventKind.ALARM_RAISED], subjects=["pump-1"])
        assert bus.has_consumers
        assert bus.wants(EventKind.ALARM_RAISED) and not bus.wants(EventKind.TELEMETRY)
        everything = bus.subscribe()
        assert bus.wants(EventKind.TELEMETRY)
        everything.close()
        assert not bus.wants(EventKind.TELEMETRY)
        alarms.close()
        assert not bus.has_consumers and not bus.wants(EventKind.ALARM_RAISED)

        def listener(event: TwinEvent) -> None:
            pass

        bus.add_listener(listener)
        assert bus.has_consumers and bus.wants(EventKind.TELEMETRY)
        bus.remove_listener(listener)
        assert not bus.has_consumers

    asyncio.run(scenario())


class _CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the wake-ups other threads schedule on it."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def test_one_publish_wakes_all_its_readers_with_one_call_per_loop() -> None:
    bus = EventBus()
    loop = _CountingLoop()
    readers = 50

    async def scenario() -> list[list[TwinEvent | Gap]]:
        subscriptions = [bus.subscribe(subjects=["pump-1"]) for _ in range(readers)]
        reading = [asyncio.ensure_future(take(s, 3)) for s in subscriptions]
        await asyncio.sleep(0.05)  # every reader is waiting now

        def publish() -> None:
            bus.publish_many(EventKind.TELEMETRY, [("pump-1", {"n": n}) for n in range(3)])

        await asyncio.to_thread(publish)
        return await asyncio.gather(*reading)

    try:
        got = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert all([e.data["n"] for e in items] == [0, 1, 2] for items in got)  # type: ignore[union-attr]
    # to_thread itself schedules one call back; the fifty readers take one more.
    assert loop.threadsafe_calls == 2
