"""Twin ids unique to one test run, so that runs sharing a broker never see each other's
messages."""

from __future__ import annotations

import uuid

RUN = f"t{uuid.uuid4().hex[:6]}-"


def run_id(name: str) -> str:
    """``name`` (a sample-plant twin id) as this run's layout spells it."""
    return RUN + name
