"""The device credential mutations, admins only, against the real app and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from support.graphql_parts import Api, CountingStore

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.devices import DeviceStore
from twinforge.auth.tokens import TokenIssuer
from twinforge.graphql.context import ApiServices
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService
from twinforge.web.app import create_app

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
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
    keys = ApiKeyStore(tmp_path / "keys.sqlite3", hasher=CHEAP)
    devices = DeviceStore.in_data_dir(tmp_path, hasher=CHEAP)
    tokens = TokenIssuer(b"k" * 32)
    live = EventBus()
    services = ApiServices(
        twins=twins,
        authenticator=Authenticator(keys, tokens),
        keys=keys,
        tokens=tokens,
        live=live,
        devices=devices,
    )
    secrets = {role: keys.create(f"{role}-key", [role]).secret for role in ("operator", "admin")}
    yield Api(create_app(services), twins, store, keys, tokens, live, secrets), devices
    keys.close()
    devices.close()


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
