"""The GraphQL API in process: generated types, queries, pagination, batching, mutations,
schema rebuilds, roles, hostile input and subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient
from strawberry.http.exceptions import WebSocketDisconnected
from support.graphql_parts import Api

from twinforge.graphql.subscription import BUFFER
from twinforge.runtime.events import EventKind
from twinforge.web.app import _TransportWS

PUMP = "dtmi:com:twinforge:factory:Pump;1"
CNC = "dtmi:com:twinforge:factory:CncMachine;1"


def data(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer
    return answer["data"]


def error_codes(answer: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in answer.get("errors", [])]


def a_twin_of(api: Api, model: str) -> dict[str, Any]:
    query = "query($m: String!) { twins(model: $m, first: 1) { nodes { dtId etag } } }"
    return data(api.post(query, {"m": model}))["twins"]["nodes"][0]


# -- generated types ------------------------------------------------------------------


def test_each_interface_becomes_a_typed_graphql_type(api: Api) -> None:
    answer = data(
        api.post(
            '{ __type(name: "Pump") { interfaces { name } '
            "fields { name type { name kind ofType { name } } } } }"
        )
    )["__type"]
    assert [i["name"] for i in answer["interfaces"]] == ["Twin"]
    fields = {f["name"]: f["type"] for f in answer["fields"]}
    assert fields["flowRate"]["name"] == "FloatPoint"  # telemetry: last value
    assert fields["flowRateHistory"]["kind"] == "NON_NULL"  # telemetry: series
    assert fields["serialNumber"]["name"] == "String"  # inherited from Equipment
    assert fields["feeds"]["ofType"]["name"] == "RelationshipConnection"
    state = fields["state"]["name"]
    values = data(
        api.post("query($n: String!) { __type(name: $n) { enumValues { name } } }", {"n": state})
    )
    assert {v["name"] for v in values["__type"]["enumValues"]} == {"running", "stopped", "fault"}


def test_twin_by_id_with_typed_fields(api: Api) -> None:
    pump = a_twin_of(api, PUMP)
    api.twins.patch_twin(pump["dtId"], [{"op": "add", "path": "/state", "value": "running"}])
    answer = data(
        api.post(
            "query($id: String!) { twin(id: $id) { __typename dtId modelId "
            "model { id graphqlType } ... on Pump { state serialNumber flowRate { value } } } }",
            {"id": pump["dtId"]},
        )
    )["twin"]
    assert answer["__typename"] == "Pump" and answer["modelId"] == PUMP
    assert answer["model"] == {"id": PUMP, "graphqlType": "Pump"}
    assert answer["state"] == "running" and answer["serialNumber"]
    assert answer["flowRate"] is None  # no live assets in this process
    assert data(api.post('{ twin(id: "no-such-twin") { dtId } }'))["twin"] is None


def test_twins_page_through_every_twin_once(api: Api) -> None:
    seen: list[str] = []
    after = None
    while True:
        page = data(
            api.post(
                "query($after: String) { twins(first: 7, after: $after) "
                "{ edges { cursor node { dtId } } pageInfo { hasNextPage endCursor } } }",
                {"after": after},
            )
        )["twins"]
        seen += [edge["node"]["dtId"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    total = api.twins.cypher("MATCH (t:Twin) RETURN count(t) AS n")[0]["n"]
    assert len(seen) == len(set(seen)) == total
    assert seen == sorted(seen)
    bad = api.post('{ twins(after: "not-a-cursor") { nodes { dtId } } }')
    assert error_codes(bad) == ["BAD_USER_INPUT"] and "after" in bad["errors"][0]["message"]


def test_filters_and_traversal(api: Api) -> None:
    pumps = data(
        api.post(
            '{ twins(model: "dtmi:com:twinforge:factory:Equipment;1", '
            'where: [{property: "serialNumber", op: EXISTS}]) { nodes { __typename } } }'
        )
    )["twins"]["nodes"]
    assert {"Pump", "CncMachine"} <= {n["__typename"] for n in pumps}
    below = data(
        api.post(
            '{ twins(traversal: {start: "site-1", maxHops: 2}) { nodes { dtId __typename } } }'
        )
    )["twins"]["nodes"]
    assert {n["__typename"] for n in below} == {"Area", "ProductionLine"}


def test_nested_relationships_are_batched_not_one_query_per_twin(api: Api) -> None:
    query = (
        "{ twins(first: 60) { nodes { dtId relationships(first: 10) { nodes { target { dtId "
        "relationships(first: 10) { nodes { targetId target { dtId } } } } } } } } }"
    )
    api.store.reads = 0
    twins = data(api.post(query))["twins"]["nodes"]
    reads = api.store.reads
    hops = sum(len(t["relationships"]["nodes"]) for t in twins)
    assert len(twins) > 20 and hops > 20
    # twins; their relationships; the targets (primed by the twin list, so no read);
    # the targets' relationships; their targets: one round trip per level, whatever N.
    assert reads <= 4, reads


def test_a_finished_request_leaves_nothing_for_the_garbage_collector(api: Api) -> None:
    # Reference cycles in a request's executor, context or loaders left all of it to
    # the collector's full passes, 20-30 ms each and several a second under load.
    query = (
        "query($id: String!) { twin(id: $id) { dtId relationships { nodes { target {"
        " dtId relationships { nodes { target { dtId modelId } } } } } } } }"
    )
    line = a_twin_of(api, "dtmi:com:twinforge:factory:ProductionLine;1")["dtId"]
    data(api.post(query, {"id": line}))  # parsed and validated once, then cached
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            assert data(api.post(query, {"id": line}))["twin"]["relationships"]["nodes"]
        gc.collect()
        # The in-process test client (httpx) makes cycles of its own: count the server's.
        kept = sorted(
            {
                f"{type(o).__module__}.{type(o).__qualname__}"
                for o in gc.garbage
                if type(o).__module__.partition(".")[0] in ("twinforge", "strawberry", "graphql")
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert kept == []


# -- mutations and schema rebuilds ----------------------------------------------------

VALVE = {
    "@context": "dtmi:dtdl:context;3",
    "@id": "dtmi:com:example:Valve;1",
    "@type": "Interface",
    "contents": [
        {"@type": "Property", "name": "opening", "schema": "double", "writable": True},
        {"@type": "Telemetry", "name": "flow", "schema": "double"},
        {
            "@type": "Property",
            "name": "limits",
            "schema": {
                "@type": "Object",
                "fields": [
                    {"name": "low", "schema": "double"},
                    {"name": "high", "schema": "double"},
                ],
            },
        },
    ],
}


def test_uploaded_models_get_types_without_a_restart(api: Api) -> None:
    assert data(api.post('{ __type(name: "Valve") { name } }'))["__type"] is None
    uploaded = data(
        api.post(
            "mutation($m: [JSON!]!) { uploadModels(models: $m) { id graphqlType } }",
            {"m": [VALVE]},
            role="engineer",
        )
    )["uploadModels"]
    assert uploaded == [{"id": VALVE["@id"], "graphqlType": "Valve"}]
    created = data(
        api.post(
            'mutation($d: JSON!) { createTwin(id: "valve-1", document: $d) { __typename etag } }',
            {
                "d": {
                    "$metadata": {"$model": VALVE["@id"]},
                    "opening": 0.5,
                    "limits": {"low": 0.1, "high": 0.9},
                }
            },
            role="engineer",
        )
    )["createTwin"]
    assert created["__typename"] == "Valve"
    read = data(
        api.post('{ twin(id: "valve-1") { ... on Valve { opening limits { low high } } } }')
    )
    assert read["twin"] == {"opening": 0.5, "limits": {"low": 0.1, "high": 0.9}}
    # A patch with a stale etag is refused; with the current one it applies.
    patch = (
        "mutation($p: [JSON!]!, $e: String) "
        '{ patchTwin(id: "valve-1", patch: $p, ifMatch: $e) { etag ... on Valve { opening } } }'
    )
    change = [{"op": "replace", "path": "/opening", "value": 0.8}]
    stale = api.post(patch, {"p": change, "e": 'W/"stale"'}, role="engineer")
    assert error_codes(stale) == ["PRECONDITION_FAILED"]
    patched = data(api.post(patch, {"p": change, "e": created["etag"]}, role="engineer"))
    assert patched["patchTwin"]["opening"] == 0.8
    wrong = api.post(
        patch, {"p": [{"op": "replace", "path": "/opening", "value": "wide"}]}, role="engineer"
    )
    assert error_codes(wrong) == ["BAD_USER_INPUT"] and "opening" in wrong["errors"][0]["message"]
    # Deleting the model is refused while a twin uses it, then removes the type.
    refused = api.post(f'mutation {{ deleteModel(id: "{VALVE["@id"]}") }}')
    assert error_codes(refused) == ["CONFLICT"]
    assert data(api.post('mutation { deleteTwin(id: "valve-1") }', role="engineer"))["deleteTwin"]
    assert data(api.post(f'mutation {{ deleteModel(id: "{VALVE["@id"]}") }}'))["deleteModel"]
    assert data(api.post('{ __type(name: "Valve") { name } }'))["__type"] is None


def test_a_decommissioned_model_keeps_its_type_but_takes_no_new_twins(api: Api) -> None:
    done = data(
        api.post(
            f'mutation {{ decommissionModel(id: "{PUMP}") {{ decommissioned graphqlType }} }}',
            role="engineer",
        )
    )["decommissionModel"]
    assert done == {"decommissioned": True, "graphqlType": "Pump"}
    existing = a_twin_of(api, PUMP)["dtId"]
    read = data(api.post(f'{{ twin(id: "{existing}") {{ __typename }} }}'))["twin"]
    assert read == {"__typename": "Pump"}
    refused = api.post(
        'mutation($d: JSON!) { createTwin(id: "pump-new", document: $d) { dtId } }',
        {"d": {"$metadata": {"$model": PUMP}}},
        role="engineer",
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert "decommissioned" in refused["errors"][0]["message"]


def test_relationship_mutations(api: Api) -> None:
    pumps = data(api.post(f'{{ twins(model: "{PUMP}", first: 2) {{ nodes {{ dtId }} }} }}'))
    source, target = (n["dtId"] for n in pumps["twins"]["nodes"])
    create = (
        'mutation($s: String!, $t: String!) { createRelationship(sourceId: $s, id: "r-test", '
        'name: "feeds", targetId: $t) { id name targetId etag target { dtId } } }'
    )
    made = data(api.post(create, {"s": source, "t": target}, role="engineer"))["createRelationship"]
    assert made["name"] == "feeds" and made["target"]["dtId"] == target
    again = api.post(create, {"s": source, "t": target}, role="engineer")
    assert error_codes(again) == ["CONFLICT"]
    wrong = api.post(
        'mutation($s: String!) { createRelationship(sourceId: $s, id: "r2", name: "nope", '
        'targetId: "site-1") { id } }',
        {"s": source},
        role="engineer",
    )
    assert error_codes(wrong) == ["BAD_USER_INPUT"] and "nope" in wrong["errors"][0]["message"]
    deleted = api.post(
        'mutation($s: String!) { deleteRelationship(sourceId: $s, id: "r-test") }',
        {"s": source},
        role="engineer",
    )
    assert data(deleted)["deleteRelationship"] is True


# -- access ---------------------------------------------------------------------------

DENIALS = [
    ("viewer", 'mutation { createTwin(id: "x", document: {}) { dtId } }'),
    ("operator", 'mutation { deleteTwin(id: "site-1") }'),
    ("viewer", "{ deadLetters { nodes { id } } }"),
    ("operator", "{ deadLetters { nodes { id } } }"),
    ("engineer", "{ auditLog { nodes { id } } }"),
    ("engineer", "{ apiKeys { name } }"),
    ("engineer", 'mutation { deleteModel(id: "dtmi:com:twinforge:factory:Pump;1") }'),
    ("viewer", 'mutation { invokeCommand(twinId: "x", name: "stop") { status } }'),
    ("operator", 'mutation { createApiKey(name: "x", roles: ["admin"]) { secret } }'),
]


@pytest.mark.parametrize(("role", "query"), DENIALS)
def test_each_role_is_denied_what_it_may_not_do(api: Api, role: str, query: str) -> None:
    answer = api.post(query, role=role)
    assert error_codes(answer) == ["FORBIDDEN"], answer
    assert answer["data"] is None


def test_without_valid_credentials_nothing_is_served(api: Api) -> None:
    assert error_codes(api.post("{ twins { nodes { dtId } } }", role=None)) == ["UNAUTHENTICATED"]
    forged = api.request(
        {"query": "{ me { name } }"},
        {"Authorization": "Bearer tfk_0123456789abcdef_" + "A" * 43},
    ).json()
    assert error_codes(forged) == ["UNAUTHENTICATED"]


def test_graphiql_queries_by_get_and_the_health_check_are_served(api: Api) -> None:
    with TestClient(api.app) as client:
        page = client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        answer = client.get(
            "/graphql",
            params={"query": "{ me { name } }"},
            headers={"Authorization": f"Bearer {api.secrets['viewer']}"},
        )
        assert answer.status_code == 200 and answer.json()["data"]["me"]["name"]
        assert client.put("/graphql", json={"query": "{ __typename }"}).status_code == 405
        # Everything but /graphql goes through FastAPI.
        models = len(api.twins.models.list())
        assert models and client.get("/healthz").json() == {"status": "ok", "models": models}
        assert client.get("/graphql/more").status_code == 404


def test_api_keys_and_tokens(api: Api) -> None:
    issued = data(
        api.post(
            'mutation { createApiKey(name: "line-display", roles: ["viewer"]) { key { id roles } secret } }'
        )
    )["createApiKey"]
    assert issued["key"]["roles"] == ["viewer"]
    headers = {"X-API-Key": issued["secret"]}
    assert api.request({"query": "{ me { roles } }"}, headers).json()["data"]["me"]["roles"] == [
        "viewer"
    ]
    stored = api.keys.get(issued["key"]["id"])
    assert stored is not None and issued["secret"] not in json.dumps(str(stored))
    assert data(api.post(f'mutation {{ revokeApiKey(id: "{issued["key"]["id"]}") }}'))
    revoked = api.request({"query": "{ me { roles } }"}, headers).json()
    assert error_codes(revoked) == ["UNAUTHENTICATED"]
    token = data(
        api.post('mutation { issueToken(subject: "eve", roles: ["engineer"]) { token jti } }')
    )["issueToken"]
    assert re.fullmatch(r"[0-9a-f]{32}", token["jti"])
    me = api.request(
        {"query": "{ me { id name roles } }"}, {"Authorization": f"Bearer {token['token']}"}
    ).json()
    assert me["data"]["me"] == {"id": "jwt:eve", "name": "eve", "roles": ["engineer"]}
    bad_role = api.post('mutation { issueToken(subject: "eve", roles: ["root"]) { jti } }')
    assert error_codes(bad_role) == ["BAD_USER_INPUT"]


# -- hostile input --------------------------------------------------------------------


def test_deep_huge_and_injected_queries_are_refused(api: Api) -> None:
    deep = "{ twins { nodes { " + "relationships { nodes { target { " * 6 + "dtId" + " } } }" * 6
    deep += " } } }"
    assert "QUERY_TOO_DEEP" in error_codes(api.post(deep))
    huge = api.post("{ twins(first: 100000) { nodes { dtId } } }")
    assert error_codes(huge) in (["BAD_USER_INPUT"], ["QUERY_TOO_COMPLEX"])
    wide = "{ " + " ".join(f"a{i}: twins(first: 1000) {{ nodes {{ dtId }} }}" for i in range(40))
    assert error_codes(api.post(wide + " }"))[0] in (
        "QUERY_TOO_COMPLEX",
        "GRAPHQL_VALIDATION_FAILED",
    )
    before = api.twins.cypher("MATCH (t:Twin) RETURN count(t) AS n")[0]["n"]
    for hostile in (
        "x' OR 1=1 //",
        '"}) MATCH (n) DETACH DELETE n //',
        "site-1\u0000",
        "\u202e" * 1000,
    ):
        answer = api.post("query($id: String!) { twin(id: $id) { dtId } }", {"id": hostile})
        assert answer.get("data", {}).get("twin") is None or error_codes(answer)
        where = api.post(
            'query($v: JSON) { twins(where: [{property: "serialNumber", op: EQ, value: $v}]) '
            "{ nodes { dtId } } }",
            {"v": hostile},
        )
        assert "data" in where
    assert api.twins.cypher("MATCH (t:Twin) RETURN count(t) AS n")[0]["n"] == before
    bad_property = api.post(
        '{ twins(where: [{property: "a) DELETE t //", op: EQ, value: 1}]) { nodes { dtId } } }'
    )
    assert error_codes(bad_property) == ["BAD_USER_INPUT"]
    oversize = api.request({"query": "{ me { name } }", "variables": {"x": "y" * 2_000_000}})
    assert oversize.status_code == 413
    assert oversize.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    not_graphql = api.request({"query": "{ twins { nodes { dtId }"})
    assert error_codes(not_graphql.json()) == ["GRAPHQL_PARSE_FAILED"]


# -- subscriptions ----------------------------------------------------------------------


@contextlib.contextmanager
def websocket(api: Api) -> Iterator[Any]:
    with (
        TestClient(api.app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as socket,
    ):
        yield socket


def _subscribe(
    socket: Any, secret: str, query: str, variables: dict[str, Any], operation_id: str = "1"
) -> None:
    socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {secret}"}})
    assert socket.receive_json()["type"] == "connection_ack"
    socket.send_json(
        {
            "id": operation_id,
            "type": "subscribe",
            "payload": {"query": query, "variables": variables},
        }
    )


def test_twin_changes_and_telemetry_reach_subscribers(api: Api) -> None:
    pump = a_twin_of(api, PUMP)["dtId"]
    with websocket(api) as socket:
        _subscribe(
            socket,
            api.secrets["viewer"],
            "subscription($id: String!) { twinChanged(twinId: $id) { kind twinId data } }",
            {"id": pump},
        )
        time.sleep(0.3)  # the subscription opens on the server's loop
        api.twins.patch_twin(pump, [{"op": "add", "path": "/state", "value": "fault"}])
        message = socket.receive_json()
        assert message["type"] == "next", message
        change = message["payload"]["data"]["twinChanged"]
        assert change["kind"] == "PATCHED" and change["twinId"] == pump
        assert change["data"]["twin"]["state"] == "fault"

    with websocket(api) as socket:
        _subscribe(
            socket,
            api.secrets["viewer"],
            'subscription($id: String!) { telemetry(twinId: $id, fields: ["flowRate"]) '
            "{ twinId values time } }",
            {"id": pump},
        )
        time.sleep(0.3)
        for value in (1.0, 2.0):  # what the ingest pipeline publishes once durable
            api.live.publish(
                EventKind.TELEMETRY,
                pump,
                {
                    "values": {"flowRate": value, "pressure": 3.0},
                    "sourceTime": time.time(),
                    "kind": "telemetry",
                },
            )
        got = [socket.receive_json()["payload"]["data"]["telemetry"] for _ in range(2)]
        assert [g["values"] for g in got] == [{"flowRate": 1.0}, {"flowRate": 2.0}]


def test_subscribers_of_the_same_query_share_one_subscription(api: Api) -> None:
    pump = a_twin_of(api, PUMP)["dtId"]
    query = (
        "subscription($id: String!, $fields: [String!]) { telemetry(twinId: $id, fields:"
        " $fields) { twinId values time missed } }"
    )
    groups = api.app.state.subscription_groups
    bus_before = api.live.subscriber_count
    with TestClient(api.app) as client, contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(
                client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"])
            )
            for _ in range(5)
        ]
        for n, socket in enumerate(sockets):
            fields = ["pressure"] if n == 3 else ["flowRate"]
            secret = api.secrets["admin" if n == 4 else "viewer"]
            _subscribe(socket, secret, query, {"id": pump, "fields": fields}, f"op-{n}")
        time.sleep(0.3)
        # Three viewers asked the same: one group. Other fields, other roles: others.
        assert (len(groups), groups.members()) == (3, 5)
        assert api.live.subscriber_count == bus_before + 3
        api.live.publish(
            EventKind.TELEMETRY,
            pump,
            {"values": {"flowRate": 1.5, "pressure": 3.0}, "sourceTime": 1e9, "kind": "telemetry"},
        )
        got = [socket.receive_json() for socket in sockets]
        assert [g["id"] for g in got] == [f"op-{n}" for n in range(5)]
        updates = [g["payload"]["data"]["telemetry"] for g in got]
        assert updates[0] == {
            "twinId": pump,
            "values": {"flowRate": 1.5},
            "time": "2001-09-09T01:46:40+00:00",
            "missed": 0,
        }
        assert updates[1] == updates[2] == updates[4] == updates[0]
        assert updates[3]["values"] == {"pressure": 3.0}

        # Members that leave take nothing from the others, not even the first one, whose
        # connection the group's subscription started on ...
        sockets[0].close()
        sockets[1].send_json({"id": "op-1", "type": "complete"})
        time.sleep(0.3)
        assert (len(groups), groups.members()) == (3, 3)
        api.live.publish(
            EventKind.TELEMETRY,
            pump,
            {"values": {"flowRate": 2.5, "pressure": 3.0}, "sourceTime": 1e9, "kind": "telemetry"},
        )
        later = [socket.receive_json()["payload"]["data"]["telemetry"] for socket in sockets[2:]]
        expected = [{"flowRate": 2.5}, {"pressure": 3.0}, {"flowRate": 2.5}]
        assert [u["values"] for u in later] == expected
    # ... and the last to leave ends the group and its bus subscription.
    deadline = time.monotonic() + 5
    while (len(groups) or api.live.subscriber_count != bus_before) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert (len(groups), groups.members(), api.live.subscriber_count) == (0, 0, bus_before)


def test_a_shared_subscription_that_does_not_validate_errs_for_every_subscriber(
    api: Api,
) -> None:
    groups = api.app.state.subscription_groups
    with TestClient(api.app) as client, contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(
                client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"])
            )
            for _ in range(2)
        ]
        for socket in sockets:
            _subscribe(
                socket,
                api.secrets["viewer"],
                'subscription { telemetry(twinId: "x") { values nope } }',
                {},
            )
        errors = [socket.receive_json() for socket in sockets]
    for error in errors:
        assert (error["id"], error["type"]) == ("1", "error")
        assert (
            "Cannot query field 'nope' on type 'TelemetryUpdate'." in error["payload"][0]["message"]
        )
    assert len(groups) == 0


def test_twin_changes_of_a_model_include_only_its_twins_relationships(api: Api) -> None:
    pump, cnc = a_twin_of(api, PUMP)["dtId"], a_twin_of(api, CNC)["dtId"]
    with websocket(api) as socket:
        _subscribe(
            socket,
            api.secrets["viewer"],
            "subscription($m: String!) { twinChanged(model: $m, kinds: [RELATIONSHIP_CREATED,"
            " RELATIONSHIP_DELETED]) { kind twinId data } }",
            {"m": PUMP},
        )
        time.sleep(0.3)
        api.twins.create_relationship(
            cnc, "r-cnc", {"$relationshipName": "feeds", "$targetId": pump}
        )
        api.twins.create_relationship(
            pump, "r-pump", {"$relationshipName": "feeds", "$targetId": cnc}
        )
        api.twins.delete_relationship(cnc, "r-cnc")
        api.twins.delete_relationship(pump, "r-pump")
        got = [socket.receive_json()["payload"]["data"]["twinChanged"] for _ in range(2)]
    # The CNC's relationship went by first, both times, and never reached the subscriber.
    assert [(g["kind"], g["twinId"], g["data"]["$relationshipId"]) for g in got] == [
        ("RELATIONSHIP_CREATED", pump, "r-pump"),
        ("RELATIONSHIP_DELETED", pump, "r-pump"),
    ]


def test_a_subscriber_that_falls_behind_is_told_what_it_missed(api: Api) -> None:
    pump = a_twin_of(api, PUMP)["dtId"]
    published = 5 * BUFFER
    with websocket(api) as socket:
        _subscribe(
            socket,
            api.secrets["viewer"],
            "subscription($id: String!) { telemetry(twinId: $id) { values missed } }",
            {"id": pump},
        )
        time.sleep(0.3)
        # One burst, faster than the server can answer: its buffer overflows.
        api.live.publish_many(
            EventKind.TELEMETRY,
            (
                (pump, {"values": {"flowRate": n}, "sourceTime": 1e9, "kind": "telemetry"})
                for n in range(published)
            ),
        )
        got: list[dict[str, Any]] = []
        while not got or got[-1]["values"]["flowRate"] < published - 1:
            got.append(socket.receive_json()["payload"]["data"]["telemetry"])
    numbers = [g["values"]["flowRate"] for g in got]
    assert numbers == sorted(numbers)
    missed = sum(g["missed"] for g in got)
    assert missed > 0
    assert len(got) + missed == published  # each update arrived or was counted missed
    # Each count comes with the first update after the gap it reports.
    for before, update in itertools.pairwise(got):
        assert update["values"]["flowRate"] - before["values"]["flowRate"] == 1 + update["missed"]


def test_a_socket_without_credentials_is_closed(api: Api) -> None:
    with websocket(api) as socket:
        socket.send_json({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
        closed = socket.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 4403


def test_alerts_subscription_filters_by_severity(api: Api) -> None:
    cnc = a_twin_of(api, CNC)["dtId"]
    received: list[dict[str, Any]] = []
    with websocket(api) as socket:
        _subscribe(
            socket,
            api.secrets["viewer"],
            "subscription { alerts(minSeverity: 3) { raised alert { twinId name severity } } }",
            {},
        )
        time.sleep(0.3)
        for name, severity, kind in (
            ("powerSpike", 2, EventKind.ALARM_RAISED),
            ("spindleOverTemperature", 4, EventKind.ALARM_RAISED),
            ("spindleOverTemperature", 4, EventKind.ALARM_CLEARED),
        ):
            now = time.time()
            api.live.publish(
                kind,
                cnc,
                {
                    "name": name,
                    "severity": severity,
                    "since": now,
                    "field": "x",
                    "value": 99.0,
                    "time": now,
                },
            )
        reader = threading.Thread(
            target=lambda: received.extend(socket.receive_json() for _ in range(2)), daemon=True
        )
        reader.start()
        reader.join(10)
    events = [m["payload"]["data"]["alerts"] for m in received]
    assert [(e["raised"], e["alert"]["name"]) for e in events] == [
        (True, "spindleOverTemperature"),
        (False, "spindleOverTemperature"),
    ]


def test_a_client_gone_mid_send_is_not_logged_as_a_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only the logging is under test: the handler needs no live connection for it.
    handler = _TransportWS(None, None, None, None, None, timedelta(seconds=1))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="strawberry.ws.task"):
        asyncio.run(handler.handle_task_exception(WebSocketDisconnected()))
        assert caplog.records == []
        asyncio.run(handler.handle_task_exception(RuntimeError("a real failure")))
    assert [r.getMessage() for r in caplog.records] == ["Exception in worker task"]
