"""The GraphQL API end to end, against `twinforge demo` as a user starts it: a real server
process (graph, Ray fleet, embedded MQTT broker, plant simulator) reached over HTTP and
WebSocket. Live telemetry comes from the simulator through MQTT; commands reach the
simulated machines and come back audited."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from support.cli_process import running_twinforge
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.slow

CNC = "dtmi:com:twinforge:factory:CncMachine;1"
MOLDING = "dtmi:com:twinforge:factory:InjectionMoldingMachine;1"


@dataclass
class Demo:
    url: str
    keys: dict[str, str]
    #: Each role's identity (``key:<key id>``), as commands and the audit name it.
    ids: dict[str, str] = field(default_factory=dict)

    def post(
        self, query: str, variables: dict | None = None, *, role: str | None = "admin"
    ) -> dict:
        headers = {"Content-Type": "application/json"}
        if role is not None:
            headers["Authorization"] = f"Bearer {self.keys[role]}"
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.url, body, headers)
        return json.load(urllib.request.urlopen(request, timeout=60))

    def data(self, query: str, variables: dict | None = None, *, role: str = "admin") -> dict:
        answer = self.post(query, variables, role=role)
        assert "errors" not in answer, answer
        return answer["data"]

    def subscribe(self, query: str, variables: dict, *, role: str = "viewer") -> ClientConnection:
        socket = connect(
            self.url.replace("http://", "ws://"),
            subprotocols=["graphql-transport-ws"],
            open_timeout=30,
        )
        init = {"Authorization": f"Bearer {self.keys[role]}"}
        socket.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(socket.recv(30))["type"] == "connection_ack"
        payload = {"query": query, "variables": variables}
        socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        return socket


def next_data(socket: ClientConnection, field: str, timeout: float = 60) -> dict:
    while True:
        message = json.loads(socket.recv(timeout))
        if message["type"] == "ping":
            socket.send(json.dumps({"type": "pong"}))
            continue
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"][field]


def codes(answer: dict) -> list[str]:
    return [e["extensions"]["code"] for e in answer.get("errors", [])]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    env = os.environ | {
        "TWINFORGE_DATA_DIR": str(tmp_path_factory.mktemp("demo")),
        "TWINFORGE_API_PORT": "0",
        "TWINFORGE_METRICS_PORT": "0",
    }
    args = ["demo", "--no-dashboard", "--duration", "600", "--rate-hz", "4"]
    with running_twinforge(args, env) as running:
        url = re.search(r"GraphQL:\s+(http://\S+)", running.output)
        key = re.search(r"Admin API key:\s+(\S+)", running.output)
        assert url and key, running.output
        keys = {"admin": key[1]}
        demo = Demo(url[1], keys)
        for role in ("viewer", "operator", "engineer"):
            issued = demo.data(
                "mutation($n: String!, $r: [String!]!) { createApiKey(name: $n, roles: $r) "
                "{ secret key { id } } }",
                {"n": f"{role}-e2e", "r": [role]},
            )
            keys[role] = issued["createApiKey"]["secret"]
            demo.ids[role] = f"key:{issued['createApiKey']['key']['id']}"
        yield demo
    # A client gone mid-send is normal; nothing else may have failed in a worker task.
    assert "Exception in worker task" not in running.rest, running.rest


def first_of(demo: Demo, model: str) -> str:
    found = demo.data(
        "query($m: String!) { twins(model: $m, first: 1) { nodes { dtId } } }", {"m": model}
    )
    return found["twins"]["nodes"][0]["dtId"]


def test_query_reads_the_factory_and_live_values(demo: Demo) -> None:
    cnc = first_of(demo, CNC)
    query = (
        "query($id: String!) { twin(id: $id) { __typename ... on CncMachine { serialNumber "
        "spindleSpeed { value time } spindleSpeedHistory(last: 5) { value } } "
        "incomingRelationships { nodes { source { __typename } } } } }"
    )
    deadline = time.monotonic() + 60
    while True:
        twin = demo.data(query, {"id": cnc}, role="viewer")["twin"]
        if twin["spindleSpeed"] is not None and twin["spindleSpeedHistory"]:
            break
        assert time.monotonic() < deadline, twin
        time.sleep(1)
    assert twin["__typename"] == "CncMachine" and twin["serialNumber"]
    assert isinstance(twin["spindleSpeed"]["value"], float)
    assert {"WorkCell"} == {
        r["source"]["__typename"] for r in twin["incomingRelationships"]["nodes"]
    }


def test_the_demo_machines_run_their_fmus_beside_the_plant(demo: Demo) -> None:
    # The demo binds the factory's own FMUs: a CNC machine's twin steps the spindle FMU on
    # the telemetry the simulated plant publishes over MQTT.
    cnc = first_of(demo, CNC)
    query = (
        "query($id: String!) { twin(id: $id) { physics { running off fields { telemetry "
        "measured { value } expected { value } residual { value } } } } }"
    )
    deadline = time.monotonic() + 60
    while True:
        physics = demo.data(query, {"id": cnc}, role="viewer")["twin"]["physics"]
        fields = {f["telemetry"]: f for f in physics["fields"]}
        if fields["spindleTemperature"]["residual"] is not None:
            break
        assert time.monotonic() < deadline, physics
        time.sleep(1)
    assert physics["running"] and physics["off"] is None, physics
    assert set(fields) == {"spindleTemperature", "vibration", "powerKw"}
    temperature = fields["spindleTemperature"]
    assert temperature["residual"]["value"] == pytest.approx(
        temperature["measured"]["value"] - temperature["expected"]["value"], abs=1e-6
    )
    run = demo.data(
        "mutation($id: String!) { simulate(twinId: $id, horizonS: 3600, "
        "profiles: {spindleLoad: [[0, 0.1], [1800, 0.95]]}) { times series { telemetry values } } }",
        {"id": cnc},
        role="operator",
    )["simulate"]
    assert len(run["times"]) == 3600
    power = next(s["values"] for s in run["series"] if s["telemetry"] == "powerKw")
    assert power[-1] > power[1799]  # a heavier cut draws more power


def test_subscription_receives_telemetry_published_over_mqtt(demo: Demo) -> None:
    cnc = first_of(demo, CNC)
    with demo.subscribe(
        'subscription($id: String!) { telemetry(twinId: $id, fields: ["spindleTemperature"]) '
        "{ twinId time values } }",
        {"id": cnc},
    ) as socket:
        updates = [next_data(socket, "telemetry") for _ in range(3)]
    assert {u["twinId"] for u in updates} == {cnc}
    assert all(set(u["values"]) == {"spindleTemperature"} for u in updates)
    times = [u["time"] for u in updates]
    assert times == sorted(times) and len(set(times)) == 3


def test_a_command_reaches_the_machine_and_is_audited(demo: Demo) -> None:
    cnc = first_of(demo, CNC)
    invoked = demo.data(
        'mutation($id: String!) { invokeCommand(twinId: $id, name: "setSpindleSpeed", '
        "request: 9000) { id status reason user } }",
        {"id": cnc},
        role="operator",
    )["invokeCommand"]
    assert invoked["status"] == "SUCCEEDED", invoked
    assert invoked["user"] == demo.ids["operator"]
    # The simulated machine follows its new set-point, as its telemetry shows.
    with demo.subscribe(
        'subscription($id: String!) { telemetry(twinId: $id, fields: ["spindleSpeed"]) '
        "{ values } }",
        {"id": cnc},
    ) as socket:
        deadline = time.monotonic() + 90
        while abs(next_data(socket, "telemetry")["values"]["spindleSpeed"] - 9000) > 500:
            assert time.monotonic() < deadline
    audit = demo.data(
        "query($id: String!) { auditLog(twinId: $id) { nodes { commandId action status user } } }",
        {"id": cnc},
    )["auditLog"]["nodes"]
    mine = [row for row in audit if row["commandId"] == invoked["id"]]
    assert {row["status"] for row in mine} >= {"succeeded"}
    assert {row["user"] for row in mine} == {demo.ids["operator"]}
    too_fast = demo.data(
        'mutation($id: String!) { invokeCommand(twinId: $id, name: "setSpindleSpeed", '
        "request: 90000) { status reason } }",
        {"id": cnc},
        role="operator",
    )["invokeCommand"]
    assert too_fast["status"] == "DENIED" and "24000" in too_fast["reason"]


def test_a_hazardous_command_waits_for_a_second_user(demo: Demo) -> None:
    machine = first_of(demo, MOLDING)
    pending = demo.data(
        'mutation($id: String!) { invokeCommand(twinId: $id, name: "setBarrelTemperature", '
        "request: 280) { id status } }",
        {"id": machine},
        role="operator",
    )["invokeCommand"]
    assert pending["status"] == "PENDING_APPROVAL"
    with demo.subscribe(
        "subscription($id: String!) { commandStatus(id: $id) { status approver } }",
        {"id": pending["id"]},
    ) as socket:
        assert next_data(socket, "commandStatus")["status"] == "PENDING_APPROVAL"
        own = demo.post(
            "mutation($id: String!) { approveCommand(id: $id) { status } }",
            {"id": pending["id"]},
            role="operator",
        )
        assert codes(own) == ["FORBIDDEN"]
        approved = demo.data(
            "mutation($id: String!) { approveCommand(id: $id) { status approver } }",
            {"id": pending["id"]},
            role="engineer",
        )["approveCommand"]
        assert approved == {"status": "SUCCEEDED", "approver": demo.ids["engineer"]}
        statuses = [next_data(socket, "commandStatus")["status"]]
        while statuses[-1] != "SUCCEEDED":
            statuses.append(next_data(socket, "commandStatus")["status"])
    assert statuses[-1] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("role", "query"),
    [
        ("viewer", 'mutation { invokeCommand(twinId: "cnc-01", name: "stop") { status } }'),
        ("operator", 'mutation { createTwin(id: "x", document: {}) { dtId } }'),
        ("engineer", "{ auditLog { nodes { id } } }"),
        ("viewer", "{ deadLetters { nodes { reason } } }"),
    ],
)
def test_roles_are_enforced(demo: Demo, role: str, query: str) -> None:
    assert codes(demo.post(query, role=role)) == ["FORBIDDEN"]


def test_hostile_requests_are_refused_and_the_server_stays_up(demo: Demo) -> None:
    assert codes(demo.post("{ me { name } }", role=None)) == ["UNAUTHENTICATED"]
    deep = "{ twins { nodes { " + "relationships { nodes { target { " * 8 + "dtId" + " } } }" * 8
    assert "QUERY_TOO_DEEP" in codes(demo.post(deep + " } } }"))
    assert codes(demo.post("{ twins(first: 1000000) { nodes { dtId } } }")) in (
        ["BAD_USER_INPUT"],
        ["QUERY_TOO_COMPLEX"],
    )
    injected = demo.data(
        "query($id: String!) { twin(id: $id) { dtId } }", {"id": "x' OR 1=1 //"}, role="viewer"
    )
    assert injected["twin"] is None
    before = demo.data("{ twins(first: 1000) { nodes { dtId } } }")["twins"]["nodes"]
    request = urllib.request.Request(
        demo.url,
        b'{"query": "' + b"{ me { name } } " * 100_000 + b'"}',
        {"Content-Type": "application/json", "Authorization": f"Bearer {demo.keys['admin']}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert demo.data("{ twins(first: 1000) { nodes { dtId } } }")["twins"]["nodes"] == before
