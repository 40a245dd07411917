"""The security audit trail: one hash-chained, append-only log of every security-relevant
act (keys, tokens, device credentials, models, twins, relationships, commands), written by
the code that knows the actor, verifiable with ``twinforge audit verify`` and optionally
forwarded, record by record, to syslog or a file outside the owner's reach.

Sits below ``auth`` and ``runtime`` so both can write to it.
"""

from twinforge.audit.chain import GENESIS, Actor, ChainBreak, LocalActor, Record
from twinforge.audit.log import AuditTrail

__all__ = ["GENESIS", "Actor", "AuditTrail", "ChainBreak", "LocalActor", "Record"]
