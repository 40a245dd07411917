"""The display name of a credential (an API key, a device): printable text, bounded."""

from __future__ import annotations

from twinforge.auth.errors import InvalidInput

__all__ = ["MAX_NAME_CHARS", "check_name"]

MAX_NAME_CHARS = 100


def check_name(name: object) -> str:
    """``name`` if it is a usable display name; ``InvalidInput`` naming ``name`` and the rule."""
    if not isinstance(name, str):
        raise InvalidInput(f"name: expected a string, not {type(name).__name__}", field="name")
    if not name.strip():
        raise InvalidInput("name: must not be empty", field="name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"name: at most {MAX_NAME_CHARS} characters, not {len(name)}", field="name"
        )
    if not name.isprintable():
        raise InvalidInput("name: only printable characters (no control characters)", field="name")
    return name
