"""Checks of what comes into the command service: ids, request payloads, replies."""

from __future__ import annotations

import json
import re
from typing import Any

from twinforge.auth.principal import Principal
from twinforge.twin_models import Command, ValueProblem, validate_value

MAX_TWIN_ID_CHARS = 256
_COMMAND_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PROBLEMS_SHOWN = 5


class Refused(Exception):
    """An invocation stopped at the edge; ``reason`` names the field and the rule."""

    def __init__(self, reason: str, *, size: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.size = size


def check_ids(user: Principal, twin_id: Any, command: Any) -> None:
    """Raise :class:`Refused` unless the user, twin id and command name are usable."""
    if not isinstance(user.id, str) or not user.id:
        raise Refused("user: the user has no id")
    if not isinstance(twin_id, str) or not twin_id:
        raise Refused(f"twinId: expected a non-empty string, got {type(twin_id).__name__}")
    if len(twin_id) > MAX_TWIN_ID_CHARS:
        raise Refused(f"twinId: longer than {MAX_TWIN_ID_CHARS} characters")
    if _CONTROL.search(twin_id):
        raise Refused("twinId: control characters are not allowed")
    if not isinstance(command, str) or len(command) > 512 or not _COMMAND_NAME.match(command):
        raise Refused("command: not a DTDL command name (a letter, then letters, digits or _)")


def own_copy(request: Any, limit: int) -> Any:
    """A private copy of ``request`` through JSON, so what is approved and sent is what was
    checked even if the caller changes its object meanwhile; :class:`Refused` when it is
    not JSON or longer than ``limit`` bytes (``size`` then says how long)."""
    try:
        encoded = json.dumps(request, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise Refused(f"request: not a JSON value ({str(error)[:200]}) [type]") from None
    size = len(encoded.encode())
    if size > limit:
        raise Refused(f"request: {size} bytes, more than the limit of {limit} [size]", size=size)
    return json.loads(encoded)


def check_response(response: Any, command: Command) -> list[ValueProblem]:
    """The problems of a reply's ``response`` against the Command's response schema."""
    payload = command.response
    if payload is None:
        if response is None:
            return []
        return [ValueProblem(command.name, "unexpectedPayload", "the command has no response")]
    path = payload.name or command.name
    if response is None:
        if payload.nullable:
            return []
        return [ValueProblem(path, "required", "the command requires a response")]
    if payload.schema is None:
        return [ValueProblem(path, "schema", "the response has no schema")]
    return validate_value(response, payload.schema, path=path)


def describe(problems: list[ValueProblem]) -> str:
    """The first few problems, on one line."""
    text = "; ".join(str(problem) for problem in problems[:_MAX_PROBLEMS_SHOWN])
    more = len(problems) - _MAX_PROBLEMS_SHOWN
    return text + (f"; and {more} more" if more > 0 else "")
