"""Which subscriptions are shared, and what a member that falls behind is told."""

from __future__ import annotations

import asyncio
import json

import pytest
from strawberry.types import ExecutionResult

from twinforge.graphql.subscription_groups import (
    MEMBER_BUFFER,
    End,
    Member,
    SharedRoot,
    Update,
    shared_root,
)


@pytest.mark.parametrize(
    ("query", "operation_name", "expected"),
    [
        ("subscription { telemetry(twinId: 1) { values } }", None, SharedRoot("telemetry", None)),
        (
            "subscription { t: telemetry(twinId: 1) { values m: missed } }",
            None,
            SharedRoot("t", "m"),
        ),
        (
            "subscription { alerts { ...A } } fragment A on AlertEvent { ... { missed } }",
            None,
            SharedRoot("alerts", "missed"),
        ),
        (  # a fragment that spreads itself is refused by validation later; not a hang here
            "subscription { alerts { ...A } } fragment A on AlertEvent { ...A raised }",
            None,
            SharedRoot("alerts", None),
        ),
        (
            "subscription A { twinChanged { kind } } subscription B { alerts { raised } }",
            "B",
            SharedRoot("alerts", None),
        ),
        # Not shared: strawberry answers these as usual.
        ("subscription A { twinChanged { kind } } query B { me { name } }", None, None),
        ("subscription { commandStatus(id: 1) { status } }", None, None),  # starts per caller
        ("subscription { telemetry(twinId: 1) { values } alerts { raised } }", None, None),
        ("subscription { ... on Subscription { alerts { raised } } }", None, None),
        ("query { telemetry(twinId: 1) { values } }", None, None),
        ("subscription { telemetry(twinId: 1) { values }", None, None),  # does not parse
        ("subscription { telemetry(twinId: 1) }", None, None),  # no selection: invalid
        ("subscription A { alerts { raised } }", "B", None),  # no such operation
    ],
)
def test_shared_root(query: str, operation_name: str | None, expected: SharedRoot | None) -> None:
    assert shared_root(query, operation_name) == expected


def _update(n: int, missed: int = 0) -> Update:
    return Update(ExecutionResult(data={"t": {"n": n, "m": missed}}, errors=None))


async def _sent(member: Member, end: End | None = End("complete")) -> list[dict]:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    if end is not None:
        member.finish(end)
    assert await member.deliver(send) == end
    return [json.loads(text) for text in sent]


def test_a_member_that_falls_behind_loses_the_oldest_and_is_told_how_many() -> None:
    member = Member("op", SharedRoot("t", "m"))
    extra = 25
    for n in range(MEMBER_BUFFER + extra):
        member.offer(_update(n, missed=3 if n == extra else 0))
    frames = asyncio.run(_sent(member))
    assert len(frames) == MEMBER_BUFFER
    assert {(f["id"], f["type"]) for f in frames} == {("op", "next")}
    answers = [f["payload"]["data"]["t"] for f in frames]
    # The first it sends carries what it lost, added to what the group itself had missed.
    assert answers[0] == {"n": extra, "m": extra + 3}
    assert [a["n"] for a in answers] == list(range(extra, MEMBER_BUFFER + extra))
    assert all(a["m"] == 0 for a in answers[1:])


def test_a_member_whose_query_has_no_missed_field_just_loses_the_oldest() -> None:
    member = Member("op", SharedRoot("t", None))
    shared = [_update(n) for n in range(MEMBER_BUFFER + 1)]
    for update in shared:
        member.offer(update)
    frames = asyncio.run(_sent(member))
    assert [f["payload"] for f in frames] == [json.loads(u.json) for u in shared[1:]]


def test_members_share_the_encoded_answer_and_wait_for_the_next() -> None:
    # The shared JSON is made once per update, whatever the number of members.
    update = _update(7)
    assert update.json == '{"data":{"t":{"n":7,"m":0}}}'

    async def both() -> list[list[dict]]:
        members = [Member(f"op-{n}", SharedRoot("t", "m")) for n in range(2)]
        sent: list[list[str]] = [[], []]

        def sender(n: int):
            async def send(text: str) -> None:
                sent[n].append(text)

            return send

        tasks = [asyncio.create_task(m.deliver(sender(n))) for n, m in enumerate(members)]
        await asyncio.sleep(0)  # both wait: nothing yet
        assert sent == [[], []]
        for member in members:
            member.offer(update)
        await asyncio.sleep(0)
        for member in members:
            member.finish(End("complete"))
        assert [await task for task in tasks] == [End("complete")] * 2
        return [[json.loads(t) for t in texts] for texts in sent]

    assert asyncio.run(both()) == [
        [{"id": f"op-{n}", "type": "next", "payload": {"data": {"t": {"n": 7, "m": 0}}}}]
        for n in range(2)
    ]
