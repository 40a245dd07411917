"""The parser's internal record of one element, before it becomes a typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twinforge.twin_models.context import ActiveContext
from twinforge.twin_models.metamodel import ClassInfo, Constraint


@dataclass(slots=True)
class Reference:
    """A property value naming another element by DTMI (or a term that maps to one)."""

    source: Node
    term: str
    target: str
    constraints: tuple[Constraint, ...]


@dataclass(slots=True)
class Node:
    id: str
    cls: ClassInfo
    ctx: ActiveContext
    document: int
    parent: Node | None = None
    parent_property: str | None = None
    cotypes: list[ClassInfo] = field(default_factory=list)
    undefined_cotypes: list[str] = field(default_factory=list)
    # property term -> values: python literals, dicts for language strings, or child ids
    values: dict[str, list[Any]] = field(default_factory=dict)
    undefined_properties: dict[str, Any] = field(default_factory=dict)
    # (property term, DTMI) for every property value that names or holds an element
    links: list[tuple[str, str]] = field(default_factory=list)
    partition: Node | None = None

    @property
    def version(self) -> int:
        return self.ctx.version

    def is_a(self, term: str) -> bool:
        return self.ctx.lang.subclass_of(self.cls, term) or any(
            c.term == term for c in self.cotypes
        )

    def first(self, term: str, default: Any = None) -> Any:
        values = self.values.get(term)
        return values[0] if values else default
