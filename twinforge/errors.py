"""The base of every error meant for a client: a message shown as is (it names the field
and the rule, never a secret), a stable ``code`` clients branch on, and the field at
fault. It imports nothing of twinforge, so every layer may raise one."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["ClientError"]


class ClientError(Exception):
    """An error meant for the client; ``field`` names the input at fault, when one is.
    The API copies :attr:`extensions` onto the error it answers with."""

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def extensions(self) -> dict[str, Any]:
        extensions: dict[str, Any] = {"code": self.code}
        if self.field:
            extensions["field"] = self.field
        return extensions
