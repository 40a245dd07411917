"""A machine's answer to a DTDL command, the same whichever transport carried it.

Machines reply with JSON ``{"status": 200, "response": <value>}`` or
``{"status": 4xx/5xx, "error": "..."}`` (HTTP status semantics, as Azure IoT direct
methods). Transports also report their own failures as replies, so callers handle one
type: 502 the machine's reply was unusable, 503 the machine could not be reached,
504 no reply within the timeout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BAD_GATEWAY = 502
UNAVAILABLE = 503
GATEWAY_TIMEOUT = 504


class InvalidCommandReply(ValueError):
    """A reply that is not ``{"status": int, "response"?: any, "error"?: str}``."""


def _reject_constant(name: str) -> Any:
    raise InvalidCommandReply(f"reply: {name} is not valid JSON")


@dataclass(frozen=True, slots=True)
class CommandReply:
    """``status`` is an HTTP status (100-599); 2xx means the command succeeded."""

    status: int
    response: Any = None
    error: str | None = None

    def __post_init__(self) -> None:
        # bool is an int subclass; True as a status is always a bug.
        if not isinstance(self.status, int) or isinstance(self.status, bool):
            raise InvalidCommandReply(
                f"status: must be an integer HTTP status, got {type(self.status).__name__}"
            )
        if not 100 <= self.status <= 599:
            raise InvalidCommandReply(f"status: must be between 100 and 599, got {self.status}")
        if self.error is not None and not isinstance(self.error, str):
            raise InvalidCommandReply(
                f"error: must be a string or null, got {type(self.error).__name__}"
            )

    @property
    def ok(self) -> bool:
        """Whether the machine ran the command (a 2xx status)."""
        return 200 <= self.status < 300

    @classmethod
    def from_json(cls, text: str | bytes) -> CommandReply:
        """Parse a machine's reply; :class:`InvalidCommandReply` names the field and rule.

        Unknown keys are ignored so machines may add diagnostics; NaN and Infinity are
        refused because they are not JSON.
        """
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except InvalidCommandReply:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidCommandReply(f"reply: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidCommandReply(f"reply: must be a JSON object, got {type(doc).__name__}")
        if "status" not in doc:
            raise InvalidCommandReply("status: required")
        return cls(doc["status"], doc.get("response"), doc.get("error"))

    def to_json(self) -> str:
        """The wire form machines send (``error`` only when set)."""
        doc: dict[str, Any] = {"status": self.status, "response": self.response}
        if self.error is not None:
            doc["error"] = self.error
        try:
            return json.dumps(doc, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidCommandReply(f"response: not JSON-representable ({exc})") from None
