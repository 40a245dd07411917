"""Subscribers that ask the same thing share one subscription.

A thousand dashboards watching a hundred twins send a hundred distinct subscriptions. Each
distinct one runs once, as a *group*: one bus subscription, one execution and one JSON
encoding per event, whose frame is then written to every member's socket. Run once per
subscriber, strawberry's and graphql-core's layers per event cost several times the
socket write itself: 1,000 subscribers of 100 twins at 10 updates/s took the server 250 µs
of CPU per delivered update that way (it kept up with 3,500/s), 76 µs shared (10,000/s).

Only root fields whose answer depends on nothing but the arguments and the caller's roles
are shared (:data:`SHAREABLE`); the group's key also holds the schema, the query text, the
variables and those roles. A subscriber that joins a running group gets the events from
then on, as it would from a subscription of its own.

Each member keeps a bounded queue of its own: a slow socket loses its oldest updates and
never holds up the others. Its next update then reports them in the field ``missed``
(where the query selected that field), added to what the group itself missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
)
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

__all__ = [
    "SHAREABLE",
    "End",
    "Group",
    "Member",
    "SharedRoot",
    "SubscriptionGroups",
    "Update",
    "shared_root",
]

log = logging.getLogger(__name__)

#: Root subscription fields answered alike for everyone with the same arguments and
#: roles. Not ``commandStatus``: it starts with the command as it stands when asked.
SHAREABLE = frozenset({"telemetry", "twinChanged", "alerts"})

#: Frames one member may hold before the oldest are dropped (as the bus's buffer).
MEMBER_BUFFER = 1000


@dataclass(frozen=True)
class SharedRoot:
    """What a shareable subscription answers under: ``data[key]``, and in it
    ``missed_key`` (None: the query does not ask for ``missed``)."""

    key: str
    missed_key: str | None


@lru_cache(maxsize=1024)
def shared_root(query: str, operation_name: str | None) -> SharedRoot | None:
    """The root of ``query``'s operation if it is one shareable subscription field, else
    None (queries, mutations, several root fields, text that does not parse: strawberry
    answers those as usual)."""
    try:
        document = parse(query)
    except GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation is not OperationType.SUBSCRIPTION:
        return None
    selections = operations[0].selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    root = selections[0]
    if root.name.value not in SHAREABLE or root.selection_set is None:
        return None
    return SharedRoot(_response_key(root), _missed_key(document, root.selection_set, set()))


def _response_key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _missed_key(document: DocumentNode, selections: SelectionSetNode, seen: set[str]) -> str | None:
    for selection in selections.selections:
        if isinstance(selection, FieldNode) and selection.name.value == "missed":
            return _response_key(selection)
        nested: SelectionSetNode | None = None
        if isinstance(selection, InlineFragmentNode):
            nested = selection.selection_set
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            nested = next(
                (
                    d.selection_set
                    for d in document.definitions
                    if isinstance(d, FragmentDefinitionNode)
                    and d.name.value == selection.name.value
                ),
                None,
            )
        found = None if nested is None else _missed_key(document, nested, seen)
        if found is not None:
            return found
    return None


class Update:
    """One answer of a group: its ``payload`` and that payload's JSON, made once."""

    __slots__ = ("json", "payload")

    def __init__(self, result: ExecutionResult) -> None:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            payload["extensions"] = result.extensions
        self.payload = payload
        self.json = json.dumps(payload, separators=(",", ":"))


@dataclass(frozen=True)
class End:
    """How a group ended: ``complete``, ``pre_execution_error`` (``result``: its
    errors), ``incremental`` (a @defer or @stream query) or ``failed``."""

    kind: str
    result: PreExecutionError | None = None


@dataclass(eq=False)
class Member:
    """One subscriber: its operation's id and the updates it has yet to send."""

    operation_id: str
    root: SharedRoot
    updates: deque[Update] = field(default_factory=deque)
    missed: int = 0
    end: End | None = None
    _waiter: asyncio.Future[None] | None = None

    def offer(self, update: Update) -> None:
        if len(self.updates) >= MEMBER_BUFFER:
            self.updates.popleft()
            self.missed += 1
        self.updates.append(update)
        self._wake()

    def finish(self, end: End) -> None:
        self.end = end
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def deliver(self, send: Callable[[str], Awaitable[None]]) -> End:
        """Send this member's frames, in order, until its group ends; how it ended."""
        id_json = json.dumps(self.operation_id)
        while True:
            while self.updates:
                update = self.updates.popleft()
                await send(f'{{"id":{id_json},"type":"next","payload":{self._json(update)}}}')
            if self.end is not None:
                return self.end
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    def _json(self, update: Update) -> str:
        missed, self.missed = self.missed, 0
        answer = update.payload["data"]
        answer = None if answer is None else answer.get(self.root.key)
        key = self.root.missed_key
        if not missed or key is None or not isinstance(answer, dict):
            return update.json
        already = answer.get(key)  # absent where a directive skipped it
        if not isinstance(already, int):
            return update.json
        # This member fell behind: its own copy, with what it lost added to ``missed``.
        counted = {**answer, key: already + missed}
        patched = {**update.payload, "data": {self.root.key: counted}}
        return json.dumps(patched, separators=(",", ":"))


class Group:
    """One running subscription and the members it answers."""

    def __init__(self, groups: SubscriptionGroups, key: Hashable) -> None:
        self._groups = groups
        self.key = key
        self.members: set[Member] = set()
        self.task: asyncio.Task[None] | None = None

    async def run(
        self,
        schema: strawberry.Schema,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        root_value: Any,
    ) -> None:
        end = End("complete")
        try:
            source = await schema.stream(
                query,
                variable_values=variables,
                context_value=context,
                root_value=root_value,
                operation_name=operation_name,
            )
            async with aclosing(source):
                first = True
                async for result in source:
                    if first and isinstance(result, PreExecutionError):
                        end = End("pre_execution_error", result)
                        break
                    if not isinstance(result, ExecutionResult):
                        end = End("incremental")
                        break
                    first = False
                    update = Update(result)
                    for member in self.members:
                        member.offer(update)
        except Exception:  # not a cancellation: the last member left, or shutdown
            log.exception("shared subscription %r failed", query[:200])
            end = End("failed")
        finally:
            self._groups.forget(self)
            for member in self.members:
                member.finish(end)


class SubscriptionGroups:
    """The running groups, by key. They live on the API's event loop."""

    def __init__(self) -> None:
        self._groups: dict[Hashable, Group] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def members(self) -> int:
        return sum(len(g.members) for g in self._groups.values())

    def join(
        self,
        key: Hashable,
        member: Member,
        start: Callable[[Group], Awaitable[None]],
    ) -> Group:
        """Add ``member`` to the group of ``key``, started with ``start(group)`` if
        there is none."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(self, key)
            group.task = asyncio.get_running_loop().create_task(start(group))
        group.members.add(member)
        return group

    def leave(self, group: Group, member: Member) -> None:
        group.members.discard(member)
        if not group.members and group.task is not None and not group.task.done():
            self.forget(group)
            group.task.cancel()

    def forget(self, group: Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
