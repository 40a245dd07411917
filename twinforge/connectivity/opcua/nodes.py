"""The plant's OPC UA address space and how its nodes map onto twin fields.

Convention (served by the plant simulator and by real gateways configured like it), in the
namespace ``urn:twinforge:plant`` (its index is resolved by URI, never assumed):

* one object per twin, ``ns=<i>;s={twinId}``, under the Objects folder;
* one Double variable per telemetry field, ``ns=<i>;s={twinId}.{field}``, with source
  timestamps; writable properties are writable variables named the same way;
* one method per DTDL command, ``ns=<i>;s={twinId}.{command}``, on the twin object;
* components (our extension): a child object ``ns=<i>;s={twinId}.{component}`` holding
  ``ns=<i>;s={twinId}.{component}.{field}`` variables.

Mappings may also be written by hand (a JSON list, see :func:`load_mappings`) for servers
that follow no convention; ``nsu=<uri>;s=...`` node ids are resolved on connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from asyncua import Client, ua

from twinforge.connectivity.opcua.security import ClientSecurity

log = logging.getLogger(__name__)

PLANT_NAMESPACE = "urn:twinforge:plant"
#: How long a server keeps the session of a client that vanished (ms); servers revise
#: larger requests down, with a warning per connect.
SESSION_TIMEOUT_MS = 60_000
MAX_TWIN_ID_LENGTH = 128
MAX_NAME_LENGTH = 512
_PARALLEL_BROWSES = 16
_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MappingError(ValueError):
    """Node mappings that break a rule; ``errors`` holds (location, rule) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{where}: {rule}" for where, rule in errors)
        super().__init__(f"invalid node mappings in {source}: {detail}")


@dataclass(frozen=True, slots=True)
class NodeMapping:
    """One OPC UA variable feeding one telemetry field of a twin (or of its component)."""

    node_id: str
    twin_id: str
    field: str
    component: str | None = None


def check_twin_id(value: str) -> str:
    """A twin id as the twin service accepts it: 1-128 characters, no control, not ``$``-led."""
    if not value:
        raise ValueError("must be a non-empty string")
    if len(value) > MAX_TWIN_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_TWIN_ID_LENGTH} characters")
    if _CONTROL.search(value) or value.startswith("$"):
        raise ValueError("may not start with $ or hold control characters")
    return value


def check_name(value: str) -> str:
    """A DTDL name (field, component, command, property)."""
    if len(value) > MAX_NAME_LENGTH or not _NAME.fullmatch(value):
        raise ValueError(
            "must be a DTDL name: letters, digits and _, starting with a letter, "
            f"not ending with _, at most {MAX_NAME_LENGTH} characters"
        )
    return value


def parse_node_id(value: str) -> ua.NodeId:
    """``ns=2;s=...``, ``nsu=urn:...;s=...``, ``i=85``...; ValueError names the rule."""
    try:
        return ua.NodeId.from_string(value)
    except Exception as exc:  # asyncua raises several types for malformed ids
        raise ValueError(
            f"must be an OPC UA node id like 'ns=2;s=press-1.temperature' ({exc})"
        ) from None


class _MappingEntry(pydantic.BaseModel):
    """The config-file form of :class:`NodeMapping`; validation only."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    node_id: str
    twin_id: str
    field: str
    component: str | None = None

    @pydantic.field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        parse_node_id(value)
        return value

    @pydantic.field_validator("twin_id")
    @classmethod
    def _twin_id(cls, value: str) -> str:
        return check_twin_id(value)

    @pydantic.field_validator("field", "component")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)


_ENTRIES = pydantic.TypeAdapter(list[_MappingEntry])


def parse_mappings(data: Any, *, source: str = "mappings") -> list[NodeMapping]:
    """Validate decoded JSON (a list of ``{"node_id", "twin_id", "field", "component"?}``).

    Two nodes feeding the same twin field would interleave their values, so that is an
    error too. Raises :class:`MappingError` listing every problem.
    """
    try:
        entries = _ENTRIES.validate_python(data)
    except pydantic.ValidationError as exc:
        raise MappingError(source, [_describe(err) for err in exc.errors()]) from None
    errors: list[tuple[str, str]] = []
    targets: dict[tuple[str, str | None, str], int] = {}
    for index, entry in enumerate(entries):
        target = (entry.twin_id, entry.component, entry.field)
        if target in targets:
            errors.append(
                (
                    f"[{index}]",
                    f"twin {entry.twin_id!r} field {_field_path(entry.component, entry.field)!r}"
                    f" is already mapped by [{targets[target]}]",
                )
            )
        targets.setdefault(target, index)
    if errors:
        raise MappingError(source, errors)
    return [NodeMapping(e.node_id, e.twin_id, e.field, e.component) for e in entries]


def load_mappings(path: str | Path) -> list[NodeMapping]:
    """Read and validate a JSON mapping file (see :func:`parse_mappings`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(str(path), [("file", f"cannot be read ({exc.strerror})")]) from None
    except ValueError as exc:
        raise MappingError(str(path), [("file", f"is not JSON ({exc})")]) from None
    return parse_mappings(data, source=str(path))


def _describe(err: Any) -> tuple[str, str]:
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"])
    rule = err["msg"].removeprefix("Value error, ")
    return where or "mappings", rule


def _field_path(component: str | None, field: str) -> str:
    return field if component is None else f"{component}/{field}"


def member_node_id(ns: int, twin_id: str, name: str) -> ua.NodeId:
    """A twin's field, property or command node: ``ns=<ns>;s={twinId}.{name}``."""
    return ua.NodeId(f"{twin_id}.{name}", ns)


async def namespace_index(client: Client, uri: str) -> int:
    """The index of ``uri`` on the server; LookupError lists what the server has."""
    namespaces = await client.get_namespace_array()
    if uri not in namespaces:
        raise LookupError(f"namespace {uri!r} is not on the server (it has {namespaces})")
    return namespaces.index(uri)


def resolve_node_id(node_id: str, namespaces: list[str]) -> ua.NodeId:
    """A mapping's node id with any ``nsu=`` namespace URI turned into this server's index."""
    parsed = parse_node_id(node_id)
    uri = getattr(parsed, "NamespaceUri", None)
    if not uri:
        return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)
    if uri not in namespaces:
        raise LookupError(f"namespace {uri!r} is not on the server")
    return ua.NodeId(parsed.Identifier, namespaces.index(uri), parsed.NodeIdType)


async def discover_mappings(
    endpoint: str,
    namespace_uri: str = PLANT_NAMESPACE,
    *,
    security: ClientSecurity,
    include_writable: bool = False,
    timeout: float = 10.0,
) -> list[NodeMapping]:
    """Browse a server that follows the convention above and map every telemetry variable.

    Writable variables are properties, not telemetry, and are left out unless
    ``include_writable``. Nodes whose names are not DTDL names are skipped (logged).
    """
    client = Client(endpoint, timeout=timeout)
    client.session_timeout = SESSION_TIMEOUT_MS
    await security.connect(client)
    try:
        ns = await namespace_index(client, namespace_uri)
        twins = await _children(client.nodes.objects, ns, ua.NodeClass.Object)
        # A plant has thousands of twins: browse several at once, not one round trip each.
        limit = asyncio.Semaphore(_PARALLEL_BROWSES)

        async def one(twin: ua.ReferenceDescription) -> list[NodeMapping]:
            async with limit:
                return await _twin_mappings(client, twin, ns, include_writable)

        found = await asyncio.gather(*(one(twin) for twin in twins))
        return [mapping for twin_mappings in found for mapping in twin_mappings]
    finally:
        await client.disconnect()


async def _twin_mappings(
    client: Client, twin: ua.ReferenceDescription, ns: int, include_writable: bool
) -> list[NodeMapping]:
    twin_id = twin.NodeId.Identifier
    try:
        check_twin_id(twin_id)
    except ValueError as exc:
        log.warning("skipping OPC UA object %r: twin id %s", twin_id, exc)
        return []
    node = client.get_node(twin.NodeId)
    mappings = await _variables(client, node, twin_id, None, include_writable)
    for comp in await _children(node, ns, ua.NodeClass.Object):
        name = _suffix(comp.NodeId.Identifier, twin_id)
        if name is not None:
            comp_node = client.get_node(comp.NodeId)
            mappings += await _variables(client, comp_node, twin_id, name, include_writable)
    return mappings


async def _children(node: Any, ns: int, node_class: ua.NodeClass) -> list[ua.ReferenceDescription]:
    refs = await node.get_children_descriptions(nodeclassmask=node_class)
    return [
        ref
        for ref in refs
        if ref.NodeId.NamespaceIndex == ns and isinstance(ref.NodeId.Identifier, str)
    ]


async def _variables(
    client: Client, parent: Any, twin_id: str, component: str | None, include_writable: bool
) -> list[NodeMapping]:
    ns = parent.nodeid.NamespaceIndex
    refs = await _children(parent, ns, ua.NodeClass.Variable)
    prefix = twin_id if component is None else f"{twin_id}.{component}"
    named = [(ref, _suffix(ref.NodeId.Identifier, prefix)) for ref in refs]
    named = [(ref, name) for ref, name in named if name is not None]
    if not include_writable and named:
        nodes = [client.get_node(ref.NodeId) for ref, _ in named]
        levels = await client.read_attributes(nodes, ua.AttributeIds.AccessLevel)
        named = [
            (ref, name)
            for (ref, name), level in zip(named, levels, strict=True)
            if not _writable(level)
        ]
    return [NodeMapping(ref.NodeId.to_string(), twin_id, name, component) for ref, name in named]


def _writable(level: ua.DataValue) -> bool:
    bits = level.Value.Value if level.Value is not None else 0
    return bool((bits or 0) & ua.AccessLevelType.CurrentWrite)


def _suffix(identifier: str, prefix: str) -> str | None:
    """``{prefix}.{name}`` → name when it is a DTDL name, else None (logged)."""
    if not identifier.startswith(prefix + "."):
        return None
    name = identifier[len(prefix) + 1 :]
    try:
        return check_name(name)
    except ValueError:
        log.info("skipping OPC UA node %r: %r is not a DTDL name", identifier, name)
        return None
