"""Lifetimes written as people write them: ``90s``, ``15m``, ``12h``, ``30d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

from twinforge.auth.errors import InvalidInput

__all__ = ["parse_duration"]

_DURATION = re.compile(r"\s*(\d{1,6})\s*([smhdw])\s*")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Ten years: longer is a typo, and past it a key should simply not expire.
_MAX = timedelta(days=3650)


def parse_duration(text: str, *, field: str) -> timedelta:
    """``text`` as a positive duration; :class:`InvalidInput` naming ``field`` if not."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(
            f"{field}: expected a number and a unit (s, m, h, d or w), like 30d; not {text!r}"[
                :200
            ],
            field=field,
        )
    value = timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
    if not timedelta(0) < value <= _MAX:
        raise InvalidInput(f"{field}: between 1s and 3650d, not {text.strip()}", field=field)
    return value
