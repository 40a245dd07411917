"""OPC UA's part of a running server: subscriptions to the mapped nodes, and method calls
for the twins those nodes belong to, both over one security config."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from asyncua import Client, ua

from twinforge.config import Settings
from twinforge.connectivity.opcua.commands import OpcUaCommandTransport
from twinforge.connectivity.opcua.nodes import SESSION_TIMEOUT_MS, discover_mappings, load_mappings
from twinforge.connectivity.opcua.security import (
    ClientSecurity,
    OpcUaSecurityError,
    client_security,
)
from twinforge.connectivity.opcua.telemetry import OpcUaIngest
from twinforge.ingest.messages import Intake
from twinforge.lifecycle import stop_each

__all__ = ["OpcUaPart", "start_opcua"]

log = logging.getLogger(__name__)


@dataclass
class OpcUaPart:
    ingest: OpcUaIngest
    commands: OpcUaCommandTransport
    #: The twins whose commands go over OPC UA: those with a mapped node.
    twins: frozenset[str]
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_each((self.ingest.stop, lambda: asyncio.run(self.commands.close())))


def start_opcua(settings: Settings, intake: Intake) -> OpcUaPart:
    """Subscribe to ``settings.opcua_url``'s nodes as ``opcua_mappings`` maps them, or as
    discovered from the server's address space when there is no file.

    A refusal for security's sake (bad setting, untrusted server, wrong password) fails
    the start with :class:`OpcUaSecurityError`; an unreachable server with a mappings file
    does not (the ingest keeps trying).
    """
    endpoint = settings.opcua_url
    if not endpoint:
        raise ValueError("TWINFORGE_OPCUA_URL: needed to start OPC UA")
    security = client_security(settings)
    if settings.opcua_mappings:
        mappings = load_mappings(settings.opcua_mappings)
        asyncio.run(_probe(endpoint, security))
    else:
        mappings = asyncio.run(discover_mappings(endpoint, security=security))
    ingest = OpcUaIngest(endpoint, mappings, intake, security=security)
    ingest.start()
    return OpcUaPart(
        ingest,
        OpcUaCommandTransport(endpoint, security=security),
        frozenset(m.twin_id for m in mappings),
        endpoints={"OPC UA": endpoint},
    )


async def _probe(endpoint: str, security: ClientSecurity) -> None:
    """Connect once, so that security refusals surface at start-up."""
    client = Client(endpoint, timeout=10)
    client.session_timeout = SESSION_TIMEOUT_MS
    try:
        await security.connect(client)
    except OpcUaSecurityError:
        raise
    except (OSError, TimeoutError, ua.UaError) as exc:
        log.warning(
            "OPC UA server %s not reachable yet (%r); the ingest keeps trying", endpoint, exc
        )
        return
    await client.disconnect()
