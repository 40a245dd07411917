"""What goes wrong with physics: an FMU that cannot be built, loaded or run, and a
physics configuration that does not fit its FMU or its DTDL interface."""

from __future__ import annotations


class PhysicsError(Exception):
    """Base of every physics error."""


class FmuError(PhysicsError):
    """An FMU that cannot be built, loaded or stepped; the message says which and why."""


class PhysicsConfigError(PhysicsError, ValueError):
    """A physics configuration that does not fit its FMU or interface: every problem
    found, each naming the configuration's field and both sides."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        # Pickled across processes (a what-if's Ray task) with its problems, not its text.
        return (type(self), (self.problems,))
