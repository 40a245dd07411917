"""Asset hosts without Ray: state, write-ahead log, checkpoints, alarms and placement."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from twinforge.actors.alarms import AlarmChange, load_alarm_rules
from twinforge.actors.asset_host import CAPTURE_PER_BATCH, AssetHost, HostConfig, IngestResult
from twinforge.actors.directory import AssetDirectory
from twinforge.actors.ring_buffer import RingBuffer
from twinforge.actors.write_ahead_log import WriteAheadLog

PUMP = "dtmi:com:twinforge:factory:Pump;1"
EQUIPMENT = "dtmi:com:twinforge:factory:Equipment;1"


def entry(twin: str, ts: float, **values: object) -> tuple:
    return (twin, "telemetry", dict(values), ts, ts + 0.01)


def test_ring_buffer_keeps_the_newest_samples_in_order() -> None:
    buffer = RingBuffer(4)
    for i in range(10):
        buffer.append(float(i), i * 1.5)
    times, values = buffer.last()
    assert times.tolist() == [6.0, 7.0, 8.0, 9.0]
    assert values.tolist() == [9.0, 10.5, 12.0, 13.5]
    assert buffer.last(2)[1].tolist() == [12.0, 13.5]
    state = buffer.state()
    buffer.append(10.0, 15.0)  # the state is a copy: later samples are not in it
    restored = RingBuffer.from_state(state)
    assert restored.last()[1].tolist() == values.tolist()
    restored.append(10.0, 15.0)
    assert restored.last()[0].tolist() == [7.0, 8.0, 9.0, 10.0]
    # A checkpoint written before states kept the arrays as they lie: oldest first.
    legacy = RingBuffer.from_state({"capacity": 4, "times": times, "values": values})
    assert legacy.last()[1].tolist() == values.tolist()


def test_ring_buffer_takes_values_that_are_not_numbers() -> None:
    buffer = RingBuffer(3)
    buffer.append(1.0, 2.5)
    buffer.append(2.0, {"x": 1})
    buffer.append(3.0, "idle")
    assert buffer.last()[1].tolist() == [2.5, {"x": 1}, "idle"]
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_host_ingests_and_answers(tmp_path: Path) -> None:
    host = AssetHost(0, HostConfig(tmp_path, capacity=8), {"p1": PUMP, "p2": PUMP})
    assert host.ingest([entry("p1", 100.0, flowRate=1.0), entry("p2", 100.0, pressure=2.0)]) == (
        IngestResult(2)
    )
    result = host.ingest([entry("p1", 101.0, flowRate=2.0), entry("gone", 1.0, x=1)])
    assert (result.applied, result.skipped) == (1, (1,))  # "gone" is not hosted here
    snapshot = host.snapshot("p1")
    assert snapshot is not None
    assert snapshot["messages"] == 2
    assert snapshot["last"]["flowRate"]["value"] == 2.0
    assert host.series("p1", "flowRate") == {"times": [100.0, 101.0], "values": [1.0, 2.0]}
    assert host.series("p1", "nope") == {"times": [], "values": []}
    assert host.snapshot("unknown") is None
    assert "p1" in repr(host) and repr(host).startswith("AssetHost-0")
    stats = host.stats()
    assert stats["assets"] == 2 and stats["messages"] == 3 and stats["rss_mb"] > 10
    host.close()


def test_late_value_does_not_replace_the_last_one(tmp_path: Path) -> None:
    host = AssetHost(0, HostConfig(tmp_path), {"p1": PUMP})
    host.ingest([entry("p1", 200.0, flowRate=5.0), entry("p1", 150.0, flowRate=1.0)])
    snapshot = host.snapshot("p1")
    assert snapshot is not None and snapshot["last"]["flowRate"]["value"] == 5.0
    assert host.series("p1", "flowRate")["values"] == [5.0, 1.0]
    host.close()


def test_a_killed_host_recovers_everything_it_acknowledged(tmp_path: Path) -> None:
    config = HostConfig(
        tmp_path, capacity=1000, checkpoint_after_batches=7, checkpoint_every_s=3600
    )
    host = AssetHost(3, config, {"p1": PUMP, "p2": PUMP})
    for i in range(20):  # two checkpoints on the way, then a few batches after the last
        host.ingest(
            [entry("p1", 100.0 + i, flowRate=float(i)), entry("p2", 100.0 + i, pressure=-i)]
        )
    before = {t: host.snapshot(t) for t in ("p1", "p2")}
    host.wait_for_checkpoint()  # the last one is saved on a thread of its own
    log = WriteAheadLog(tmp_path / "actors" / "host-0003.sqlite3")
    saved = log.checkpoint_seq()  # batch 14, or a little later if the first took long
    log.close()
    assert saved is not None and 14 <= saved < 20
    # No close(): the process "dies" here; a new host on the same files takes over.
    again = AssetHost(3, config)
    assert again.restored == 2  # both assets from the checkpoint, then the log after it:
    assert again.replayed == 2 * (20 - saved)  # the batches of 2 after the checkpoint
    for twin in ("p1", "p2"):
        assert again.snapshot(twin) == before[twin]
    assert again.series("p1", "flowRate")["values"] == [float(i) for i in range(20)]
    assert sorted(again.assets) == ["p1", "p2"]
    again.close()
    third = AssetHost(3, config)  # after a clean close: all from the checkpoint
    assert third.replayed == 0
    assert third.snapshot("p2") == before["p2"]
    third.close()


def test_removed_assets_stay_removed_after_a_restart(tmp_path: Path) -> None:
    config = HostConfig(tmp_path)
    host = AssetHost(0, config, {"p1": PUMP, "p2": PUMP})
    host.remove_assets(["p1"])
    host.close()
    assert sorted(AssetHost(0, config).assets) == ["p2"]


def test_history_gets_at_most_one_point_per_interval(tmp_path: Path) -> None:
    from twinforge.runtime.history import open_history_store

    host = AssetHost(0, HostConfig(tmp_path, history_interval_s=1.0), {"p1": PUMP})
    host.ingest([entry("p1", 1000.0 + i * 0.25, flowRate=float(i)) for i in range(12)])
    # A field seen for the first time is due at once, whatever the others' interval.
    host.ingest([entry("p1", 1002.5, flowRate=13.0, pressure=2.0)])
    host.checkpoint()  # flushes history before trimming the log
    store = open_history_store(None, tmp_path)
    points = store.query("p1", "flowRate")
    assert [p.value for p in points] == [0.0, 4.0, 8.0]
    assert [p.value for p in store.query("p1", "pressure")] == [2.0]
    store.close()
    host.close()


def test_alarm_rules_raise_and_clear(tmp_path: Path) -> None:
    rules = load_alarm_rules(
        [{"name": "hot", "model": EQUIPMENT, "field": "powerKw", "above": 50, "severity": 4}]
    )
    config = HostConfig(tmp_path, alarm_rules=tuple(rules), lineage={PUMP: (PUMP, EQUIPMENT)})
    host = AssetHost(0, config, {"p1": PUMP})
    host.ingest([entry("p1", 10.0, powerKw=20.0)])
    assert host.active_alarms("p1") == []
    host.ingest([entry("p1", 11.0, powerKw=75.0)])
    (alarm,) = host.active_alarms("p1")
    assert (alarm.name, alarm.severity, alarm.since, alarm.value) == ("hot", 4, 11.0, 75.0)
    host.ingest([entry("p1", 12.0, powerKw=80.0)])  # still the same alarm, same start
    assert host.active_alarms("p1")[0].since == 11.0
    host.ingest([entry("p1", 13.0, powerKw=10.0)])
    assert host.active_alarms("p1") == []
    host.close()


def test_ingest_reports_alarm_changes_once(tmp_path: Path) -> None:
    rules = load_alarm_rules(
        [
            {"name": "hot", "model": EQUIPMENT, "field": "powerKw", "above": 50, "severity": 4},
            {"name": "dry", "model": PUMP, "field": "flowRate", "below": 1},
        ]
    )
    config = HostConfig(tmp_path, alarm_rules=tuple(rules), lineage={PUMP: (PUMP, EQUIPMENT)})
    host = AssetHost(0, config, {"p1": PUMP, "p2": PUMP})
    batch = [
        entry("p1", 10.0, powerKw=20.0),
        entry("p1", 11.0, powerKw=75.0),  # raises hot
        entry("p2", 11.0, flowRate=0.5),  # raises dry on the other twin
        entry("p1", 12.0, powerKw=80.0),  # still hot: no change
        entry("p1", 13.0, powerKw=10.0),  # clears hot
        entry("p1", 14.0, powerKw=90.0),  # hot again
        entry("gone", 14.0, powerKw=90.0),  # not hosted
    ]
    result = host.ingest(batch)
    assert result == IngestResult(
        6,
        (
            AlarmChange("p1", True, "hot", 4, 11.0, "powerKw", 75.0, 11.0),
            AlarmChange("p2", True, "dry", 2, 11.0, "flowRate", 0.5, 11.0),
            AlarmChange("p1", False, "hot", 4, 11.0, "powerKw", 10.0, 13.0),
            AlarmChange("p1", True, "hot", 4, 14.0, "powerKw", 90.0, 14.0),
        ),
        (6,),  # "gone"
    )
    assert result.alarms[2].event_data() == {
        "name": "hot",
        "severity": 4,
        "since": 11.0,
        "field": "powerKw",
        "value": 10.0,
        "time": 13.0,
    }
    assert host.ingest([entry("p2", 15.0, pressure=3.0)]) == IngestResult(1)  # no rule field

    # A crash: the restarted host replays its log silently (the changes were reported
    # when the batch was ingested), and a retried batch is a redelivery: no changes again.
    again = AssetHost(0, config)
    assert again.replayed == 7
    assert [a.since for a in again.active_alarms("p1")] == [14.0]
    assert again.ingest(batch) == IngestResult(6, (), tuple(range(7)))
    again.close()


def test_batched_queries_answer_like_the_single_ones(tmp_path: Path) -> None:
    rules = load_alarm_rules([{"name": "hot", "model": PUMP, "field": "powerKw", "above": 50}])
    host = AssetHost(0, HostConfig(tmp_path, alarm_rules=tuple(rules)), {"p1": PUMP, "p2": PUMP})
    host.ingest([entry("p1", 1.0, powerKw=70.0), entry("p2", 1.0, powerKw=5.0, flowRate=2.0)])
    host.ingest([entry("p2", 2.0, flowRate=3.0)])

    assert host.snapshots(["p2", "gone", "p1"]) == {
        "p1": host.snapshot("p1"),
        "p2": host.snapshot("p2"),
    }
    assert host.alarms_of(["p1", "p2", "gone"]) == {
        "p1": host.active_alarms("p1"),
        "p2": [],
    }
    requests = [("p2", "flowRate", None), ("p1", "powerKw", 1), ("gone", "x", None)]
    assert host.series_many(requests) == [host.series(*request) for request in requests]
    assert host.series_many(requests)[0] == {"times": [1.0, 2.0], "values": [2.0, 3.0]}
    host.close()


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"name": "x", "model": PUMP, "field": "f"}, "above"),
        ({"name": "x", "model": PUMP, "field": "f", "above": 1, "severity": 9}, "severity"),
        ({"name": "", "model": PUMP, "field": "f", "above": 1}, "name"),
        ({"name": "x", "model": PUMP, "field": "f", "above": "hot"}, "above"),
        ({"name": "x", "model": PUMP, "field": "f", "above": 1, "extra": 1}, "extra"),
    ],
)
def test_bad_alarm_rules_name_the_field(rule: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        load_alarm_rules([rule])


def test_write_ahead_log_gives_back_what_it_was_given(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path / "wal.sqlite3")
    logged = [
        ("p1", "telemetry", {"x": 1.5, "on": True, "n": 3, "pos": {"lat": 1.0}}, 1.0, 2.0),
        ("p2", "property", {"mode": "auto", "none": None, "tags": ["a"]}, 3.0, 4.0),
    ]
    log.append(logged)
    log.close()
    with sqlite3.connect(tmp_path / "wal.sqlite3") as db:
        # Logged as JSON before 2026-11, and pickled with the kinds "t" and "p" after.
        db.execute("INSERT INTO batches (entries) VALUES (?)", ('[["p3","t",{"y":2},5,6]]',))
        old = pickle.dumps([("p4", "p", {"mode": "off"}, 7.0, 8.0)], pickle.HIGHEST_PROTOCOL)
        db.execute("INSERT INTO batches (entries) VALUES (?)", (old,))
    again = WriteAheadLog(tmp_path / "wal.sqlite3")
    _, batches = again.recover()
    assert [batch for _, batch in batches] == [
        logged,
        [("p3", "telemetry", {"y": 2}, 5, 6)],
        [("p4", "property", {"mode": "off"}, 7.0, 8.0)],
    ]
    with pytest.raises(ValueError, match="synchronous"):
        WriteAheadLog(tmp_path / "other.sqlite3", synchronous="OFF")
    again.close()


def test_a_checkpoint_copied_over_several_batches_restores_each_asset_once(
    tmp_path: Path,
) -> None:
    # More assets than one ingest call copies: the checkpoint's states are copied over
    # three batches, so assets copied later hold more batches; replay must skip those.
    names = [f"p{i:03d}" for i in range(2 * CAPTURE_PER_BATCH + 10)]
    config = HostConfig(tmp_path, checkpoint_after_batches=4, checkpoint_every_s=3600)
    host = AssetHost(0, config, dict.fromkeys(names, PUMP))
    for i in range(7):  # a checkpoint starts at batch 4 and is copied in batches 4-6
        host.ingest([entry(name, 100.0 + i, flowRate=float(i)) for name in names])
    host.wait_for_checkpoint()
    before = {name: host.snapshot(name) for name in names}
    again = AssetHost(0, config)  # the host "died" without closing
    assert {name: again.snapshot(name) for name in names} == before  # no duplicates
    # The log keeps batches 5-7; each asset replays those after the one it was copied in.
    assert again.replayed == CAPTURE_PER_BATCH * 3 + CAPTURE_PER_BATCH * 2 + 10 * 1
    for name in (names[0], names[-1]):
        assert again.series(name, "flowRate")["values"] == [float(i) for i in range(7)]
    again.close()


def test_a_state_saved_but_not_yet_trimmed_is_not_replayed_twice(tmp_path: Path) -> None:
    # A host that dies between saving a checkpoint's state and trimming the log.
    log = WriteAheadLog(tmp_path / "wal.sqlite3")
    first = log.append([entry("p1", 1.0, x=1.0)])
    log.append([entry("p1", 2.0, x=2.0)])
    log.save_state({"p1": {"x": 1.0}}, first)
    log.close()
    again = WriteAheadLog(tmp_path / "wal.sqlite3")
    state, batches = again.recover()
    assert state == {"p1": {"x": 1.0}}
    assert [(seq, batch[0][3]) for seq, batch in batches] == [(first + 1, 2.0)]
    assert again.pending() == 2 and again.checkpoint_seq() == first
    assert again.append([entry("p1", 3.0, x=3.0)]) == first + 2  # numbers never reused
    again.close()


def test_a_checkpoint_kept_in_the_log_by_an_older_version_is_still_read(tmp_path: Path) -> None:
    import pickle

    log = WriteAheadLog(tmp_path / "wal.sqlite3")
    seq = log.append([entry("p1", 1.0, x=1.0)])
    log.append([entry("p1", 2.0, x=2.0)])
    log.close()
    with sqlite3.connect(tmp_path / "wal.sqlite3") as db:
        db.execute("INSERT INTO checkpoint VALUES (1, ?, ?)", (seq, pickle.dumps({"p1": 1})))
    again = WriteAheadLog(tmp_path / "wal.sqlite3")
    state, batches = again.recover()
    assert state == {"p1": 1} and [batch[0][3] for _, batch in batches] == [2.0]
    again.close()


def test_a_failed_checkpoint_keeps_the_log_and_ingest_goes_on(tmp_path: Path) -> None:
    config = HostConfig(tmp_path, checkpoint_after_batches=3, checkpoint_every_s=3600)
    host = AssetHost(0, config, {"p1": PUMP})
    state_path = tmp_path / "actors" / "host-0000.state"
    state_path.mkdir()  # the state file cannot be renamed into place
    for i in range(10):  # checkpoints start and fail on the way
        assert host.ingest([entry("p1", 100.0 + i, flowRate=float(i))]).applied == 1
    with pytest.raises(OSError):
        host.checkpoint()
    assert host.stats()["wal_pending"] == 10  # nothing trimmed
    state_path.rmdir()
    host.ingest([entry("p1", 110.0, flowRate=10.0)])
    host.checkpoint()
    assert host.stats()["wal_pending"] == 0
    host.ingest([entry("p1", 111.0, flowRate=11.0)])
    again = AssetHost(0, config)  # the checkpoint and one batch after it
    assert again.replayed == 1
    assert again.series("p1", "flowRate")["values"] == [float(i) for i in range(12)]
    again.close()
    host.close()


def test_directory_fills_hosts_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "directory.sqlite3"
    directory = AssetDirectory(path, assets_per_host=2)
    placed = directory.place([f"t{i}" for i in range(5)])
    assert placed == {0: ["t0", "t1"], 1: ["t2", "t3"], 2: ["t4"]}
    assert directory.place(["t0", "t5"]) == {2: ["t5"]}
    assert directory.remove(["t1", "nope"]) == {0: ["t1"]}
    assert directory.place(["t6"]) == {0: ["t6"]}  # the freed place is reused
    directory.close()
    again = AssetDirectory(path, assets_per_host=2)
    assert again.hosts() == {0: 2, 1: 2, 2: 2}
    assert again.host_of("t6") == 0 and again.host_of("t1") is None
    assert again.twins_on(1) == ["t2", "t3"]
    with pytest.raises(ValueError, match="assets_per_host"):
        AssetDirectory(tmp_path / "x.sqlite3", 0)


def test_ring_buffer_arrays_are_numpy() -> None:
    buffer = RingBuffer(2)
    buffer.append(1.0, True)
    assert isinstance(buffer.last()[1], np.ndarray)


def test_redelivered_messages_are_applied_once(tmp_path: Path) -> None:
    config = HostConfig(tmp_path)
    host = AssetHost(0, config, {"p1": PUMP})
    batch = [entry("p1", 100.0 + i, flowRate=float(i)) for i in range(5)]
    assert host.ingest(batch).skipped == ()
    # The broker redelivers what it saw unacknowledged: skipped, so not published again.
    assert host.ingest([*batch[1:], entry("p1", 105.0, flowRate=5.0)]).skipped == (0, 1, 2, 3)
    # Same time, other fields: a new message.
    assert host.ingest([entry("p1", 102.0, pressure=1.0)]).skipped == ()
    snapshot = host.snapshot("p1")
    assert snapshot is not None and (snapshot["messages"], snapshot["duplicates"]) == (7, 4)
    assert host.series("p1", "flowRate")["values"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    host.checkpoint()
    host.ingest(batch[4:])
    again = AssetHost(0, config)  # the window survives checkpoint and replay
    again.ingest(batch[3:])
    assert again.series("p1", "flowRate")["values"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    again.close()
