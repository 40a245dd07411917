"""The graph-store interface the twin service talks to, whatever database is behind it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["GraphStore", "GraphStoreError", "check_identifier"]

# Labels and property names put into Cypher text (indexes cannot take parameters).
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class GraphStoreError(Exception):
    """The database refused a query or could not be reached; the message is its own.

    No driver exception type reaches callers: code above the stores catches this one.
    """


class GraphStore(Protocol):
    """Cypher in, rows out.

    Each row is a dict by column name. Nodes and relationships come back as dicts of their
    properties, paths as ``{"nodes": [...], "relationships": [...]}``, lists and scalars
    as Python values. Values always travel as parameters, never inside the query text.
    """

    backend: str
    """``"falkordb"`` or ``"neo4j"``."""

    def read(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query that must not write; one that would raises :class:`GraphStoreError`."""
        ...

    def write(self, cypher: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one query atomically."""
        ...

    def ensure_index(self, label: str, prop: str) -> None:
        """Create a range index on ``(:label).prop`` unless there is one.

        ``ValueError`` unless both are plain identifiers (see :func:`check_identifier`).
        """
        ...

    def clear(self) -> None:
        """Delete every node and relationship (indexes stay)."""
        ...

    def close(self) -> None:
        """Release the connections, and stop the database if the store started it."""
        ...


def check_identifier(value: str, what: str) -> str:
    """``value`` if it may be put into Cypher text as a label or property name, which
    cannot be parameters: a letter, then letters, digits and ``_``. Else ``ValueError``."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be letters, digits and _ (starting with a letter)")
    return value
