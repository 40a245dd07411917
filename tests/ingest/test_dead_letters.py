"""The dead-letter store on a real SQLite file: round trips, paging, hostile input, threads,
and its budget (total size, per-source quotas, age)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twinforge.ingest.dead_letters import (
    DROPPED_AGE,
    DROPPED_SOURCE,
    DROPPED_TOTAL,
    MAX_PAYLOAD_BYTES,
    DeadLetterBudget,
    DeadLetterStore,
)
from twinforge.ingest.messages import NOT_JSON, OVERSIZE, UNKNOWN_TWIN, WRONG_TYPE, Rejection

#: Keeps the 1970 times these tests use: the default budget would age them out.
KEEP_OLD = DeadLetterBudget(max_age_s=1e11)
MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeadLetterStore]:
    with DeadLetterStore.in_data_dir(tmp_path / "data", budget=KEEP_OLD) as opened:
        yield opened


def rejection(reason: str = NOT_JSON, t: float = 1000.0, **kw: Any) -> Rejection:
    """A valid rejection; keyword arguments override its fields."""
    fields: dict[str, Any] = {"message": f"{reason} at {t}", "origin": "mqtt:plant/a"} | kw
    return Rejection(reason=reason, received_time=t, **fields)


def test_round_trip_keeps_every_field(store: DeadLetterStore) -> None:
    sent = Rejection(
        reason=WRONG_TYPE,
        message="bearingTemp must be a double, got 'hot'",
        origin="mqtt:factory/pump-1/telemetry",
        received_time=1_700_000_000.25,
        payload=b'{"bearingTemp": "hot"}',
        twin_id="pump-1",
        field="bearingTemp",
        extra={"topic": "factory/pump-1/telemetry", "qos": 1, "nested": [1.5, None]},
    )
    new_id = store.add(sent)
    [got] = store.list()
    assert got.id == new_id
    assert (got.reason, got.message, got.origin, got.received_time) == (
        sent.reason,
        sent.message,
        sent.origin,
        sent.received_time,
    )
    assert (got.twin_id, got.field, got.extra) == (sent.twin_id, sent.field, sent.extra)
    assert got.payload == sent.payload and got.payload_size == len(sent.payload)
    assert got.payload_sha256 == hashlib.sha256(sent.payload).hexdigest()
    assert not got.payload_truncated
    with pytest.raises(AttributeError):
        got.reason = "x"  # type: ignore[misc]


def test_list_is_newest_first_filters_and_pages(store: DeadLetterStore) -> None:
    ids = store.add_many(
        rejection(NOT_JSON if i % 2 else UNKNOWN_TWIN, t=1000.0 + i, twin_id=f"t{i % 3}")
        for i in range(25)
    )
    assert ids == sorted(ids) and len(set(ids)) == 25
    assert [d.id for d in store.list(limit=3)] == ids[::-1][:3]
    assert store.count() == 25 and store.count(NOT_JSON) == 12 and store.count(OVERSIZE) == 0
    assert all(d.reason == NOT_JSON for d in store.list(reason=NOT_JSON))
    assert {d.twin_id for d in store.list(twin_id="t1")} == {"t1"}
    assert [d.received_time for d in store.list(since=1022.0)] == [1024.0, 1023.0, 1022.0]
    pages: list[int] = []
    before: int | None = None
    while page := store.list(limit=7, before_id=before):
        pages += [d.id for d in page]
        before = page[-1].id
    assert pages == ids[::-1]
    combined = store.list(reason=UNKNOWN_TWIN, twin_id="t0", since=1010.0)
    assert [d.received_time for d in combined] == [1024.0, 1018.0, 1012.0]


def test_purge_deletes_older_than_a_time(store: DeadLetterStore) -> None:
    store.add_many(rejection(t=float(t)) for t in range(10))
    assert store.purge(older_than=4.0) == 4
    assert sorted(d.received_time for d in store.list()) == [float(t) for t in range(4, 10)]
    assert store.purge(older_than=0.0) == 0


def test_hostile_values_come_back_exactly(store: DeadLetterStore) -> None:
    strange_ids = [
        "nul\x00inside",
        "\udcff\udcfe-surrogates",
        "ポンプ-1 ✿ (◕‿◕) \u202e reversed",
        "'; DROP TABLE x;--",
        "",
    ]
    payloads = [b"\x00\x00\xff\xfe not utf-8 \xc3\x28", b"", bytes(range(256)) * 10]
    for twin_id, payload in zip(strange_ids, payloads * 2, strict=False):
        store.add(
            rejection(
                twin_id=twin_id,
                payload=payload,
                field="a\x00b",
                extra={"k\x00": "\udcff", "n": float("nan")},
            )
        )
    for twin_id, payload in zip(strange_ids, payloads * 2, strict=False):
        [got] = store.list(twin_id=twin_id)
        assert got.twin_id == twin_id and got.payload == payload and got.field == "a\x00b"
        assert got.extra["k\x00"] == "\udcff"


def test_huge_payload_is_capped_with_length_and_hash(store: DeadLetterStore) -> None:
    huge = b"\xff" * (10 * 1024 * 1024)
    store.add(rejection(OVERSIZE, payload=huge))
    [got] = store.list()
    assert got.payload == huge[:MAX_PAYLOAD_BYTES] and got.payload_truncated
    assert got.payload_size == len(huge)
    assert got.payload_sha256 == hashlib.sha256(huge).hexdigest()
    assert store.path.stat().st_size < 2 * 1024 * 1024  # the main file; the WAL aside


def test_long_text_and_unserializable_extra_are_kept_not_refused(store: DeadLetterStore) -> None:
    store.add(rejection(message="m" * 1_000_000, extra={(1, 2): "tuple key", "b": b"raw"}))
    [got] = store.list()
    assert len(got.message) < 20_000 and "truncated, 1000000 chars" in got.message
    assert "unserializable" in got.extra


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (Rejection("", "m", "o", 1.0), r"rejections\[1\]\.reason must be a non-empty string"),
        (Rejection("r", "m", "o", float("nan")), r"received_time must be a finite number"),
        (Rejection("r", "m", "o", "now"), r"received_time must be a number"),  # type: ignore[arg-type]
        (Rejection("r", "m", "o", 1.0, payload="text"), r"payload must be bytes"),  # type: ignore[arg-type]
        (Rejection("r", "m", "o", 1.0, twin_id=7), r"twin_id must be a string"),  # type: ignore[arg-type]
        ("not a rejection", r"must be a Rejection"),
    ],
)
def test_bad_rejections_are_refused_clearly_and_store_nothing(
    store: DeadLetterStore, bad: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        store.add_many([rejection(), bad])  # type: ignore[list-item]
    assert store.count() == 0


def test_bad_list_arguments(store: DeadLetterStore) -> None:
    for kwargs, match in [
        ({"limit": 0}, "limit must be an integer from 1"),
        ({"limit": 10**9}, "limit must be an integer from 1"),
        ({"since": float("inf")}, "since must be a finite number"),
        ({"before_id": "5"}, "before_id must be an integer"),
        ({"twin_id": 5}, "twin_id must be a string"),
    ]:
        with pytest.raises(ValueError, match=match):
            store.list(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="older_than must be a finite number"):
        store.purge(float("nan"))


def test_threads_share_one_store_and_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    store = DeadLetterStore(path, budget=KEEP_OLD)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                store.add_many([rejection(twin_id=f"w{n}", t=float(i))] * 2)
                store.list(limit=5, twin_id=f"w{n}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 8 * 50 * 2
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with DeadLetterStore(path, budget=KEEP_OLD) as reopened:
        assert reopened.count() == 800 and len(reopened.list(twin_id="w3", limit=1000)) == 100


# -- the budget -------------------------------------------------------------------------


def _junk(twin_id: str, n: int, t: float | None = None) -> Rejection:
    """One 200 KiB junk message on a twin's telemetry topic, as MQTT ingest refuses it."""
    return Rejection(
        reason=NOT_JSON,
        message="payload is not JSON",
        origin=f"mqtt:twins/{twin_id}/telemetry",
        received_time=time.time() if t is None else t,
        payload=bytes([n % 256]) * (200 * 1024),
        twin_id=twin_id,
    )


def _on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_a_flood_from_one_source_stays_in_budget_and_spares_the_others(tmp_path: Path) -> None:
    known = {"press-1", "press-2"}
    drops: list[tuple[str, int]] = []
    budget = DeadLetterBudget(max_bytes=8 * MIB, source_max_bytes=2 * MIB)
    path = tmp_path / "dl.sqlite"
    store = DeadLetterStore(
        path, budget=budget, is_known_twin=known.__contains__, on_drop=lambda *d: drops.append(d)
    )
    quiet = store.add_many([_junk("press-2", n) for n in range(5)])
    for n in range(200):
        store.add(_junk("press-1", n))
    # Each keeps a 64 KiB head: about 31 fit in a 2 MiB quota; the newest are kept.
    flooded = store.list(limit=1000, twin_id="press-1")
    assert 25 <= len(flooded) <= 32
    assert [d.payload[0] for d in flooded[:3]] == [199, 198, 197]
    assert [d.id for d in store.list(limit=1000, twin_id="press-2")] == quiet[::-1]
    assert store.stored_bytes <= 2 * MIB + 5 * 70 * 1024
    dropped = 200 - len(flooded)
    assert store.dropped() == {DROPPED_SOURCE: dropped}
    assert sum(n for cause, n in drops if cause == DROPPED_SOURCE) == dropped
    assert _on_disk(path) < budget.max_bytes
    stored = store.stored_bytes
    store.close()
    with DeadLetterStore(path, budget=budget, is_known_twin=known.__contains__) as reopened:
        assert reopened.dropped() == {DROPPED_SOURCE: dropped}  # the counter is kept
        assert reopened.stored_bytes == stored  # and the sizes, from the rows
        assert reopened.count() == len(flooded) + len(quiet)


def test_unknown_twins_share_one_quota_so_inventing_ids_gains_nothing(tmp_path: Path) -> None:
    budget = DeadLetterBudget(max_bytes=16 * MIB, source_max_bytes=MIB)
    with DeadLetterStore(
        tmp_path / "dl.sqlite", budget=budget, is_known_twin={"press-2"}.__contains__
    ) as store:
        kept = store.add(_junk("press-2", 0))
        for n in range(100):
            store.add(_junk(f"invented-{n}", n))
        assert store.stored_bytes <= MIB + 70 * 1024  # one quota, not a hundred
        assert store.list(limit=1, twin_id="press-2")[0].id == kept
        assert store.dropped()[DROPPED_SOURCE] == 100 - (store.count() - 1)


def test_the_total_budget_drops_the_oldest_of_any_source(tmp_path: Path) -> None:
    budget = DeadLetterBudget(max_bytes=2 * MIB, source_max_bytes=2 * MIB)
    twins = {f"press-{n}" for n in range(60)}
    with DeadLetterStore(
        tmp_path / "dl.sqlite", budget=budget, is_known_twin=twins.__contains__
    ) as store:
        ids = [store.add(_junk(f"press-{n}", n)) for n in range(60)]
        assert store.stored_bytes <= 2 * MIB
        left = [d.id for d in store.list(limit=100)]
        assert left == ids[::-1][: len(left)]  # the newest, in order
        assert store.dropped() == {DROPPED_TOTAL: 60 - len(left)}


def test_old_dead_letters_age_out(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    week = DeadLetterBudget(max_age_s=7 * 24 * 3600)
    now = time.time()
    with DeadLetterStore(path, budget=KEEP_OLD) as store:
        store.add_many([rejection(t=now - 8 * 24 * 3600), rejection(t=now - 6 * 24 * 3600)])
    with DeadLetterStore(path, budget=week) as store:  # pruned on opening
        assert [d.received_time for d in store.list()] == [now - 6 * 24 * 3600]
        store.add(rejection(t=now - 30 * 24 * 3600))  # and on every add, even its own
        assert store.count() == 1
        assert store.dropped() == {DROPPED_AGE: 2}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_bytes": 1000}, r"dead_letter_max_bytes must be an integer >= 1048576"),
        ({"source_max_bytes": 8 * MIB, "max_bytes": 4 * MIB}, r"source_max_bytes .* at most"),
        ({"max_age_s": 0}, r"dead_letter_max_age_s must be a positive number"),
        ({"max_age_s": float("inf")}, r"dead_letter_max_age_s must be a positive number"),
    ],
)
def test_a_bad_budget_names_the_setting(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeadLetterBudget(**options)


def test_a_twin_id_utf8_cannot_encode_still_gets_its_quota(tmp_path: Path) -> None:
    odd = "press-\udcff"  # a topic level decoded with surrogateescape
    with DeadLetterStore(tmp_path / "dl.sqlite", is_known_twin={odd}.__contains__) as store:
        store.add(_junk(odd, 1))
        assert store.list(twin_id=odd)[0].twin_id == odd
        assert store.stored_bytes > 64 * 1024
