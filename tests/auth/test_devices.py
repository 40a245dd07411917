"""Device credentials: argon2 hashes only on disk, owner-only files, revocation, the
generated server and plant credentials, and the embedded broker taking them. Real SQLite
files, real argon2 (cheap parameters) and the real broker child."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from argon2 import PasswordHasher

from twinforge.auth.devices import (
    DEVICE,
    GENERATED_FILE_NAME,
    SERVER,
    DeviceStore,
    plant_credential,
    server_credential,
)
from twinforge.auth.errors import InvalidInput
from twinforge.connectivity.mqtt.broker import EmbeddedBroker

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> DeviceStore:
    with DeviceStore.in_data_dir(tmp_path, hasher=CHEAP) as devices:
        yield devices


def test_a_credential_verifies_and_only_its_hash_is_stored(
    tmp_path: Path, store: DeviceStore
) -> None:
    issued = store.create("press-7", ["press-7", "press-7-feeder"])
    credential = issued.credential
    assert credential.kind == DEVICE and credential.twins == {"press-7", "press-7-feeder"}
    assert store.verify(credential.id, issued.password) == credential
    assert store.verify(credential.id, issued.password + "x") is None
    assert store.verify("press-7", issued.password) is None  # the name is not the username
    assert issued.password not in repr(issued)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("devices.sqlite3*"))
    assert issued.password.encode() not in on_disk and b"$argon2id$" in on_disk
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [c.id for c in store.list()] == [credential.id]


def test_client_ids_are_bound_to_the_credential(store: DeviceStore) -> None:
    credential = store.create("cnc-3", ["cnc-3"]).credential
    assert credential.owns_client_id(credential.id)
    assert credential.owns_client_id(f"{credential.id}-spindle")
    assert not credential.owns_client_id(f"{credential.id}x")
    assert not credential.owns_client_id("cnc-3")


def test_revocation_takes_effect_at_once_and_frees_the_name(store: DeviceStore) -> None:
    issued = store.create("oven-2", ["oven-2"])
    assert store.verify(issued.credential.id, issued.password) is not None  # now cached
    assert store.revoke(issued.credential.id)
    assert not store.revoke(issued.credential.id)
    assert store.verify(issued.credential.id, issued.password) is None
    assert store.get(issued.credential.id).revoked is not None  # type: ignore[union-attr]
    assert store.create("oven-2", ["oven-2"]).credential.id != issued.credential.id


@pytest.mark.parametrize(
    ("name", "twins", "rule"),
    [
        ("", ["a"], "name: must not be empty"),
        ("x" * 101, ["a"], "name: at most 100 characters"),
        ("bad\nname", ["a"], "name: only printable characters"),
        ("ok", "press-1", "twins: expected a list of twin ids"),
        ("ok", [""], "twins: each must be a non-empty string"),
        ("ok", ["line/1"], "twins: 'line/1' holds '/'"),
        ("ok", ["#"], "twins: '#' holds '#', which cannot appear in an MQTT topic level"),
    ],
)
def test_bad_input_names_the_field_and_the_rule(
    store: DeviceStore, name: str, twins: object, rule: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^{rule.split(':')[0]}:") as error:
        store.create(name, twins)  # type: ignore[arg-type]
    assert rule in str(error.value)


def test_names_are_unique_among_live_credentials(store: DeviceStore) -> None:
    store.create("mill-1", ["mill-1"])
    with pytest.raises(InvalidInput, match="name: a live device credential named 'mill-1'"):
        store.create("mill-1", ["mill-2"])


def test_hostile_input_is_refused_cheaply(store: DeviceStore) -> None:
    issued = store.create("pump-4", ["pump-4"])
    for username, password in [
        (issued.credential.id, "x" * 10_000),
        ("x" * 10_000, issued.password),
        (None, issued.password),
        (issued.credential.id, None),
    ]:
        assert store.verify(username, password) is None  # type: ignore[arg-type]


def test_generated_credentials_are_kept_and_reused(tmp_path: Path) -> None:
    server = server_credential(tmp_path)
    plant = plant_credential(tmp_path, ["a", "b"])
    assert server_credential(tmp_path) == server
    assert plant_credential(tmp_path, ["a", "b", "c"]) == plant
    generated = tmp_path / GENERATED_FILE_NAME
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    with DeviceStore.in_data_dir(tmp_path) as store:
        assert store.verify(*server).kind == SERVER  # type: ignore[union-attr]
        assert store.verify(*plant).twins == {"a", "b", "c"}  # type: ignore[union-attr]
        store.revoke(server[0])
    renewed = server_credential(tmp_path)
    assert renewed[0] != server[0]
    assert json.loads(generated.read_text())["twinforge-server"] == list(renewed)


def test_the_embedded_broker_admits_the_generated_credentials(tmp_path: Path) -> None:
    with EmbeddedBroker(data_dir=tmp_path) as broker:
        for username, password in (server_credential(tmp_path), plant_credential(tmp_path, ["a"])):
            reasons: list[mqtt.ReasonCode] = []
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=f"{username}-check",
                protocol=mqtt.MQTTv311,
            )
            client.username_pw_set(username, password)
            client.on_connect = lambda _c, _u, _f, reason, _p, seen=reasons: seen.append(reason)
            client.connect("127.0.0.1", broker.port)
            while not reasons:
                client.loop(timeout=0.1)
            client.disconnect()
            assert not reasons[0].is_failure, reasons


def _devices(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twinforge", "devices", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TWINFORGE_DATA_DIR": str(data_dir)},
        timeout=120,
    )


def test_the_devices_command_works_beside_a_running_broker(tmp_path: Path) -> None:
    with EmbeddedBroker(data_dir=tmp_path) as broker:
        created = _devices(tmp_path, "create", "press 12", "--twin", "press-12", "--twin", "x-1")
        assert created.returncode == 0, created.stderr
        lines = dict(line.split(": ", 1) for line in created.stdout.splitlines())
        username, password = lines["username"], lines["password"]
        listed = _devices(tmp_path, "list")
        assert f"{username}  press 12  device  press-12,x-1  active" in listed.stdout
        assert password not in listed.stdout

        dropped = threading.Event()
        reasons: list[mqtt.ReasonCode] = []
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv311
        )
        client.username_pw_set(username, password)
        client.on_connect = lambda _c, _u, _f, reason, _p: reasons.append(reason)
        client.on_disconnect = lambda *_args: dropped.set()
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            assert _devices(tmp_path, "revoke", username).returncode == 0
            assert dropped.wait(5), "the running broker kept a revoked device connected"
        finally:
            client.loop_stop()
        assert not reasons[0].is_failure
        assert "revoked" in _devices(tmp_path, "list").stdout
        assert _devices(tmp_path, "revoke", username).returncode == 1
    refused = _devices(tmp_path, "create", "bad", "--twin", "a/b")
    assert refused.returncode == 2 and "twins: 'a/b' holds '/'" in refused.stderr
