"""GraphQL types generated from DTDL interfaces.

Each interface becomes an object type implementing ``Twin``: a typed field per property
(enums become GraphQL enums, objects object types), the last value and the history of
each telemetry as typed points, a connection per relationship and an object per
component. Names come from the DTMI's last segment (``dtmi:com:acme:Pump;1`` is
``Pump``), spelled out in full where two models share it; a DTDL name that clashes with a
``Twin`` field gets a trailing underscore (DTDL names never end in one).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum as PyEnum
from typing import Any, NewType

import strawberry
from strawberry.scalars import JSON

from twinforge.graphql.pagination import Connection
from twinforge.graphql.types import (
    GenericTwin,
    Model,
    Relationship,
    TwinNode,
    load_series,
    relationship_page,
)
from twinforge.runtime.twin_service import StoredModel
from twinforge.twin_models import dtmi as dtmis
from twinforge.twin_models import elements as el

Convert = Callable[[Any], Any]

#: Names the generic schema uses; a generated type never takes one.
RESERVED_TYPE_NAMES = frozenset(
    {
        "Twin",
        "GenericTwin",
        "Model",
        "Relationship",
        "TelemetryPoint",
        "Alert",
        "Command",
        "CommandStatus",
        "DeadLetter",
        "AuditRecord",
        "ApiKey",
        "IssuedApiKey",
        "Me",
        "PageInfo",
        "Query",
        "Mutation",
        "Subscription",
        "JSON",
        "DateTime",
        "Long",
    }
)
_TWIN_FIELDS = frozenset(
    {
        "dtId",
        "etag",
        "modelId",
        "model",
        "document",
        "relationships",
        "incomingRelationships",
        "lastValues",
        "alerts",
        "telemetry",
    }
)

Long = NewType("Long", int)
#: For the schema's config: GraphQL's Int is 32-bit, DTDL's long is 64.
SCALARS = {
    Long: strawberry.scalar(
        name="Long", description="A 64-bit integer (DTDL long).", serialize=int, parse_value=int
    )
}


def _point(name: str, value_type: Any) -> type:
    cls = type(name, (), {"__annotations__": {"time": datetime, "value": value_type | None}})
    return strawberry.type(cls, description=f"A telemetry sample ({name[:-5].lower()}).")


FloatPoint = _point("FloatPoint", float)
IntPoint = _point("IntPoint", int)
LongPoint = _point("LongPoint", Long)
BooleanPoint = _point("BooleanPoint", bool)
StringPoint = _point("StringPoint", str)
JSONPoint = _point("JSONPoint", JSON)

_PRIMITIVES: dict[str, tuple[Any, type, type]] = {
    # DTDL primitive: (GraphQL type, Python type its values have, point type)
    "boolean": (bool, bool, BooleanPoint),
    "integer": (int, int, IntPoint),
    "long": (Long, int, LongPoint),
    "double": (float, float, FloatPoint),
    "float": (float, float, FloatPoint),
    "string": (str, str, StringPoint),
    "date": (str, str, StringPoint),
    "dateTime": (str, str, StringPoint),
    "time": (str, str, StringPoint),
    "duration": (str, str, StringPoint),
    "uuid": (str, str, StringPoint),
    "bytes": (str, str, StringPoint),
}


@dataclass
class SchemaTypes:
    """The types generated for one model set, and how to wrap documents in them."""

    twin_types: dict[str, type] = field(default_factory=dict)
    types: list[type] = field(default_factory=list)

    def twin(self, document: dict[str, Any]) -> TwinNode:
        """The document as an instance of its model's type (``GenericTwin`` if none)."""
        cls = self.twin_types.get(document["$metadata"]["$model"], GenericTwin)
        return cls(doc=document)

    def model(self, stored: StoredModel) -> Model:
        cls = self.twin_types.get(stored.id)
        name = None if cls is None else cls.__strawberry_definition__.name
        return Model(stored=stored, graphql_type=name)


def generate(interfaces: Iterable[el.Interface]) -> SchemaTypes:
    """Types for every interface (deterministic: the same models give the same schema)."""
    ordered = sorted(interfaces, key=lambda i: i.id)
    names = _type_names([i.id for i in ordered])
    builder = _Builder(set(names.values()))
    result = SchemaTypes()
    for interface in ordered:
        cls = builder.twin_type(interface, names[interface.id])
        result.twin_types[interface.id] = cls
    result.types = [*result.twin_types.values(), *builder.extra]
    return result


def _type_names(ids: list[str]) -> dict[str, str]:
    short: dict[str, list[str]] = {}
    for model_id in ids:
        short.setdefault(_graphql_name(dtmis.local_name(model_id)), []).append(model_id)
    names: dict[str, str] = {}
    for base, owners in short.items():
        for model_id in owners:
            unique = len(owners) == 1 and base not in RESERVED_TYPE_NAMES
            names[model_id] = base if unique else _full_name(model_id)
    return names


def _full_name(model_id: str) -> str:
    parsed = dtmis.Dtmi.parse(model_id)
    version = "" if parsed.major_version is None else f"V{parsed.major_version}"
    if parsed.minor_version is not None:
        version += f"_{parsed.minor_version}"
    return "_".join(_graphql_name(label) for label in parsed.labels) + version


def _graphql_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", text) or "X"
    if cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned[0].upper() + cleaned[1:]


class _Builder:
    """Makes the strawberry classes; ``extra`` collects the enum, object, component and
    edge types the twin types refer to."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = set(taken) | RESERVED_TYPE_NAMES
        self.extra: list[type] = []
        self._by_schema: dict[int, tuple[Any, Convert]] = {}

    def unique(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self.taken:
            candidate, n = f"{name}{n}", n + 1
        self.taken.add(candidate)
        return candidate

    # -- twins ---------------------------------------------------------------------

    def twin_type(self, interface: el.Interface, name: str) -> type:
        namespace: dict[str, Any] = {"__annotations__": {}}
        used = set(_TWIN_FIELDS)
        for content in sorted(interface.contents.values(), key=lambda c: c.name):
            field_name = _field_name(content.name, used)
            if isinstance(content, el.Property):
                gql, convert = self.output(content.schema, f"{name}_{content.name}")
                namespace[_attr(field_name)] = _property_field(
                    content, field_name, gql, convert, content.name
                )
            elif isinstance(content, el.Telemetry):
                point, convert = self.point(content.schema, f"{name}_{content.name}")
                namespace[_attr(field_name)] = _last_value_field(
                    content, field_name, point, convert
                )
                history = _field_name(f"{content.name}History", used)
                namespace[_attr(history)] = _history_field(content, history, point, convert)
            elif isinstance(content, el.Relationship):
                namespace[_attr(field_name)] = _relationship_field(content, field_name)
            elif isinstance(content, el.Component) and content.schema is not None:
                comp = self.component_type(content.schema, f"{name}_{content.name}")
                namespace[_attr(field_name)] = _component_field(content, field_name, comp)
        cls = type(name, (TwinNode,), namespace)
        return strawberry.type(cls, name=name, description=_describe(interface))

    def component_type(self, interface: el.Interface, name: str) -> type:
        namespace: dict[str, Any] = {"__annotations__": {"data": strawberry.Private[dict]}}
        used: set[str] = set()
        for content in sorted(interface.properties.values(), key=lambda c: c.name):
            field_name = _field_name(content.name, used)
            gql, convert = self.output(content.schema, f"{name}_{content.name}")
            namespace[_attr(field_name)] = _data_field(
                field_name, gql, convert, content.name, _describe(content)
            )
        if len(namespace) == 1:  # GraphQL types need a field
            namespace["raw"] = strawberry.field(resolver=_raw, description="The values.")
        type_name = self.unique(name)
        cls = strawberry.type(type(type_name, (), namespace), name=type_name)
        self.extra.append(cls)
        return cls

    # -- schemas -------------------------------------------------------------------

    def output(self, schema: el.Schema | None, hint: str) -> tuple[Any, Convert]:
        """The GraphQL type of values of ``schema`` and how to turn a stored value into it."""
        if schema is None:
            return JSON, _same
        known = self._by_schema.get(id(schema))
        if known is not None:
            return known
        made = self._make(schema, hint)
        self._by_schema[id(schema)] = made
        return made

    def _make(self, schema: el.Schema, hint: str) -> tuple[Any, Convert]:
        if isinstance(schema, el.PrimitiveSchema) and schema.name in _PRIMITIVES:
            gql, python_type, _ = _PRIMITIVES[schema.name]
            return gql, _checked(python_type)
        if isinstance(schema, el.Enum) and schema.enum_values:
            return self._enum(schema, hint)
        if isinstance(schema, el.Object) and schema.fields:
            return self._object(schema, hint)
        if isinstance(schema, el.Array) and schema.element_schema is not None:
            inner, convert = self.output(schema.element_schema, hint + "Item")
            return list[inner | None], _each(convert)
        return JSON, _same

    def _enum(self, schema: el.Enum, hint: str) -> tuple[Any, Convert]:
        members = {_enum_member(v.name): v.enum_value for v in schema.enum_values}
        name = self.unique(_graphql_name(hint))
        py_enum = PyEnum(name, members)  # type: ignore[misc]
        gql = strawberry.enum(py_enum, name=name, description=_describe(schema))
        self.extra.append(gql)
        by_value = {member.value: member for member in py_enum}
        return gql, lambda value: by_value.get(value) if _hashable(value) else None

    def _object(self, schema: el.Object, hint: str) -> tuple[Any, Convert]:
        name = self.unique(_graphql_name(hint))
        namespace: dict[str, Any] = {"__annotations__": {"data": strawberry.Private[dict]}}
        used: set[str] = set()
        for item in schema.fields:
            field_name = _field_name(item.name, used)
            gql, convert = self.output(item.schema, f"{hint}_{item.name}")
            namespace[_attr(field_name)] = _data_field(
                field_name, gql, convert, item.name, _describe(item)
            )
        cls = strawberry.type(type(name, (), namespace), name=name, description=_describe(schema))
        self.extra.append(cls)
        return cls, lambda value: cls(data=value) if isinstance(value, dict) else None

    def point(self, schema: el.Schema | None, hint: str) -> tuple[type, Convert]:
        if isinstance(schema, el.PrimitiveSchema) and schema.name in _PRIMITIVES:
            _, python_type, point = _PRIMITIVES[schema.name]
            return point, _checked(python_type)
        return JSONPoint, _same


# -- field factories (closures, so each field reads its own key) ----------------------


def _property_field(
    content: el.Property, field_name: str, gql: Any, convert: Convert, key: str
) -> Any:
    def resolve(self: TwinNode) -> Any:
        return convert(self.doc.get(key))

    resolve.__annotations__ = {"return": gql | None}
    return strawberry.field(resolver=resolve, name=field_name, description=_describe(content))


def _data_field(field_name: str, gql: Any, convert: Convert, key: str, doc: str | None) -> Any:
    def resolve(self: Any) -> Any:
        return convert(self.data.get(key))

    resolve.__annotations__ = {"return": gql | None}
    return strawberry.field(resolver=resolve, name=field_name, description=doc)


def _last_value_field(content: el.Telemetry, field_name: str, point: type, convert: Convert) -> Any:
    key = content.name

    async def resolve(self: TwinNode, info: strawberry.Info) -> Any:
        snapshot = await info.context.loaders.snapshot.load(self.doc["$dtId"])
        last = None if snapshot is None else snapshot.get("last", {}).get(key)
        if last is None:
            return None
        return point(
            time=datetime.fromtimestamp(last["sourceTime"], UTC), value=convert(last["value"])
        )

    resolve.__annotations__ = {"info": strawberry.Info, "return": point | None}
    return strawberry.field(
        resolver=resolve,
        name=field_name,
        description=f"Last value received. {_describe(content) or ''}".strip(),
    )


def _history_field(content: el.Telemetry, field_name: str, point: type, convert: Convert) -> Any:
    key = content.name

    async def resolve(self: TwinNode, info: strawberry.Info, last: int = 100) -> Any:
        series = await load_series(info, self.doc["$dtId"], key, last)
        return [
            point(time=datetime.fromtimestamp(t, UTC), value=convert(v))
            for t, v in zip(series["times"], series["values"], strict=True)
        ]

    resolve.__annotations__ = {"info": strawberry.Info, "last": int, "return": list[point]}
    return strawberry.field(
        resolver=resolve,
        name=field_name,
        description=f"The newest samples of {key}, oldest first (live ring buffer).",
    )


def _relationship_field(content: el.Relationship, field_name: str) -> Any:
    key = content.name

    async def resolve(
        self: TwinNode, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Any:
        found = await info.context.loaders.outgoing.load(self.doc["$dtId"])
        return relationship_page([r for r in found if r["$relationshipName"] == key], first, after)

    resolve.__annotations__ = {
        "info": strawberry.Info,
        "first": int | None,
        "after": str | None,
        "return": Connection[Relationship],
    }
    target = f" to {content.target}" if content.target else ""
    return strawberry.field(
        resolver=resolve,
        name=field_name,
        description=f"Relationship {key}{target}. {_describe(content) or ''}".strip(),
    )


def _component_field(content: el.Component, field_name: str, comp: type) -> Any:
    key = content.name

    def resolve(self: TwinNode) -> Any:
        value = self.doc.get(key)
        return comp(data=value) if isinstance(value, dict) else None

    resolve.__annotations__ = {"return": comp | None}
    return strawberry.field(resolver=resolve, name=field_name, description=_describe(content))


def _raw(self: Any) -> JSON:
    return self.data


# -- helpers ---------------------------------------------------------------------------


def _field_name(name: str, used: set[str]) -> str:
    candidate = name
    while candidate in used:
        candidate += "_"
    used.add(candidate)
    return candidate


def _attr(field_name: str) -> str:
    # GraphQL takes the name from name=; the prefixed attribute never shadows TwinNode's
    # own (doc, dt_id...) nor a Python keyword.
    return f"dtdl_{field_name}"


def _enum_member(name: str) -> str:
    return name if name.isidentifier() and not keyword.iskeyword(name) else f"_{name}"


def _describe(entity: el.Entity) -> str | None:
    texts = entity.description or entity.display_name
    return texts.get("en") or next(iter(texts.values()), None) if texts else None


def _same(value: Any) -> Any:
    return value


def _checked(python_type: type) -> Convert:
    """Pass values of the right type; anything else (a model changed under stored data)
    reads as null rather than failing the whole query."""
    if python_type is float:
        return lambda v: (
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
        )
    if python_type is int:
        return lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None
    return lambda v: v if isinstance(v, python_type) else None


def _each(convert: Convert) -> Convert:
    return lambda value: [convert(v) for v in value] if isinstance(value, list) else None


def _hashable(value: Any) -> bool:
    return isinstance(value, int | str)
