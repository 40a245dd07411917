"""Acts through the real GraphQL app, over the embedded FalkorDB holding the sample
factory, land in the audit trail with the actor's identity (``key:<key id>``), never a
display name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from support.graphql_parts import Api, CountingStore

from twinforge.audit import AuditTrail
from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.tokens import TokenIssuer
from twinforge.graphql.context import ApiServices
from twinforge.runtime.commands import AuditLog, CommandService, SafetyPolicy
from twinforge.runtime.commands.transport import CommandTransport
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.sim.factory import SAFETY_POLICY
from twinforge.sim.layout import MOLDING, sample_plant
from twinforge.web.app import create_app

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ROLES = ("operator", "engineer", "admin")
VALVE = {
    "@context": "dtmi:dtdl:context;3",
    "@id": "dtmi:com:example:AuditValve;1",
    "@type": "Interface",
    "contents": [{"@type": "Property", "name": "opening", "schema": "double"}],
}


class NoAlarms:
    def active_alarms(self, twin_id: str) -> list[Any]:
        return []


def no_gateway(twin_id: str) -> CommandTransport:
    # This plant has no device online: an approved command fails to send, and says so.
    raise LookupError(f"no gateway for {twin_id}")


@dataclass
class Rig:
    api: Api
    trail: AuditTrail
    #: The audit identity of each role's key.
    ids: dict[str, str]
    molding: str


@pytest.fixture
def rig(embedded_store: FalkorDBStore, tmp_path: Path) -> Iterator[Rig]:
    embedded_store.clear()
    store = CountingStore(embedded_store)
    twins = TwinService(store)
    lines = sample_plant(equipment=24).to_import_ndjson().splitlines()
    assert not import_ndjson(twins, lines).errors
    molding = next(
        doc["$dtId"]
        for doc in map(json.loads, lines)
        if doc.get("$metadata", {}).get("$model") == MOLDING
    )
    keys = ApiKeyStore(tmp_path / "keys.sqlite3", hasher=CHEAP_HASHER)
    tokens = TokenIssuer(b"k" * 32)
    trail = AuditTrail(tmp_path / "audit.sqlite3")
    commands = CommandService(
        lambda twin: twins.models.interface(twins.get_twin(twin)["$metadata"]["$model"]),
        no_gateway,
        SafetyPolicy.from_file(SAFETY_POLICY),
        AuditLog(trail),
        NoAlarms(),
    )
    services = ApiServices(
        twins=twins,
        authenticator=Authenticator(keys, tokens),
        keys=keys,
        tokens=tokens,
        live=EventBus(),
        commands=commands,
        audit=trail,
    )
    issued = {role: keys.create(f"{role}-key", [role]) for role in ROLES}
    secrets = {role: key.secret for role, key in issued.items()}
    api = Api(create_app(services), twins, store, keys, tokens, services.live, secrets)
    yield Rig(api, trail, {role: f"key:{key.key_id}" for role, key in issued.items()}, molding)
    trail.close()
    keys.close()


def data(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer
    return answer["data"]


def test_acts_through_the_api_are_recorded_with_the_actors_id(rig: Rig) -> None:
    api, ids = rig.api, rig.ids
    created = data(
        api.post('mutation { createApiKey(name: "robot", roles: ["viewer"]) { key { id } } }')
    )["createApiKey"]["key"]["id"]
    data(
        api.post(
            "mutation($m: [JSON!]!) { uploadModels(models: $m) { id } }",
            {"m": [VALVE]},
            role="engineer",
        )
    )
    data(
        api.post(
            'mutation($d: JSON!) { createTwin(id: "audit-valve", document: $d) { etag } }',
            {"d": {"$metadata": {"$model": VALVE["@id"]}, "opening": 0.5}},
            role="engineer",
        )
    )
    pending = data(
        api.post(
            'mutation($t: String!) { invokeCommand(twinId: $t, name: "setBarrelTemperature", '
            "request: 300) { id status } }",
            {"t": rig.molding},
            role="operator",
        )
    )["invokeCommand"]
    assert pending["status"] == "PENDING_APPROVAL"
    approved = data(
        api.post(
            f'mutation {{ approveCommand(id: "{pending["id"]}") {{ status reason }} }}',
            role="engineer",
        )
    )["approveCommand"]
    assert approved["status"] == "FAILED"
    assert approved["reason"].startswith("no transport to the twin: ")

    records = [r.as_json() for r in rig.trail.records()]
    acts = [(r["actor"], r["roles"], r["action"], r["target"], r["outcome"]) for r in records]
    assert acts == [
        (ids["admin"], ["admin"], "key.create", f"key:{created}", "ok"),
        (ids["engineer"], ["engineer"], "model.upload", "models", "ok"),
        (ids["engineer"], ["engineer"], "twin.create", "twin:audit-valve", "ok"),
        (ids["operator"], ["operator"], "command.invoke", f"twin:{rig.molding}", "pendingApproval"),
        (ids["engineer"], ["engineer"], "command.approve", f"twin:{rig.molding}", "failed"),
    ]
    assert records[0]["details"] == {"expires_in": None, "name": "robot", "roles": ["viewer"]}
    assert records[1]["details"] == {"ids": [VALVE["@id"]]}
    approval = records[4]["details"]
    assert (approval["user"], approval["approver"]) == (ids["operator"], ids["engineer"])
    assert rig.trail.verify() == (5, None)
    # The command audit query still reads its steps out of the one trail.
    steps = data(
        api.post(
            f'{{ auditLog(commandId: "{pending["id"]}") '
            "{ edges { node { action user status } } } }"
        )
    )["auditLog"]["edges"]
    assert [e["node"] for e in steps] == [
        {"action": "approve", "user": ids["operator"], "status": "failed"},
        {"action": "invoke", "user": ids["operator"], "status": "pendingApproval"},
    ]
    # The whole trail reads through the API too, filtered by actor, with its hashes.
    mine = data(
        api.post(
            "query($a: String) { auditTrail(actor: $a, first: 2) "
            "{ edges { node { seq action hash prevHash } } pageInfo { hasNextPage } } }",
            {"a": ids["engineer"]},
        )
    )["auditTrail"]
    assert [e["node"]["action"] for e in mine["edges"]] == ["command.approve", "twin.create"]
    assert mine["pageInfo"]["hasNextPage"] is True
    assert mine["edges"][0]["node"]["hash"] == records[4]["hash"]
    assert mine["edges"][0]["node"]["prevHash"] == records[3]["hash"]
    denied = api.post("{ auditTrail { edges { node { seq } } } }", role="engineer")
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
