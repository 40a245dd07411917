"""The graph-store interface the twin service talks to, whatever database is behind it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

# Labels and property names put into Cypher text (indexes cannot take parameters).
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class GraphStoreError(Exception):
    """The database refused a query or could not be reached; the message is its own."""


class GraphStore(Protocol):
    """Cypher in, rows out: each row a dict by column; nodes and relationships come back
    as dicts of their properties. Queries always take their values as parameters."""

    backend: str

    def read(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query that must not write (the database refuses one that does)."""
        ...

    def write(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one query atomically."""
        ...

    def ensure_index(self, label: str, prop: str) -> None:
        """Create a range index on ``(:label).prop`` unless there is one."""
        ...

    def clear(self) -> None:
        """Delete every node and relationship."""
        ...

    def close(self) -> None: ...


def check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be letters, digits and _ (starting with a letter)")
    return value
