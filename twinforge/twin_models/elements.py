"""The typed DTDL object model: what :func:`parse_models` returns.

One class per DTDL element kind, named as the specifications name them. Elements refer to
each other directly (a Telemetry's ``schema`` is a :class:`Schema` object); schemas may
be recursive in DTDL v4, so the graph can hold cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from twinforge.twin_models.dtmi import local_name

#: What a value of a twin is: a telemetry sample or a property value. One spelling from the
#: wire to the write-ahead log and the history (MQTT's topic says ``properties``).
ValueKind = Literal["telemetry", "property"]
TELEMETRY: Final = "telemetry"
PROPERTY: Final = "property"
VALUE_KINDS: tuple[ValueKind, ...] = (TELEMETRY, PROPERTY)


@dataclass(eq=False, repr=False, slots=True)
class Entity:
    id: str
    dtdl_version: int
    display_name: dict[str, str] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)
    comment: str | None = None
    #: Co-types from DTDL or a known extension (semantic types such as ``Temperature``,
    #: ``Historized``...), by term.
    supplemental_types: list[str] = field(default_factory=list)
    #: Values of properties those co-types define (``unit``, ``annotates``...), by term.
    supplemental_properties: dict[str, Any] = field(default_factory=dict)
    #: Co-types and properties from undefined extensions, kept as written.
    undefined_types: list[str] = field(default_factory=list)
    undefined_properties: dict[str, Any] = field(default_factory=dict)
    #: The Interface the element is written in, and the element it is nested in.
    defined_in: str | None = None
    child_of: str | None = None

    @property
    def kind(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.kind}({self.id!r})"


@dataclass(eq=False, repr=False, slots=True)
class NamedEntity(Entity):
    name: str = ""


# -- schemas -------------------------------------------------------------------------


@dataclass(eq=False, repr=False, slots=True)
class Schema(Entity):
    pass


@dataclass(eq=False, repr=False, slots=True)
class PrimitiveSchema(Schema):
    """A standard schema named by a term: ``double``, ``dateTime``, ``point``..."""

    name: str = ""


@dataclass(eq=False, repr=False, slots=True)
class Array(Schema):
    element_schema: Schema | None = None


@dataclass(eq=False, repr=False, slots=True)
class EnumValue(NamedEntity):
    enum_value: int | str = ""


@dataclass(eq=False, repr=False, slots=True)
class Enum(Schema):
    value_schema: PrimitiveSchema | None = None
    enum_values: list[EnumValue] = field(default_factory=list)


@dataclass(eq=False, repr=False, slots=True)
class MapKey(NamedEntity):
    schema: Schema | None = None


@dataclass(eq=False, repr=False, slots=True)
class MapValue(NamedEntity):
    schema: Schema | None = None


@dataclass(eq=False, repr=False, slots=True)
class Map(Schema):
    map_key: MapKey | None = None
    map_value: MapValue | None = None


@dataclass(eq=False, repr=False, slots=True)
class Field(NamedEntity):
    schema: Schema | None = None

    @property
    def required(self) -> bool:
        """True when co-typed ``Required`` (DTDL v4 requirement extension)."""
        return "Required" in self.supplemental_types


@dataclass(eq=False, repr=False, slots=True)
class Object(Schema):
    fields: list[Field] = field(default_factory=list)


# -- contents ------------------------------------------------------------------------


@dataclass(eq=False, repr=False, slots=True)
class Content(NamedEntity):
    @property
    def unit(self) -> str | None:
        """The unit of a semantically typed Telemetry or Property (``degreeCelsius``)."""
        unit = self.supplemental_properties.get("unit")
        return local_name(unit) if isinstance(unit, str) else None


@dataclass(eq=False, repr=False, slots=True)
class Telemetry(Content):
    schema: Schema | None = None


@dataclass(eq=False, repr=False, slots=True)
class Property(Content):
    schema: Schema | None = None
    writable: bool = False


@dataclass(eq=False, repr=False, slots=True)
class CommandPayload(NamedEntity):
    schema: Schema | None = None
    nullable: bool = False


@dataclass(eq=False, repr=False, slots=True)
class CommandRequest(CommandPayload):
    pass


@dataclass(eq=False, repr=False, slots=True)
class CommandResponse(CommandPayload):
    pass


@dataclass(eq=False, repr=False, slots=True)
class Command(Content):
    request: CommandPayload | None = None
    response: CommandPayload | None = None
    #: DTDL v2's deprecated ``synchronous``/``asynchronous``.
    command_type: str | None = None


@dataclass(eq=False, repr=False, slots=True)
class Relationship(Content):
    #: The target Interface's DTMI; None means any Interface.
    target: str | None = None
    min_multiplicity: int | None = None
    max_multiplicity: int | None = None
    properties: list[Property] = field(default_factory=list)
    writable: bool = False


@dataclass(eq=False, repr=False, slots=True)
class Component(Content):
    schema: Interface | None = None


@dataclass(eq=False, repr=False, slots=True)
class Interface(Entity):
    extends: list[Interface] = field(default_factory=list)
    #: The Interface's own contents, in document order.
    own_contents: list[Content] = field(default_factory=list)
    schemas: list[Schema] = field(default_factory=list)
    #: Own and inherited contents by name (filled once the whole set is linked).
    contents: dict[str, Content] = field(default_factory=dict)

    def _of(self, kind: type) -> dict[str, Any]:
        return {name: c for name, c in self.contents.items() if isinstance(c, kind)}

    @property
    def telemetries(self) -> dict[str, Telemetry]:
        return self._of(Telemetry)

    @property
    def properties(self) -> dict[str, Property]:
        return self._of(Property)

    @property
    def commands(self) -> dict[str, Command]:
        return self._of(Command)

    @property
    def relationships(self) -> dict[str, Relationship]:
        return self._of(Relationship)

    @property
    def components(self) -> dict[str, Component]:
        return self._of(Component)

    def is_a(self, interface_id: str) -> bool:
        """True when this Interface is ``interface_id`` or extends it, directly or not."""
        stack, seen = [self], set()
        while stack:
            current = stack.pop()
            if current.id == interface_id:
                return True
            if current.id not in seen:
                seen.add(current.id)
                stack.extend(current.extends)
        return False


ELEMENT_CLASSES: dict[str, type[Entity]] = {
    cls.__name__: cls
    for cls in (
        Interface,
        Telemetry,
        Property,
        Command,
        CommandPayload,
        CommandRequest,
        CommandResponse,
        Relationship,
        Component,
        Array,
        Enum,
        EnumValue,
        Map,
        MapKey,
        MapValue,
        Object,
        Field,
    )
}
