"""OPC UA's part of a running server: subscriptions to the mapped nodes, and method calls
for the twins those nodes belong to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from twinforge.connectivity.opcua.commands import OpcUaCommandTransport
from twinforge.connectivity.opcua.nodes import discover_mappings, load_mappings
from twinforge.connectivity.opcua.telemetry import OpcUaIngest
from twinforge.ingest.messages import Intake
from twinforge.lifecycle import stop_each

__all__ = ["OpcUaPart", "start_opcua"]


@dataclass
class OpcUaPart:
    ingest: OpcUaIngest
    commands: OpcUaCommandTransport
    #: The twins whose commands go over OPC UA: those with a mapped node.
    twins: frozenset[str]
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_each((self.ingest.stop, lambda: asyncio.run(self.commands.close())))


def start_opcua(endpoint: str, mappings_file: Path | None, intake: Intake) -> OpcUaPart:
    """Subscribe to ``endpoint``'s nodes as ``mappings_file`` maps them, or as discovered
    from the server's address space when there is no file."""
    if mappings_file:
        mappings = load_mappings(mappings_file)
    else:
        mappings = asyncio.run(discover_mappings(endpoint))
    ingest = OpcUaIngest(endpoint, mappings, intake)
    ingest.start()
    return OpcUaPart(
        ingest,
        OpcUaCommandTransport(endpoint),
        frozenset(m.twin_id for m in mappings),
        endpoints={"OPC UA": endpoint},
    )
