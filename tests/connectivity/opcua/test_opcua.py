"""OPC UA ingest and commands against a real asyncua server following the plant convention.

The server runs in this process, in its own thread and event loop, on a free port. The
Intake is a recorder (the boundary under test): it keeps every offer and rejection.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from asyncua import Server, ua
from support.opcua_intake import RecordingIntake

from twinforge.connectivity.command_reply import CommandReply, InvalidCommandReply
from twinforge.connectivity.opcua.commands import OpcUaCommandTransport
from twinforge.connectivity.opcua.nodes import PLANT_NAMESPACE, MappingError
from twinforge.connectivity.opcua.security import NO_SECURITY, ClientSecurity
from twinforge.connectivity.opcua.telemetry import (
    BAD_STATUS_REASON,
    NodeMapping,
    NotJsonValue,
    OpcUaIngest,
    discover_mappings,
    json_value,
    load_mappings,
    parse_mappings,
    source_time,
)
from twinforge.ingest.messages import WRONG_TYPE

T = TypeVar("T")
TWINS = ("press-1", "press-2")
FIELDS = ("temperature", "pressure")
JAN_2024 = datetime(2024, 1, 1, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PlantServer:
    """Two twins: Double telemetry, a writable ``targetSpeed``, a ``spindle`` component
    with ``rpm``, and commands ``echo``, ``setSpeed`` (validates), ``garbage`` (answers
    non-JSON) and ``slow`` (answers after 1 s)."""

    def __init__(self, port: int) -> None:
        self.url = f"opc.tcp://127.0.0.1:{port}/twinforge/"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = Server()
        self.variables: dict[str, Any] = {}

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> PlantServer:
        self.thread.start()
        self.run(self._start())
        return self

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _stop(self) -> None:
        await self.server.stop()
        # Sessions of clients still connected keep tasks; end them with the server.
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def write(
        self,
        node: str,
        value: Any,
        *,
        at: datetime | None = None,
        status: int = ua.StatusCodes.Good,
    ) -> None:
        variant = ua.Variant() if value is None else ua.Variant(value, ua.VariantType.Double)
        data = ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=at)
        self.run(self.variables[node].write_value(data))

    def read(self, node: str) -> Any:
        return self.run(self.variables[node].read_value())

    async def _start(self) -> None:
        await self.server.init()
        self.server.set_endpoint(self.url)
        ns = await self.server.register_namespace(PLANT_NAMESPACE)
        objects = self.server.nodes.objects
        for twin in TWINS:
            obj = await objects.add_object(ua.NodeId(twin, ns), ua.QualifiedName(twin, ns))
            for name in FIELDS:
                await self._variable(obj, ns, f"{twin}.{name}", 20.0)
            speed = await self._variable(obj, ns, f"{twin}.targetSpeed", 0.0)
            await speed.set_writable()
            spindle = await obj.add_object(
                ua.NodeId(f"{twin}.spindle", ns), ua.QualifiedName("spindle", ns)
            )
            await self._variable(spindle, ns, f"{twin}.spindle.rpm", 1000.0)
            for command, handler in self._commands(speed).items():
                await obj.add_method(
                    ua.NodeId(f"{twin}.{command}", ns),
                    ua.QualifiedName(command, ns),
                    handler,
                    [ua.VariantType.String],
                    [ua.VariantType.String],
                )
        # Another vendor's namespace: discovery must ignore it.
        other = await self.server.register_namespace("urn:other:vendor")
        await objects.add_object(ua.NodeId("press-9", other), ua.QualifiedName("press-9", other))
        await self.server.start()

    async def _variable(self, parent: Any, ns: int, node_id: str, value: float) -> Any:
        name = node_id.rsplit(".", 1)[1]
        var = await parent.add_variable(
            ua.NodeId(node_id, ns), ua.QualifiedName(name, ns), value, ua.VariantType.Double
        )
        self.variables[node_id] = var
        return var

    @staticmethod
    def _commands(speed: Any) -> dict[str, Callable[..., Any]]:
        def reply(doc: Any) -> list[ua.Variant]:
            return [ua.Variant(json.dumps(doc), ua.VariantType.String)]

        async def echo(parent: ua.NodeId, request: ua.Variant) -> list[ua.Variant]:
            return reply({"status": 200, "response": json.loads(request.Value)})

        async def set_speed(parent: ua.NodeId, request: ua.Variant) -> list[ua.Variant]:
            body = json.loads(request.Value)
            value = body.get("speed") if isinstance(body, dict) else None
            if not isinstance(value, int | float) or not 0 <= value <= 100:
                return reply({"status": 400, "error": "speed: must be a number from 0 to 100"})
            await speed.write_value(float(value), ua.VariantType.Double)
            return reply({"status": 200, "response": {"speed": value}})

        async def garbage(parent: ua.NodeId, request: ua.Variant) -> list[ua.Variant]:
            return [ua.Variant("<html>oops</html>", ua.VariantType.String)]

        async def slow(parent: ua.NodeId, request: ua.Variant) -> list[ua.Variant]:
            await asyncio.sleep(1)
            return reply({"status": 200, "response": None})

        return {"echo": echo, "setSpeed": set_speed, "garbage": garbage, "slow": slow}


@pytest.fixture(scope="module")
def plant() -> Iterator[PlantServer]:
    server = PlantServer(_free_port()).start()
    yield server
    server.stop()


def mapping(twin: str, field: str, component: str | None = None) -> NodeMapping:
    node = f"{twin}.{field}" if component is None else f"{twin}.{component}.{field}"
    return NodeMapping(f"ns=2;s={node}", twin, field, component)


def fast_ingest(
    url: str,
    mappings: list[NodeMapping],
    intake: RecordingIntake,
    security: ClientSecurity = NO_SECURITY,
) -> OpcUaIngest:
    return OpcUaIngest(
        url,
        mappings,
        intake,
        security=security,
        publishing_interval_ms=50,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        watchdog_interval_s=0.2,
    )


# -- ingest ---------------------------------------------------------------------------


def test_data_changes_reach_the_intake_with_twin_field_and_source_time(
    plant: PlantServer,
) -> None:
    intake = RecordingIntake()
    mappings = [
        mapping("press-1", "temperature"),
        mapping("press-2", "pressure"),
        mapping("press-1", "rpm", component="spindle"),
        NodeMapping("nsu=urn:twinforge:plant;s=press-2.temperature", "press-2", "temperature"),
        NodeMapping("ns=2;s=press-1.missing", "press-1", "missing"),
    ]
    with fast_ingest(plant.url, mappings, intake) as ingest:
        assert ingest.wait_connected(10)
        # Each item first reports the node's current value.
        intake.wait_offer(twin_id="press-1", values={"temperature": 20.0})
        intake.wait_offer(twin_id="press-1", values={"rpm": 1000.0}, component="spindle")
        # nsu= node ids are resolved by namespace URI.
        intake.wait_offer(twin_id="press-2", values={"temperature": 20.0})

        plant.write("press-1.temperature", 71.5, at=JAN_2024)
        got = intake.wait_offer(values={"temperature": 71.5})
        assert got == {
            "twin_id": "press-1",
            "values": {"temperature": 71.5},
            "component": None,
            "source_time": JAN_2024.timestamp(),
            "origin": "opcua:ns=2;s=press-1.temperature",
        }
        for value in (3.0, 4.0, 5.0):  # quicker than one publish: queued, none lost
            plant.write("press-2.pressure", value, at=JAN_2024)
        intake.wait_offer(values={"pressure": 5.0})
        pressures = [o["values"]["pressure"] for o in intake.offers if "pressure" in o["values"]]
        assert pressures[-3:] == [3.0, 4.0, 5.0]
        assert ingest.failed_nodes == {"ns=2;s=press-1.missing": "BadNodeIdUnknown"}
        assert ingest.received >= 7 and ingest.reconnects == 0
    assert not ingest.connected
    assert intake.rejections == []


def test_bad_status_and_non_json_values_are_rejected_not_fatal(plant: PlantServer) -> None:
    intake = RecordingIntake()
    with fast_ingest(plant.url, [mapping("press-2", "temperature")], intake) as ingest:
        assert ingest.wait_connected(10)
        intake.wait_offer(values={"temperature": 20.0})

        plant.write("press-2.temperature", None, status=ua.StatusCodes.BadSensorFailure)
        bad = intake.wait_rejection(field="temperature")
        assert bad.reason == BAD_STATUS_REASON
        assert bad.twin_id == "press-2" and bad.origin == "opcua:ns=2;s=press-2.temperature"
        assert bad.extra["statusCode"] == "BadSensorFailure"
        assert "BadSensorFailure" in bad.message and "'temperature'" in bad.message

        plant.write("press-2.temperature", math.nan)
        nan = intake.wait_rejection(payload=b"nan")
        assert nan.reason == WRONG_TYPE and "not a JSON number" in nan.message

        plant.write("press-2.temperature", 22.5)  # and values still flow
        intake.wait_offer(values={"temperature": 22.5})
        assert ingest.rejected == 2


def test_ingest_and_commands_reconnect_when_the_server_restarts() -> None:
    port = _free_port()
    plant = PlantServer(port).start()
    intake = RecordingIntake()
    ingest = fast_ingest(plant.url, [mapping("press-1", "temperature")], intake)
    machines = OpcUaCommandTransport(plant.url, security=NO_SECURITY)
    loop = asyncio.new_event_loop()  # the transport's connection lives on one loop

    def command() -> CommandReply:
        return loop.run_until_complete(machines.send("press-1", "echo", "hi", timeout=5))

    try:
        with ingest:
            assert ingest.wait_connected(10)
            plant.write("press-1.temperature", 30.0)
            intake.wait_offer(values={"temperature": 30.0})
            assert command().ok

            plant.stop()
            deadline = time.monotonic() + 10
            while ingest.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not ingest.connected
            assert command().status == 503

            plant = PlantServer(port).start()
            assert ingest.wait_connected(15)
            plant.write("press-1.temperature", 31.0)
            intake.wait_offer(values={"temperature": 31.0}, timeout=10)
            assert ingest.reconnects == 1
            assert ingest.last_error is not None  # the refused connects while it was down
            assert command().ok and machines.reconnects == 1
    finally:
        loop.run_until_complete(machines.close())
        loop.close()
        plant.stop()


def test_run_serves_asyncio_callers_until_stopped(plant: PlantServer) -> None:
    intake = RecordingIntake()
    ingest = fast_ingest(plant.url, [mapping("press-1", "pressure")], intake)

    async def main() -> None:
        task = asyncio.create_task(ingest.run())
        while not intake.offers:
            await asyncio.sleep(0.02)
        ingest.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(asyncio.wait_for(main(), 15))
    assert intake.offers[0]["values"] == {"pressure": plant.read("press-1.pressure")}


def test_ingest_retries_an_unreachable_server_and_stops_promptly() -> None:
    intake = RecordingIntake()
    url = f"opc.tcp://127.0.0.1:{_free_port()}/"
    ingest = fast_ingest(url, [mapping("press-1", "temperature")], intake)
    ingest.start()
    time.sleep(0.5)
    started = time.monotonic()
    ingest.stop()
    assert time.monotonic() - started < 3
    assert not ingest.connected and isinstance(ingest.last_error, OSError)


def test_ingest_refuses_bad_settings() -> None:
    intake = RecordingIntake()
    with pytest.raises(ValueError, match="mappings"):
        OpcUaIngest("opc.tcp://x:4840", [], intake, security=NO_SECURITY)
    with pytest.raises(ValueError, match="publishing_interval_ms"):
        OpcUaIngest(
            "opc.tcp://x:4840",
            [mapping("a", "b")],
            intake,
            security=NO_SECURITY,
            publishing_interval_ms=0,
        )


def test_json_values_and_source_times() -> None:
    assert json_value([1, 2.5, True, "x"]) == [1, 2.5, True, "x"]
    assert json_value(JAN_2024) == "2024-01-01T00:00:00Z"
    for bad in (None, b"\x00", math.inf, ua.LocalizedText("x")):
        with pytest.raises(NotJsonValue):
            json_value(bad)
    server = datetime(2025, 1, 1, tzinfo=UTC)
    assert source_time(ua.DataValue(1.0, SourceTimestamp=JAN_2024), 9.0) == JAN_2024.timestamp()
    assert source_time(ua.DataValue(1.0, ServerTimestamp=server), 9.0) == server.timestamp()
    null = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's null DateTime
    assert source_time(ua.DataValue(1.0, SourceTimestamp=null), 9.0) == 9.0


# -- discovery and mapping files ------------------------------------------------------


def test_discover_mappings_follows_the_convention(plant: PlantServer) -> None:
    found = asyncio.run(discover_mappings(plant.url, security=NO_SECURITY))
    expected = {mapping(t, f) for t in TWINS for f in FIELDS} | {
        mapping(t, "rpm", component="spindle") for t in TWINS
    }
    assert set(found) == expected and len(found) == len(expected)

    everything = asyncio.run(
        discover_mappings(plant.url, security=NO_SECURITY, include_writable=True)
    )
    assert set(everything) - set(found) == {mapping(t, "targetSpeed") for t in TWINS}

    with pytest.raises(LookupError, match="urn:nobody"):
        asyncio.run(discover_mappings(plant.url, "urn:nobody", security=NO_SECURITY))


def test_mapping_files_load_and_bad_ones_name_the_field_and_rule(tmp_path: Path) -> None:
    good = [
        {"node_id": "ns=2;s=press-1.temperature", "twin_id": "press-1", "field": "temperature"},
        {"node_id": "ns=2;s=press-1.spindle.rpm", "twin_id": "press-1", "field": "rpm",
         "component": "spindle"},
    ]  # fmt: skip
    path = tmp_path / "mappings.json"
    path.write_text(json.dumps(good))
    assert load_mappings(path) == [
        mapping("press-1", "temperature"),
        mapping("press-1", "rpm", component="spindle"),
    ]

    bad_field = [good[0], {**good[1], "field": "rpm speed"}]
    path.write_text(json.dumps(bad_field))
    with pytest.raises(MappingError) as caught:
        load_mappings(path)
    assert str(path) in str(caught.value)
    assert caught.value.errors == [("[1].field", caught.value.errors[0][1])]
    assert "must be a DTDL name" in caught.value.errors[0][1]

    cases = {
        "[0].twin_id: Field required": [{"node_id": "i=85", "field": "x"}],
        "[0].node_id: must be an OPC UA node id": [{**good[0], "node_id": "press-1"}],
        "[0].twin_id: may not start with $": [{**good[0], "twin_id": "$x"}],
        "[0].field: Input should be a valid string": [{**good[0], "field": 5}],
        "[0].units: Extra inputs are not permitted": [{**good[0], "units": "C"}],
        "mappings: Input should be a valid list": {"node_id": "i=85"},
        "[1]: twin 'press-1' field 'temperature' is already mapped by [0]": [
            good[0],
            {**good[0], "node_id": "ns=2;s=other"},
        ],
    }
    for expected, data in cases.items():
        with pytest.raises(MappingError) as caught:
            parse_mappings(data)
        assert expected in str(caught.value), (expected, str(caught.value))

    path.write_text("[{")
    with pytest.raises(MappingError, match="file: is not JSON"):
        load_mappings(path)
    with pytest.raises(MappingError, match="cannot be read"):
        load_mappings(tmp_path / "absent.json")


# -- commands -------------------------------------------------------------------------


def test_commands_call_the_method_and_parse_the_reply(plant: PlantServer) -> None:
    async def main() -> None:
        async with OpcUaCommandTransport(plant.url, security=NO_SECURITY) as machines:
            echoed = await machines.send("press-1", "echo", {"a": [1, 2]}, timeout=5)
            assert echoed == CommandReply(200, {"a": [1, 2]})
            assert (await machines.send("press-1", "echo", None, timeout=5)).response is None

            ok = await machines.send("press-2", "setSpeed", {"speed": 40}, timeout=5)
            assert ok.ok and ok.response == {"speed": 40}
            assert plant.read("press-2.targetSpeed") == 40.0
            refused = await machines.send("press-2", "setSpeed", {"speed": 400}, timeout=5)
            assert refused.status == 400 and "speed" in (refused.error or "")

            unknown = await machines.send("press-1", "launch", None, timeout=5)
            assert unknown.status == 404 and "launch" in (unknown.error or "")
            assert machines.reconnects == 0  # one connection for all of them

    asyncio.run(main())


def test_a_bad_reply_is_a_502_not_a_crash(plant: PlantServer) -> None:
    async def main() -> CommandReply:
        async with OpcUaCommandTransport(plant.url, security=NO_SECURITY) as machines:
            reply = await machines.send("press-1", "garbage", None, timeout=5)
            # the connection survives for the next command
            assert (await machines.send("press-1", "echo", 1, timeout=5)).response == 1
            return reply

    reply = asyncio.run(main())
    assert reply.status == 502
    assert "invalid reply to command 'garbage' of twin 'press-1'" in (reply.error or "")
    assert "not JSON" in (reply.error or "")


def test_a_slow_machine_gives_504_within_the_timeout(plant: PlantServer) -> None:
    async def main() -> None:
        async with OpcUaCommandTransport(plant.url, security=NO_SECURITY) as machines:
            started = time.monotonic()
            reply = await machines.send("press-1", "slow", None, timeout=0.3)
            assert time.monotonic() - started < 1.5
            assert reply.status == 504 and "within 0.3 s" in (reply.error or "")
            assert (await machines.send("press-1", "echo", "x", timeout=5)).response == "x"

    asyncio.run(main())


def test_unreachable_server_gives_503_and_bad_arguments_raise() -> None:
    async def main() -> None:
        async with OpcUaCommandTransport(
            f"opc.tcp://127.0.0.1:{_free_port()}/", security=NO_SECURITY
        ) as machines:
            reply = await machines.send("press-1", "echo", None, timeout=5)
            assert reply.status == 503 and "unreachable" in (reply.error or "")
            with pytest.raises(ValueError, match="request: must be JSON-representable"):
                await machines.send("press-1", "echo", {1, 2}, timeout=5)
            with pytest.raises(ValueError, match="request: must be JSON-representable"):
                await machines.send("press-1", "echo", math.nan, timeout=5)
            with pytest.raises(ValueError, match="command: must be a DTDL name"):
                await machines.send("press-1", "do it", None, timeout=5)
            with pytest.raises(ValueError, match="twin_id: must be a non-empty string"):
                await machines.send("", "echo", None, timeout=5)
            with pytest.raises(ValueError, match="timeout"):
                await machines.send("press-1", "echo", None, timeout=0)

    asyncio.run(main())


def test_write_property_converts_and_reports_refusals(plant: PlantServer) -> None:
    async def main() -> None:
        async with OpcUaCommandTransport(plant.url, security=NO_SECURITY) as machines:
            assert (await machines.write_property("press-1", "targetSpeed", 42)).status == 200
            assert plant.read("press-1.targetSpeed") == 42.0

            wrong = await machines.write_property("press-1", "targetSpeed", "fast")
            assert wrong.status == 400
            assert wrong.error == (
                "value: property 'targetSpeed' of twin 'press-1' is Double on the server: "
                "needs a number, got str"
            )
            read_only = await machines.write_property("press-1", "temperature", 1.0)
            assert read_only.status == 403 and "refused to write" in (read_only.error or "")
            missing = await machines.write_property("press-1", "nothing", 1.0)
            assert missing.status == 404

    asyncio.run(main())


# -- command replies ------------------------------------------------------------------


def test_command_reply_from_json_validates_the_shape() -> None:
    assert CommandReply.from_json('{"status": 200, "response": {"x": 1}}') == CommandReply(
        200, {"x": 1}
    )
    assert CommandReply.from_json(b'{"status": 409, "error": "busy", "trace": 1}').error == "busy"
    reply = CommandReply(201, [1])
    assert CommandReply.from_json(reply.to_json()) == reply and reply.ok
    cases = {
        "not json": "reply: not JSON",
        "[1]": "reply: must be a JSON object, got list",
        '{"response": 1}': "status: required",
        '{"status": "200"}': "status: must be an integer HTTP status, got str",
        '{"status": true}': "status: must be an integer HTTP status, got bool",
        '{"status": 700}': "status: must be between 100 and 599, got 700",
        '{"status": 500, "error": 5}': "error: must be a string or null, got int",
        '{"status": 200, "response": NaN}': "reply: NaN is not valid JSON",
    }
    for text, message in cases.items():
        with pytest.raises(InvalidCommandReply) as caught:
            CommandReply.from_json(text)
        assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(InvalidCommandReply, match="response: not JSON-representable"):
        CommandReply(200, {1, 2}).to_json()
