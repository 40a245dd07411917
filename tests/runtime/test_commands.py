"""Command invocation: safety policy, approvals, validation and the audit log.

Real parts only: the sample factory's DTDL models, a SQLite audit file, and commands sent
over the real Mosquitto (127.0.0.1:1883) to a device written here as a paho client that
follows the wire contract.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.mqtt_device import CommandDevice

from twinforge.connectivity.mqtt.commands import MqttCommandTransport
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint
from twinforge.runtime.commands import (
    Alarm,
    ApprovalError,
    AuditLog,
    CommandNotFound,
    CommandRecord,
    CommandService,
    CommandStatus,
    PolicyError,
    Principal,
    SafetyPolicy,
    Verdict,
)
from twinforge.runtime.commands.rate_limit import InvocationCounter
from twinforge.sim.factory import MODELS_DIR, SAFETY_POLICY
from twinforge.twin_models import Interface, ModelSet, parse_models

REPO = Path(__file__).resolve().parents[2]
BROKER = ("127.0.0.1", 1883)
ENDPOINT = MqttEndpoint(*BROKER)
CNC = "dtmi:com:twinforge:factory:CncMachine;1"
IMM = "dtmi:com:twinforge:factory:InjectionMoldingMachine;1"
EQUIPMENT = "dtmi:com:twinforge:factory:Equipment;1"
CONVEYOR = "dtmi:com:twinforge:factory:Conveyor;1"
INSPECTION = "dtmi:com:twinforge:factory:InspectionStation;1"

ALICE = Principal("alice", frozenset({"operator"}))
CAROL = Principal("carol", frozenset({"operator"}))
BOB = Principal("bob", frozenset({"engineer"}))
VIC = Principal("vic", frozenset({"viewer"}))

Reply = dict[str, Any] | bytes | None


# -- real parts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return parse_models(p.read_text() for p in sorted(MODELS_DIR.glob("*.json")))


@pytest.fixture(scope="module")
def sample_policy() -> SafetyPolicy:
    return SafetyPolicy.from_file(SAFETY_POLICY)


class AlarmBoard:
    """Active alarms per twin, set by the test as an asset actor would."""

    def __init__(self) -> None:
        self.alarms: dict[str, list[Alarm]] = {}
        self.broken = False

    def active_alarms(self, twin_id: str) -> Sequence[Alarm]:
        if self.broken:
            raise ConnectionError("alarm service unreachable")
        return self.alarms.get(twin_id, [])


class Clock:
    """A clock the test moves by hand (rate windows, approval expiry)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Device(CommandDevice):
    """A machine on MQTT: answers its twins' commands per the wire contract.

    ``replies[(twin, command)]`` says what to answer: a JSON object, raw bytes, or None
    for silence; by default ``{"status": 200, "response": null}``.
    """

    def __init__(self, twin_ids: Sequence[str]) -> None:
        super().__init__(BROKER, twin_ids)
        self.replies: dict[tuple[str, str], Reply] = {}
        self.received: list[tuple[str, Any]] = []

    def on_command(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        _, twin, _, command = message.topic.split("/")
        self.received.append((f"{twin}/{command}", json.loads(message.payload)["request"]))
        reply = self.replies.get((twin, command), {"status": 200, "response": None})
        if reply is None:
            return
        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = message.properties.CorrelationData
        body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        client.publish(message.properties.ResponseTopic, body, qos=1, properties=properties)


@dataclass
class Plant:
    """The sample factory's twins (ids unique to this test run) and their device."""

    device: Device
    transport: MqttCommandTransport
    twins: dict[str, Interface]
    cnc: str
    imm: str
    conveyor: str
    inspection: str


@pytest.fixture(scope="module")
def plant(models: ModelSet) -> Iterator[Plant]:
    run = uuid.uuid4().hex[:8]
    ids = {CNC: f"cnc-{run}", IMM: f"imm-{run}", CONVEYOR: f"conv-{run}", INSPECTION: f"insp-{run}"}
    twins = {twin: models.interface(model) for model, twin in ids.items()}
    with (
        Device(list(twins)) as device,
        MqttCommandTransport(ENDPOINT) as transport,
    ):
        yield Plant(device, transport, twins, ids[CNC], ids[IMM], ids[CONVEYOR], ids[INSPECTION])


@dataclass
class Rig:
    service: CommandService
    audit: AuditLog
    alarms: AlarmBoard
    clock: Clock
    plant: Plant
    seen: list[CommandRecord] = field(default_factory=list)


@pytest.fixture
def rig(plant: Plant, sample_policy: SafetyPolicy, tmp_path: Path) -> Iterator[Rig]:
    plant.device.replies.clear()
    plant.device.received.clear()
    alarms, clock = AlarmBoard(), Clock()
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        service = CommandService(
            lambda twin: plant.twins[twin],
            lambda _twin: plant.transport,
            sample_policy,
            audit,
            alarms,
            clock,
            timeout=5.0,  # a real broker round trip; a loaded CI machine took over 0.5 s
        )
        rig = Rig(service, audit, alarms, clock, plant)
        service.add_listener(rig.seen.append)
        yield rig


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def rows(audit: AuditLog, command_id: str) -> list[tuple[str, str]]:
    """(action, status) of an invocation's audit rows, oldest first."""
    return [(e.action, e.status) for e in reversed(audit.query(correlation_id=command_id))]


# -- the policy on its own ----------------------------------------------------------------


def test_sample_policy_fits_the_sample_models(
    sample_policy: SafetyPolicy, models: ModelSet
) -> None:
    assert sample_policy.problems(models.interfaces.values()) == []
    assert {rule.model_id for rule in sample_policy.rules} == {CNC, IMM, CONVEYOR, INSPECTION}
    assert sample_policy.horizon == 60


def test_policy_errors_name_the_field_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        SafetyPolicy.from_config(
            {
                "models": {
                    CNC: {
                        "setSpindleSpeed": {
                            "bounds": {"rpm": {"min": 5, "max": 1}},
                            "rateLimit": {"max": "10", "window": 0},
                            "colour": "red",
                        }
                    },
                    "not a dtmi": {},
                }
            }
        )
    problems = "\n".join(caught.value.problems)
    assert f"models.{CNC}.setSpindleSpeed.bounds.rpm: min 5.0 is above max 1.0" in problems
    assert "rateLimit.max: Input should be a valid integer [int_type]" in problems
    assert "rateLimit.window: Input should be greater than 0 [greater_than]" in problems
    assert "colour: Extra inputs are not permitted [extra_forbidden]" in problems
    assert "'not a dtmi' is not a DTMI" in problems

    with pytest.raises(PolicyError, match="viewer role may never invoke"):
        SafetyPolicy.from_config({"models": {CNC: {"start": {"roles": ["viewer"]}}}})
    with pytest.raises(PolicyError, match="not a bounds path"):
        SafetyPolicy.from_config({"models": {CNC: {"x": {"bounds": {"a..b": {"max": 1}}}}}})
    with pytest.raises(PolicyError, match="give min, max or allowed"):
        SafetyPolicy.from_config({"models": {CNC: {"x": {"bounds": {"a": {}}}}}})
    (tmp_path / "broken.json").write_text('{"models": ')
    with pytest.raises(PolicyError, match=r"broken\.json: not JSON"):
        SafetyPolicy.from_file(tmp_path / "broken.json")
    with pytest.raises(PolicyError, match="cannot read it"):
        SafetyPolicy.from_file(tmp_path / "missing.json")


def decide(
    policy: SafetyPolicy,
    interface: Interface,
    command: str,
    request: Any,
    *,
    user: Principal = ALICE,
    alarms: AlarmBoard | None = None,
    counter: InvocationCounter | None = None,
    now: float = 0.0,
) -> tuple[Verdict, str, str]:
    decision = policy.decide(
        interface,
        interface.commands[command],
        request,
        twin_id="t-1",
        user=user,
        alarms=alarms or AlarmBoard(),
        counter=counter or InvocationCounter(policy.horizon),
        now=now,
    )
    return decision.verdict, decision.rule, decision.reason


def test_bounds_and_hazard_ranges(sample_policy: SafetyPolicy, models: ModelSet) -> None:
    cnc, imm = models.interface(CNC), models.interface(IMM)
    assert decide(sample_policy, cnc, "setSpindleSpeed", 12000)[0] is Verdict.ALLOW
    assert decide(sample_policy, cnc, "setSpindleSpeed", 24000)[0] is Verdict.ALLOW
    verdict, rule, reason = decide(sample_policy, cnc, "setSpindleSpeed", 24000.5)
    assert (verdict, rule) == (Verdict.DENY, "bounds")
    assert reason == f"rpm: 24000.5 is above the maximum 24000 ({CNC} setSpindleSpeed)"
    assert "below the minimum 0" in decide(sample_policy, cnc, "setSpindleSpeed", -1)[2]

    assert decide(sample_policy, imm, "setBarrelTemperature", 230)[0] is Verdict.ALLOW
    verdict, rule, reason = decide(sample_policy, imm, "setBarrelTemperature", 300)
    assert (verdict, rule) == (Verdict.NEEDS_APPROVAL, "hazardous")
    assert reason.startswith("temperature: 300 is above the maximum 260 of the safe range")
    assert decide(sample_policy, imm, "setBarrelTemperature", 351)[:2] == (Verdict.DENY, "bounds")


def test_rules_of_a_base_model_apply_to_models_extending_it(models: ModelSet) -> None:
    policy = SafetyPolicy.from_config(
        {"models": {EQUIPMENT: {"start": {"hazardous": True}, "setSpeed": {"roles": ["admin"]}}}}
    )
    assert decide(policy, models.interface(CNC), "start", None)[:2] == (
        Verdict.NEEDS_APPROVAL,
        "hazardous",
    )
    verdict, rule, reason = decide(policy, models.interface(CONVEYOR), "setSpeed", 1.0)
    assert (verdict, rule) == (Verdict.DENY, "roles")
    assert reason == "setSpeed needs one of the roles admin; alice has operator"
    # Every matching rule applies: a specific rule cannot loosen the base model's.
    policy = SafetyPolicy.from_config(
        {
            "models": {
                EQUIPMENT: {"setSpeed": {"bounds": {"speed": {"max": 1}}}},
                CONVEYOR: {"setSpeed": {"bounds": {"speed": {"max": 3}}}},
            }
        }
    )
    assert decide(policy, models.interface(CONVEYOR), "setSpeed", 2.0)[1] == "bounds"


def test_roles(sample_policy: SafetyPolicy, models: ModelSet) -> None:
    cnc = models.interface(CNC)
    for user in (BOB, Principal("ada", frozenset({"admin"}))):
        assert decide(sample_policy, cnc, "stop", None, user=user)[0] is Verdict.ALLOW
    for user in (VIC, Principal("nobody", frozenset()), Principal("x", frozenset({"guest"}))):
        assert decide(sample_policy, cnc, "stop", None, user=user)[:2] == (Verdict.DENY, "roles")
    custom = SafetyPolicy.from_config({"models": {CNC: {"stop": {"roles": ["maintenance"]}}}})
    fitter = Principal("fred", frozenset({"maintenance", "viewer"}))
    assert decide(custom, cnc, "stop", None, user=fitter)[0] is Verdict.ALLOW
    assert decide(custom, cnc, "stop", None, user=BOB)[1] == "roles"


def test_interlocks(sample_policy: SafetyPolicy, models: ModelSet) -> None:
    cnc, imm = models.interface(CNC), models.interface(IMM)
    board = AlarmBoard()
    assert decide(sample_policy, cnc, "start", None, alarms=board)[0] is Verdict.ALLOW
    board.alarms["t-1"] = [Alarm("spindleOverTemperature", 2, 1.0)]
    verdict, rule, reason = decide(sample_policy, cnc, "start", None, alarms=board)
    assert (verdict, rule) == (Verdict.DENY, "interlock")
    assert "alarm 'spindleOverTemperature' (severity 2) is active on t-1" in reason
    assert "interlock 'noActiveAlarm'" in reason
    # setSpindleSpeed only refuses on severity 4 and up; stop is never interlocked.
    assert decide(sample_policy, cnc, "setSpindleSpeed", 100, alarms=board)[0] is Verdict.ALLOW
    assert decide(sample_policy, cnc, "stop", None, alarms=board)[0] is Verdict.ALLOW
    board.alarms["t-1"].append(Alarm("spindleVibration", 4, 2.0))
    assert decide(sample_policy, cnc, "setSpindleSpeed", 100, alarms=board)[1] == "interlock"
    # Named alarms: only those.
    assert decide(sample_policy, imm, "setBarrelTemperature", 200, alarms=board)[0] is (
        Verdict.ALLOW
    )
    board.alarms["t-1"] = [Alarm("heaterFault", 1, 3.0)]
    assert decide(sample_policy, imm, "setBarrelTemperature", 200, alarms=board)[1] == "interlock"
    # Alarms that cannot be read refuse interlocked commands: fail closed.
    board.broken = True
    verdict, rule, reason = decide(sample_policy, cnc, "start", None, alarms=board)
    assert (verdict, rule) == (Verdict.DENY, "interlock")
    assert "the alarms of t-1 are unknown (alarm service unreachable)" in reason
    assert decide(sample_policy, cnc, "stop", None, alarms=board)[0] is Verdict.ALLOW


def test_a_policy_that_does_not_fit_refuses(models: ModelSet) -> None:
    policy = SafetyPolicy.from_config(
        {
            "models": {
                CNC: {
                    "setSpindleSpeed": {"bounds": {"speed": {"max": 1}}},
                    "start": {"bounds": {"x": {"max": 1}}},
                    "launch": {},
                },
                INSPECTION: {"inspect": {"bounds": {"part.weight": {"max": 1}}}},
                "dtmi:com:example:Missing;1": {"start": {}},
            }
        }
    )
    assert policy.problems(models.interfaces.values()) == [
        f"{CNC} setSpindleSpeed: bounds path 'speed': the request of setSpindleSpeed is named 'rpm'",
        f"{CNC} start: bounds path 'x': start takes no request",
        f"{CNC} launch: neither the model nor one extending it has the command",
        f"{INSPECTION} inspect: bounds path 'part.weight': part has no field 'weight'",
        "dtmi:com:example:Missing;1 start: no model dtmi:com:example:Missing;1",
    ]
    verdict, rule, reason = decide(policy, models.interface(CNC), "setSpindleSpeed", 5)
    assert (verdict, rule) == (Verdict.DENY, "policy")
    assert "bounds path 'speed'" in reason


def test_bounds_inside_objects_and_allowed_values(models: ModelSet) -> None:
    policy = SafetyPolicy.from_config(
        {"models": {INSPECTION: {"inspect": {"bounds": {"part.imageUri": {"allowed": ["a"]}}}}}}
    )
    station = models.interface(INSPECTION)
    part = {"partId": "p-1", "imageUri": "a"}
    assert decide(policy, station, "inspect", part)[0] is Verdict.ALLOW
    assert decide(policy, station, "inspect", {"partId": "p-1"})[0] is Verdict.ALLOW  # absent
    verdict, rule, reason = decide(policy, station, "inspect", {**part, "imageUri": "b"})
    assert (verdict, rule) == (Verdict.DENY, "bounds")
    assert reason.startswith('part.imageUri: "b" is not one of the allowed values "a"')


OVEN = "dtmi:test:Oven;1"
OVEN_MODEL = {
    "@context": "dtmi:dtdl:context;3",
    "@id": OVEN,
    "@type": "Interface",
    "contents": [
        {
            "@type": "Command",
            "name": "runRecipe",
            "request": {
                "name": "recipe",
                "schema": {
                    "@type": "Object",
                    "fields": [
                        {
                            "name": "steps",
                            "schema": {
                                "@type": "Array",
                                "elementSchema": {
                                    "@type": "Object",
                                    "fields": [{"name": "temperature", "schema": "double"}],
                                },
                            },
                        },
                        {
                            "name": "zones",
                            "schema": {
                                "@type": "Map",
                                "mapKey": {"name": "zone", "schema": "string"},
                                "mapValue": {"name": "power", "schema": "double"},
                            },
                        },
                    ],
                },
            },
        }
    ],
}


def test_bounds_on_every_array_element_and_map_value() -> None:
    oven = parse_models([json.dumps(OVEN_MODEL)]).interface(OVEN)
    policy = SafetyPolicy.from_config(
        {
            "models": {
                OVEN: {
                    "runRecipe": {
                        "bounds": {
                            "recipe.steps.*.temperature": {"max": 250},
                            "recipe.zones.*": {"min": 0, "max": 100},
                        }
                    }
                }
            }
        }
    )
    assert policy.problems([oven]) == []
    recipe = {"steps": [{"temperature": 180}, {"temperature": 260}], "zones": {"top": 50}}
    verdict, rule, reason = decide(policy, oven, "runRecipe", recipe)
    assert (verdict, rule) == (Verdict.DENY, "bounds")
    assert reason.startswith("recipe.steps[1].temperature: 260 is above the maximum 250")
    recipe = {"steps": [{"temperature": 180}], "zones": {"top": 50, "bottom": 120}}
    assert decide(policy, oven, "runRecipe", recipe)[2].startswith(
        "recipe.zones.bottom: 120 is above the maximum 100"
    )
    assert decide(policy, oven, "runRecipe", {"steps": [], "zones": {}})[0] is Verdict.ALLOW
    wrong = SafetyPolicy.from_config(
        {"models": {OVEN: {"runRecipe": {"bounds": {"recipe.steps.temperature": {"max": 1}}}}}}
    )
    assert wrong.problems([oven]) == [
        f"{OVEN} runRecipe: bounds path 'recipe.steps.temperature': recipe.steps is not an Object"
    ]


def test_rate_limit_counts_per_twin_and_window(
    sample_policy: SafetyPolicy, models: ModelSet
) -> None:
    cnc, counter = models.interface(CNC), InvocationCounter(sample_policy.horizon)
    for second in range(10):
        assert decide(sample_policy, cnc, "setSpindleSpeed", 1, counter=counter)[0] is (
            Verdict.ALLOW
        )
        counter.add("t-1", "setSpindleSpeed", float(second))
    verdict, rule, reason = decide(sample_policy, cnc, "setSpindleSpeed", 1, counter=counter, now=9)
    assert (verdict, rule) == (Verdict.DENY, "rateLimit")
    assert reason.startswith("setSpindleSpeed was sent to t-1 10 times in the last 60 s")
    assert decide(sample_policy, cnc, "setSpindleSpeed", 1, counter=counter, now=60.5)[0] is (
        Verdict.ALLOW
    )
    assert decide(sample_policy, cnc, "stop", None, counter=counter, now=9)[0] is Verdict.ALLOW


# -- the service, end to end over MQTT ------------------------------------------------------


def test_an_allowed_command_is_sent_and_audited(rig: Rig) -> None:
    cnc = rig.plant.cnc
    record = run(rig.service.invoke(ALICE, cnc, "setSpindleSpeed", 12000))

    assert record.status is CommandStatus.SUCCEEDED
    assert (record.reply_status, record.decision, record.model_id) == (200, "allow", CNC)
    assert (f"{cnc}/setSpindleSpeed", 12000) in rig.plant.device.received
    assert [r.status for r in rig.seen] == [CommandStatus.SENT, CommandStatus.SUCCEEDED]
    assert rows(rig.audit, record.id) == [("invoke", "sent"), ("reply", "succeeded")]
    entry = rig.audit.query(correlation_id=record.id, limit=1)[0]
    assert (entry.user, entry.roles, entry.twin, entry.command) == (
        "alice",
        frozenset({"operator"}),
        cnc,
        "setSpindleSpeed",
    )
    assert (entry.request, entry.model, entry.time) == (12000, CNC, rig.clock.now)
    assert rig.service.get(record.id) == record


def test_every_refusal_is_audited(rig: Rig) -> None:
    cnc = rig.plant.cnc
    denied = run(rig.service.invoke(ALICE, cnc, "setSpindleSpeed", 30000))
    assert (denied.status, denied.decision) == (CommandStatus.DENIED, "deny")
    assert denied.reason == f"bounds: rpm: 30000 is above the maximum 24000 ({CNC} setSpindleSpeed)"
    viewer = run(rig.service.invoke(VIC, cnc, "stop"))
    assert viewer.status is CommandStatus.DENIED
    assert viewer.reason is not None and viewer.reason.startswith("roles: stop needs one of")
    invalid = run(rig.service.invoke(ALICE, cnc, "setSpindleSpeed", "fast"))
    assert invalid.status is CommandStatus.INVALID
    assert invalid.reason == 'request: rpm: expected a number, got "fast" [type]'

    for record in (denied, viewer, invalid):
        assert rows(rig.audit, record.id) == [("invoke", str(record.status))]
    assert rig.audit.query(correlation_id=invalid.id)[0].reason == invalid.reason
    assert all(request[1] != 30000 for request in rig.plant.device.received)


def test_start_is_interlocked_while_an_alarm_is_active(rig: Rig) -> None:
    cnc = rig.plant.cnc
    rig.alarms.alarms[cnc] = [Alarm("spindleOverTemperature", 3, rig.clock.now - 5)]
    refused = run(rig.service.invoke(BOB, cnc, "start"))
    assert refused.status is CommandStatus.DENIED
    assert refused.reason is not None and refused.reason.startswith(
        f"interlock: alarm 'spindleOverTemperature' (severity 3) is active on {cnc}"
    )
    rig.alarms.alarms[cnc] = []
    assert run(rig.service.invoke(BOB, cnc, "start")).status is CommandStatus.SUCCEEDED


def test_rate_limit_across_invocations(rig: Rig) -> None:
    cnc = rig.plant.cnc

    async def burst() -> list[CommandStatus]:
        out = []
        for _ in range(11):
            out.append((await rig.service.invoke(ALICE, cnc, "setSpindleSpeed", 1000)).status)
            rig.clock.now += 1
        return out

    statuses = run(burst())
    assert statuses == [CommandStatus.SUCCEEDED] * 10 + [CommandStatus.DENIED]
    assert rig.seen[-1].reason is not None and rig.seen[-1].reason.startswith("rateLimit:")
    # Refusals do not count: once the window has moved on, commands go out again.
    rig.clock.now += 50
    assert run(rig.service.invoke(ALICE, cnc, "setSpindleSpeed", 1000)).status is (
        CommandStatus.SUCCEEDED
    )


def test_hazardous_commands_wait_for_a_second_user(rig: Rig) -> None:
    imm = rig.plant.imm
    pending = run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 300))
    assert (pending.status, pending.decision) == (CommandStatus.PENDING_APPROVAL, "needsApproval")
    assert rig.service.list_pending() == [pending]
    assert all(twin != f"{imm}/setBarrelTemperature" for twin, _ in rig.plant.device.received)

    with pytest.raises(ApprovalError, match="alice invoked the command, so a second user"):
        run(rig.service.approve(ALICE, pending.id))
    with pytest.raises(ApprovalError, match="approve needs the role engineer or admin"):
        run(rig.service.approve(CAROL, pending.id))
    with pytest.raises(CommandNotFound):
        run(rig.service.approve(BOB, "no-such-id"))
    assert rig.service.list_pending() == [pending]

    rig.clock.now += 30
    done = run(rig.service.approve(BOB, pending.id))
    assert (done.status, done.approver, done.user) == (CommandStatus.SUCCEEDED, "bob", "alice")
    assert (f"{imm}/setBarrelTemperature", 300) in rig.plant.device.received
    assert rig.service.list_pending() == []
    with pytest.raises(ApprovalError, match="is succeeded, not pendingApproval"):
        run(rig.service.approve(BOB, pending.id))

    history = list(reversed(rig.audit.query(correlation_id=pending.id)))
    assert [(e.action, e.status, e.approver, e.decision) for e in history] == [
        ("invoke", "pendingApproval", None, "needsApproval"),
        ("approve", "pendingApproval", "alice", "deny"),
        ("approve", "pendingApproval", "carol", "deny"),
        ("approve", "sent", "bob", "allow"),
        ("reply", "succeeded", "bob", "allow"),
    ]
    # Bob's approvals show up in his history too.
    assert {e.correlation_id for e in rig.audit.query(user="bob")} == {pending.id}


def test_rejected_withdrawn_and_expired_approvals(rig: Rig) -> None:
    imm = rig.plant.imm
    first = run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 280))
    rejected = run(rig.service.reject(BOB, first.id, "mould not loaded"))
    assert (rejected.status, rejected.approver) == (CommandStatus.REJECTED, "bob")
    assert rejected.reason == "rejected by bob: mould not loaded"
    with pytest.raises(ApprovalError, match="is rejected"):
        run(rig.service.approve(BOB, first.id))

    second = run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 280))
    with pytest.raises(ApprovalError, match="reject needs the role engineer or admin"):
        run(rig.service.reject(CAROL, second.id))
    withdrawn = run(rig.service.reject(ALICE, second.id))
    assert (withdrawn.status, withdrawn.approver) == (CommandStatus.REJECTED, None)

    third = run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 280))
    rig.clock.now += rig.service.approval_timeout
    assert rig.service.list_pending() == []
    expired = rig.service.get(third.id)
    assert expired is not None and expired.status is CommandStatus.REJECTED
    assert expired.reason == "approval expired: nobody approved it within 900 s"
    assert rows(rig.audit, third.id) == [("invoke", "pendingApproval"), ("expire", "rejected")]


def test_approval_checks_the_policy_again(rig: Rig) -> None:
    imm = rig.plant.imm
    pending = run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 300))
    rig.alarms.alarms[imm] = [Alarm("heaterFault", 2, rig.clock.now)]
    refused = run(rig.service.approve(BOB, pending.id))
    assert (refused.status, refused.approver) == (CommandStatus.DENIED, "bob")
    assert refused.reason is not None and refused.reason.startswith(
        "after approval: interlock: alarm 'heaterFault'"
    )


def test_replies_are_checked(rig: Rig) -> None:
    station, cnc = rig.plant.inspection, rig.plant.cnc
    part = {"partId": "p-1", "imageUri": "s3://parts/p-1.png"}
    replies = rig.plant.device.replies

    replies[(station, "inspect")] = {"status": 200, "response": {"defect": False, "score": 0.1}}
    ok = run(rig.service.invoke(ALICE, station, "inspect", part))
    assert (ok.status, ok.response) == (CommandStatus.SUCCEEDED, {"defect": False, "score": 0.1})
    assert ok.request == part and ok.request is not part  # a copy the caller cannot change

    replies[(station, "inspect")] = {"status": 200, "response": {"defect": "no", "score": 0.1}}
    bad = run(rig.service.invoke(ALICE, station, "inspect", part))
    assert (bad.status, bad.reply_status) == (CommandStatus.FAILED, 200)
    assert bad.reason == (
        "the device replied 200 but its response is invalid: "
        'result.defect: expected a boolean, got "no" [type]'
    )
    assert rig.audit.query(correlation_id=bad.id, limit=1)[0].response == {
        "defect": "no",
        "score": 0.1,
    }

    replies[(cnc, "stop")] = {"status": 200, "response": {"unexpected": 1}}
    assert "the command has no response" in (
        run(rig.service.invoke(ALICE, cnc, "stop")).reason or ""
    )

    replies[(cnc, "start")] = {"status": 409, "error": "door open"}
    busy = run(rig.service.invoke(ALICE, cnc, "start"))
    assert (busy.status, busy.error, busy.reason) == (
        CommandStatus.FAILED,
        "door open",
        "the device replied 409: door open",
    )

    replies[(cnc, "start")] = None  # silence
    rig.service.timeout = 0.5
    late = run(rig.service.invoke(ALICE, cnc, "start"))
    assert (late.status, late.reply_status) == (CommandStatus.TIMED_OUT, 504)
    assert rows(rig.audit, late.id) == [("invoke", "sent"), ("reply", "timedOut")]


HUGE = len(json.dumps({"partId": "x" * 100_000}))
HOSTILE_IDS = [
    "x'; DROP TABLE command_audit; --",
    "twins/#",
    "cnc-1\x00",
    "\ud800",
    "💥" * 300,
    "",
    "a\nb",
]


def test_hostile_requests_are_invalid_and_audited(rig: Rig) -> None:
    cnc, station = rig.plant.cnc, rig.plant.inspection
    nested: Any = 1
    for _ in range(100):
        nested = {"partId": nested}
    cases: list[tuple[str, str, Any, str]] = [
        (cnc, "setSpindleSpeed", None, "request: rpm: the command requires a request payload"),
        (cnc, "setSpindleSpeed", True, "request: rpm: expected a number, got true [type]"),
        (cnc, "setSpindleSpeed", float("nan"), "request: not a JSON value"),
        (cnc, "setSpindleSpeed", {1, 2}, "request: not a JSON value"),
        (cnc, "start", {"now": True}, "request: start: the command takes no request payload"),
        (cnc, "selfDestruct", None, f"command: {CNC} has no command 'selfDestruct'"),
        (cnc, "start; rm -rf /", None, "command: not a DTDL command name"),
        (station, "inspect", {"partId": "x" * 100_000}, f"request: {HUGE} bytes, more than"),
        (station, "inspect", {"partId": 7, "extra": 1}, "request: part.partId: expected a string"),
        (station, "inspect", nested, "request: "),
        ("cnc-9", "start", None, "twinId: no twin 'cnc-9'"),
        *((twin, "start", None, "twinId: ") for twin in HOSTILE_IDS),
    ]
    for twin, command, request, reason in cases:
        record = run(rig.service.invoke(ALICE, twin, command, request))
        assert record.status is CommandStatus.INVALID, (twin, command)
        assert record.reason is not None and record.reason.startswith(reason), record.reason
        assert rows(rig.audit, record.id) == [("invoke", "invalid")]
    huge = rig.audit.query(twin=station, limit=10)
    assert any(e.request == f"<{HUGE} bytes, not kept>" for e in huge)
    injected = rig.audit.query(twin=HOSTILE_IDS[0])
    assert [e.twin for e in injected] == [HOSTILE_IDS[0]]
    assert len(rig.audit.query(limit=1000)) == len(cases)
    assert rig.plant.device.received == []


def test_the_audit_log_is_append_only_and_queryable(rig: Rig, tmp_path: Path) -> None:
    cnc, conveyor = rig.plant.cnc, rig.plant.conveyor
    run(rig.service.invoke(ALICE, cnc, "stop"))
    rig.clock.now += 10
    run(rig.service.invoke(BOB, conveyor, "setSpeed", 1.5))
    rig.clock.now += 10
    run(rig.service.invoke(BOB, conveyor, "setSpeed", 9.0))

    assert len(rig.audit.query()) == 5
    assert {e.twin for e in rig.audit.query(user="bob")} == {conveyor}
    assert [e.status for e in rig.audit.query(twin=conveyor, since=rig.clock.now)] == ["denied"]
    assert len(rig.audit.query(until=rig.clock.now - 10)) == 2
    assert len(rig.audit.query(limit=2)) == 2
    for bad in ({"limit": 0}, {"limit": "5"}, {"since": "yesterday"}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}: must be"):
            rig.audit.query(**bad)

    db = sqlite3.connect(rig.audit.path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit_log SET outcome = 'succeeded'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit_log")
    db.close()
    # Reopening keeps the rows.
    with AuditLog(rig.audit.path) as again:
        assert len(again.query()) == 5


def test_nothing_is_sent_without_an_audit_row(rig: Rig, plant: Plant) -> None:
    rig.audit.close()
    record = run(rig.service.invoke(ALICE, plant.cnc, "stop"))
    assert (record.status, record.reason) == (CommandStatus.FAILED, "the audit log is unavailable")
    assert plant.device.received == []


def test_transport_and_listener_failures_are_contained(
    plant: Plant, sample_policy: SafetyPolicy, tmp_path: Path
) -> None:
    def no_transport(twin: str) -> MqttCommandTransport:
        raise LookupError(f"no gateway for {twin}")

    def broken_listener(record: CommandRecord) -> None:
        raise RuntimeError("listener bug")

    with AuditLog(tmp_path / "audit.sqlite") as audit:
        service = CommandService(
            lambda twin: plant.twins[twin], no_transport, sample_policy, audit, AlarmBoard()
        )
        service.add_listener(broken_listener)
        record = run(service.invoke(ALICE, plant.cnc, "stop"))
        assert record.status is CommandStatus.FAILED
        assert record.reason == f"no transport to the twin: no gateway for {plant.cnc}"
        assert rows(audit, record.id) == [("invoke", "failed")]


def test_listeners_can_be_removed(rig: Rig) -> None:
    statuses: list[str] = []

    def listener(record: CommandRecord) -> None:
        statuses.append(record.status)

    rig.service.add_listener(listener)
    run(rig.service.invoke(ALICE, rig.plant.cnc, "stop"))
    rig.service.remove_listener(listener)
    run(rig.service.invoke(ALICE, rig.plant.cnc, "stop"))
    assert statuses == ["sent", "succeeded"]


def test_pending_approvals_are_bounded(rig: Rig) -> None:
    rig.service.max_pending = 2
    imm = rig.plant.imm
    first, second, third = (
        run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 300)) for _ in range(3)
    )
    assert [first.status, second.status] == [CommandStatus.PENDING_APPROVAL] * 2
    assert (third.status, third.reason) == (
        CommandStatus.DENIED,
        "approval: 2 commands already await approval",
    )
    run(rig.service.reject(BOB, first.id, "too many"))
    assert run(rig.service.invoke(ALICE, imm, "setBarrelTemperature", 300)).status is (
        CommandStatus.PENDING_APPROVAL
    )
