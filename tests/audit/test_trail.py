"""The audit trail on disk: a chain that verifies, tampering that `twinforge audit verify`
(a real CLI subprocess) names, owner-only files, appends from two processes at once, and
records forwarded to a real UDP syslog listener."""

from __future__ import annotations

import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from twinforge.audit import GENESIS, AuditTrail, LocalActor
from twinforge.audit.forward import FileForwarder, SyslogForwarder

ALICE = LocalActor("key:alice", frozenset({"admin"}))


def verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twinforge", "audit", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TWINFORGE_DATA_DIR": str(data_dir)},
    )


def filled(data_dir: Path, count: int = 5) -> Path:
    with AuditTrail(data_dir / "audit.sqlite3") as trail:
        for n in range(count):
            trail.record(ALICE, "twin.create", f"twin:t-{n}", details={"n": n})
    return data_dir / "audit.sqlite3"


def tamper(path: Path, *statements: str) -> None:
    """What the file's owner can do: drop the triggers, then rewrite rows."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER audit_log_no_update")
    db.execute("DROP TRIGGER audit_log_no_delete")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_a_chain_of_records_verifies(tmp_path: Path) -> None:
    path = filled(tmp_path)
    with AuditTrail(path) as trail:
        records = list(trail.records())
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert records[0].prev_hash == GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
        assert trail.verify() == (5, None)
        assert records[2].as_json()["details"] == {"n": 2}
    result = verify(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 records, chain intact" in result.stdout
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "twinforge",
            "audit",
            "show",
            "--data-dir",
            str(tmp_path),
            "--limit",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in shown] == [4, 5]
    assert json.loads(shown[1])["hash"] == records[4].hash


@pytest.mark.parametrize(
    ("statements", "broken", "why"),
    [
        (["UPDATE audit_log SET actor = 'key:mallory' WHERE seq = 3"], 3, "a field was changed"),
        (["UPDATE audit_log SET details = '{\"n\":9}' WHERE seq = 2"], 2, "a field was changed"),
        (["UPDATE audit_log SET roles = '[\"viewer\"]' WHERE seq = 4"], 4, "a field was changed"),
        (["UPDATE audit_log SET time = time + 1 WHERE seq = 5"], 5, "a field was changed"),
        (["UPDATE audit_log SET outcome = 'denied' WHERE seq = 1"], 1, "a field was changed"),
        (["DELETE FROM audit_log WHERE seq = 3"], 4, "missing"),
        # Deleted and the rest renumbered: the hashes no longer link up.
        (
            [
                "DELETE FROM audit_log WHERE seq = 2",
                "UPDATE audit_log SET seq = seq - 1 WHERE seq > 2",
            ],
            2,
            "prev_hash does not match",
        ),
        # Two records swapped.
        (
            [
                "UPDATE audit_log SET seq = 100 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 100",
            ],
            2,
            "prev_hash does not match",
        ),
    ],
)
def test_tampering_is_named_by_audit_verify(
    tmp_path: Path, statements: list[str], broken: int, why: str
) -> None:
    tamper(filled(tmp_path), *statements)
    result = verify(tmp_path)
    assert result.returncode == 1
    assert f"record {broken} is broken" in result.stderr
    assert why in result.stderr


def test_an_inserted_record_is_named(tmp_path: Path) -> None:
    path = filled(tmp_path)
    db = sqlite3.connect(path)
    # A forged record squeezed in after record 2, with a correct-looking hash of its own.
    row = db.execute("SELECT * FROM audit_log WHERE seq = 2").fetchone()
    tamper(path, "UPDATE audit_log SET seq = seq + 10 WHERE seq > 2")
    db.execute(
        "INSERT INTO audit_log VALUES (3, ?, 'key:mallory', '[]', 'key.create', 'key:x', "
        "'ok', '{}', ?, ?)",
        (row[1], row[9], "f" * 64),
    )
    db.execute("UPDATE audit_log SET seq = seq - 9 WHERE seq > 12")
    db.commit()
    db.close()
    result = verify(tmp_path)
    assert result.returncode == 1
    assert "record 3 is broken: hash does not match" in result.stderr


def test_a_missing_trail_fails_verification(tmp_path: Path) -> None:
    result = verify(tmp_path)
    assert result.returncode == 1
    assert f"no audit trail at {tmp_path / 'audit.sqlite3'}" in result.stderr
    assert not (tmp_path / "audit.sqlite3").exists()


def test_files_are_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    path = filled(data_dir, 1)
    assert path.stat().st_mode & 0o777 == 0o600
    assert data_dir.stat().st_mode & 0o777 == 0o700
    # An older file someone left world-readable is narrowed on open.
    os.chmod(path, 0o644)
    AuditTrail(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


APPENDER = """
import sys
from twinforge.audit import AuditTrail, LocalActor
actor = LocalActor(sys.argv[2])
with AuditTrail(sys.argv[1]) as trail:
    for n in range(int(sys.argv[3])):
        trail.record(actor, "key.create", f"key:{sys.argv[2]}-{n}")
"""


def test_two_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    AuditTrail(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(path), name, "150"])
        for name in ("cli", "server")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    with AuditTrail(path) as trail:
        assert trail.verify() == (300, None)
        actors = [r.actor for r in trail.records()]
    # Every append of both kept, none lost to a fork or a lock timeout.
    assert actors.count("cli") == actors.count("server") == 150
    assert verify(tmp_path).returncode == 0


def test_records_are_forwarded_to_syslog_as_json_lines_with_hashes(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    with AuditTrail(
        tmp_path / "audit.sqlite3", [SyslogForwarder(f"udp://127.0.0.1:{port}")]
    ) as trail:
        written = [trail.record(ALICE, "key.revoke", f"key:{n}", "ok", {"n": n}) for n in range(3)]
    received = [listener.recv(65536).decode() for _ in written]
    listener.close()
    for record, message in zip(written, received, strict=True):
        # <facility auth (4) * 8 + info (6)>, our ident, then the record's JSON line.
        assert message.startswith("<38>twinforge-audit: ")
        line = json.loads(message.split(": ", 1)[1].rstrip("\x00"))
        assert line["hash"] == record.hash and line["prev_hash"] == record.prev_hash
        assert (line["actor"], line["action"], line["details"]) == (
            "key:alice",
            "key.revoke",
            record.as_json()["details"],
        )


def test_records_are_appended_to_a_forward_file(tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_text('{"earlier":"line"}\n')
    with AuditTrail(tmp_path / "audit.sqlite3", [FileForwarder(copy)]) as trail:
        written = [trail.record(ALICE, "device.create", f"device:d-{n}") for n in range(2)]
    lines = copy.read_text().splitlines()
    assert lines[0] == '{"earlier":"line"}'
    assert [json.loads(line)["hash"] for line in lines[1:]] == [r.hash for r in written]
    with pytest.raises(ValueError, match="audit_forward_file: cannot open"):
        FileForwarder(tmp_path / "missing" / "copy.jsonl")


def test_a_bad_syslog_target_names_the_setting() -> None:
    with pytest.raises(ValueError, match="audit_syslog: must be udp://host:port"):
        SyslogForwarder("http://logs:514")
