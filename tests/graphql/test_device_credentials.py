"""The device credential mutations, admins only, against the real app and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.graphql_parts import CHEAP_HASHER, Api, CountingStore, serving

from twinforge.auth.devices import DeviceStore
from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService

CREATE = """mutation($name: String!, $twins: [String!]!) {
  createDeviceCredential(name: $name, twins: $twins) {
    credential { id name kind twins revoked } username password
  }
}"""
REVOKE = "mutation($id: String!) { revokeDeviceCredential(id: $id) }"


@pytest.fixture
def api(embedded_store: FalkorDBStore, tmp_path: Path) -> Iterator[tuple[Api, DeviceStore]]:
    embedded_store.clear()
    store = CountingStore(embedded_store)
    twins = TwinService(store)
    with (
        DeviceStore.in_data_dir(tmp_path, hasher=CHEAP_HASHER) as devices,
        serving(
            twins, store, tmp_path / "keys.sqlite3", roles=("operator", "admin"), devices=devices
        ) as api,
    ):
        yield api, devices


def test_admins_create_and_revoke_device_credentials(api: tuple[Api, DeviceStore]) -> None:
    client, devices = api
    answer = client.post(CREATE, {"name": "press-3", "twins": ["press-3", "press-3b"]})
    issued = answer["data"]["createDeviceCredential"]
    credential = issued["credential"]
    assert credential["kind"] == "device" and credential["twins"] == ["press-3", "press-3b"]
    assert issued["username"] == credential["id"] and not credential["revoked"]
    assert devices.verify(issued["username"], issued["password"]) is not None
    assert client.post(REVOKE, {"id": credential["id"]})["data"] == {"revokeDeviceCredential": True}
    assert devices.verify(issued["username"], issued["password"]) is None
    assert client.post(REVOKE, {"id": credential["id"]})["data"] == {
        "revokeDeviceCredential": False
    }


def test_only_admins_and_only_good_input(api: tuple[Api, DeviceStore]) -> None:
    client, devices = api
    for query, variables in ((CREATE, {"name": "x", "twins": ["x"]}), (REVOKE, {"id": "x"})):
        denied = client.post(query, variables, role="operator")
        assert [e["extensions"]["code"] for e in denied["errors"]] == ["FORBIDDEN"]
    bad = client.post(CREATE, {"name": "x", "twins": ["line/1"]})
    assert [e["extensions"]["code"] for e in bad["errors"]] == ["BAD_USER_INPUT"]
    assert "twins: 'line/1' holds '/'" in bad["errors"][0]["message"]
    assert devices.list() == []
