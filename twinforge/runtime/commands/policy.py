"""The safety policy: whether a valid command request goes out, waits for approval, or not.

Rules are keyed by model id and command name, and a rule for a model also covers every model
extending it. Every matching rule applies (the strictest outcome wins), so a base model's
rule cannot be loosened by a more specific one. Checks run in this order, and the first
refusal names its rule: ``roles``, ``bounds``, ``interlock``, ``rateLimit``; then
``hazardous`` asks for a second user's approval. A policy that cannot be applied to a
request (a bounds path the command's schema lacks) refuses it under the rule ``policy``:
a typo must not silently switch a safety limit off.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from twinforge.auth.principal import DEFAULT_ROLES, VIEWER, Principal
from twinforge.runtime.commands._paths import path_problem, values_at
from twinforge.runtime.commands.alarms import ActiveAlarm, AlarmSource
from twinforge.runtime.commands.policy_config import BoundsConfig, SafetyPolicyConfig
from twinforge.runtime.commands.rate_limit import InvocationCounter
from twinforge.twin_models import Command, Interface

__all__ = [
    "Bounds",
    "CommandRule",
    "Decision",
    "Interlock",
    "PolicyError",
    "RateLimit",
    "SafetyPolicy",
    "Verdict",
]


class PolicyError(ValueError):
    """A policy document that cannot be loaded; ``problems`` lists each broken rule."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid safety policy {source}: " + "; ".join(problems))


class Verdict(StrEnum):
    ALLOW = "allow"
    NEEDS_APPROVAL = "needsApproval"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict; ``rule`` is the rule that decided it (empty when allowed)."""

    verdict: Verdict
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class Bounds:
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None

    def violation(self, value: Any) -> str | None:
        """Why ``value`` is out of bounds, or None when it is within them."""
        if self.allowed is not None and not any(_same(value, a) for a in self.allowed):
            options = ", ".join(_show(a) for a in self.allowed)
            return f"{_show(value)} is not one of the allowed values {options}"
        if self.min is None and self.max is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"{_show(value)} is not a number"
        # Written as "not within" so that NaN is refused too.
        if self.min is not None and not value >= self.min:
            return f"{_show(value)} is below the minimum {_show(self.min)}"
        if self.max is not None and not value <= self.max:
            return f"{_show(value)} is above the maximum {_show(self.max)}"
        return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    max: int
    window: float


@dataclass(frozen=True, slots=True)
class Interlock:
    name: str | None = None
    alarms: frozenset[str] | None = None
    min_severity: int | None = None

    def tripped_by(self, alarms: Sequence[ActiveAlarm]) -> ActiveAlarm | None:
        """The first active alarm this interlock refuses on, if any."""
        for alarm in alarms:
            if self.alarms is not None and alarm.name not in self.alarms:
                continue
            if self.min_severity is not None and not alarm.severity >= self.min_severity:
                continue
            return alarm
        return None


@dataclass(frozen=True, slots=True)
class CommandRule:
    """The rules of one command of one model (and of the models extending it)."""

    model_id: str
    command: str
    bounds: tuple[tuple[str, Bounds], ...] = ()
    hazardous: bool = False
    hazardous_outside: tuple[tuple[str, Bounds], ...] = ()
    rate_limit: RateLimit | None = None
    interlocks: tuple[Interlock, ...] = ()
    roles: frozenset[str] = DEFAULT_ROLES

    @property
    def label(self) -> str:
        return f"{self.model_id} {self.command}"


class SafetyPolicy:
    """Command rules, and the decision they make on one invocation."""

    def __init__(self, rules: Iterable[CommandRule] = ()) -> None:
        self.rules: tuple[CommandRule, ...] = tuple(rules)
        for rule in self.rules:
            if VIEWER in rule.roles:
                raise PolicyError(rule.label, ["roles: the viewer role may never invoke commands"])
        self._by_command: dict[str, list[CommandRule]] = {}
        for rule in self.rules:
            self._by_command.setdefault(rule.command, []).append(rule)

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: SafetyPolicyConfig | Mapping[str, Any], *, source: str = "<config>"
    ) -> SafetyPolicy:
        """A policy from its validated config or a decoded JSON object."""
        if not isinstance(config, SafetyPolicyConfig):
            try:
                config = SafetyPolicyConfig.model_validate(config)
            except ValidationError as error:
                raise PolicyError(source, _problems(error)) from None
        return cls(
            _rule(model_id, command, rule)
            for model_id, commands in config.models.items()
            for command, rule in commands.items()
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "<json>") -> SafetyPolicy:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise PolicyError(source, [f"not JSON: {error}"]) from None
        return cls.from_config(data, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> SafetyPolicy:
        try:
            text = Path(path).read_bytes()
        except OSError as error:
            raise PolicyError(str(path), [f"cannot read it: {error.strerror or error}"]) from None
        return cls.from_json(text, source=str(path))

    # -- queries ------------------------------------------------------------------------

    @property
    def horizon(self) -> float:
        """The longest rate-limit window, in seconds (how long invocations are remembered)."""
        return max((r.rate_limit.window for r in self.rules if r.rate_limit), default=0.0)

    def rules_for(self, interface: Interface, command: str) -> list[CommandRule]:
        """The rules applying to ``command`` on twins of ``interface``, in policy order."""
        return [r for r in self._by_command.get(command, ()) if interface.is_a(r.model_id)]

    def problems(self, interfaces: Iterable[Interface]) -> list[str]:
        """Rules that do not fit the given models: unknown models, commands or paths.

        Worth checking when a policy or the models change; at decision time such a rule
        refuses the commands it concerns.
        """
        interfaces = list(interfaces)
        known = {interface.id for interface in interfaces}
        out: list[str] = []
        for rule in self.rules:
            if rule.model_id not in known:
                out.append(f"{rule.label}: no model {rule.model_id}")
                continue
            commands = {
                id(c): c
                for i in interfaces
                if i.is_a(rule.model_id) and (c := i.commands.get(rule.command)) is not None
            }
            if not commands:
                out.append(f"{rule.label}: neither the model nor one extending it has the command")
            for command in commands.values():
                for path, _ in (*rule.bounds, *rule.hazardous_outside):
                    problem = path_problem(path, command)
                    if problem is not None:
                        out.append(f"{rule.label}: bounds path {path!r}: {problem}")
        return sorted(set(out), key=out.index)

    # -- the decision ---------------------------------------------------------------------

    def decide(
        self,
        interface: Interface,
        command: Command,
        request: Any,
        *,
        twin_id: str,
        user: Principal,
        alarms: AlarmSource,
        counter: InvocationCounter,
        now: float,
        approved: bool = False,
    ) -> Decision:
        """Allow, ask for approval, or deny one schema-valid request of ``user``.

        ``approved`` re-checks a request a second user has approved: everything but the
        approval itself, since alarms and rates may have changed meanwhile.
        """
        rules = self.rules_for(interface, command.name)
        return (
            _check_roles(rules, command, user)
            or _check_bounds(rules, command, request)
            or _check_interlocks(rules, twin_id, alarms)
            or _check_rates(rules, command, twin_id, counter, now)
            or (None if approved else _check_hazards(rules, command, request))
            or Decision(Verdict.ALLOW, "", _allowed(rules, approved))
        )


# -- checks, each returning a refusal or None --------------------------------------------


def _check_roles(rules: list[CommandRule], command: Command, user: Principal) -> Decision | None:
    held = user.roles - {VIEWER}
    for required in [r.roles for r in rules] or [DEFAULT_ROLES]:
        if not held & required:
            return Decision(
                Verdict.DENY,
                "roles",
                f"{command.name} needs one of the roles {', '.join(sorted(required))}; "
                f"{user.name} has {', '.join(sorted(user.roles)) or 'none'}",
            )
    return None


def _check_bounds(rules: list[CommandRule], command: Command, request: Any) -> Decision | None:
    for rule in rules:
        for path, bounds in rule.bounds:
            problem = path_problem(path, command)
            if problem is not None:
                return Decision(
                    Verdict.DENY, "policy", f"bounds path {path!r} of {rule.label}: {problem}"
                )
            for where, value in values_at(path, request):
                violation = bounds.violation(value)
                if violation is not None:
                    return Decision(Verdict.DENY, "bounds", f"{where}: {violation} ({rule.label})")
    return None


def _check_interlocks(
    rules: list[CommandRule], twin_id: str, source: AlarmSource
) -> Decision | None:
    interlocked = [(rule, lock) for rule in rules for lock in rule.interlocks]
    if not interlocked:
        return None
    try:
        alarms = list(source.active_alarms(twin_id))
    except Exception as error:
        # Fail closed: an interlock that cannot see the alarms must not let a start through.
        return Decision(Verdict.DENY, "interlock", f"the alarms of {twin_id} are unknown ({error})")
    for rule, lock in interlocked:
        alarm = lock.tripped_by(alarms)
        if alarm is not None:
            named = f" {lock.name!r}" if lock.name else ""
            return Decision(
                Verdict.DENY,
                "interlock",
                f"alarm {alarm.name!r} (severity {alarm.severity}) is active on {twin_id} "
                f"(interlock{named} of {rule.label})",
            )
    return None


def _check_rates(
    rules: list[CommandRule],
    command: Command,
    twin_id: str,
    counter: InvocationCounter,
    now: float,
) -> Decision | None:
    for rule in rules:
        limit = rule.rate_limit
        if limit is None:
            continue
        if counter.count(twin_id, command.name, limit.window, now) >= limit.max:
            return Decision(
                Verdict.DENY,
                "rateLimit",
                f"{command.name} was sent to {twin_id} {limit.max} times in the last "
                f"{limit.window:g} s, the most allowed ({rule.label})",
            )
    return None


def _check_hazards(rules: list[CommandRule], command: Command, request: Any) -> Decision | None:
    approval = "needs approval by a second user with role engineer or admin"
    for rule in rules:
        if rule.hazardous:
            return Decision(
                Verdict.NEEDS_APPROVAL,
                "hazardous",
                f"{command.name} is hazardous and {approval} ({rule.label})",
            )
        for path, bounds in rule.hazardous_outside:
            for where, value in values_at(path, request):
                violation = bounds.violation(value)
                if violation is not None:
                    return Decision(
                        Verdict.NEEDS_APPROVAL,
                        "hazardous",
                        f"{where}: {violation} of the safe range, which {approval} ({rule.label})",
                    )
    return None


def _allowed(rules: list[CommandRule], approved: bool) -> str:
    how = "approved" if approved else "allowed"
    if not rules:
        return f"{how}: no rule applies"
    return f"{how} by " + ", ".join(rule.label for rule in rules)


# -- helpers -----------------------------------------------------------------------------


def _rule(model_id: str, command: str, config: Any) -> CommandRule:
    return CommandRule(
        model_id=model_id,
        command=command,
        bounds=tuple((path, _bounds(b)) for path, b in config.bounds.items()),
        hazardous=config.hazardous,
        hazardous_outside=tuple((path, _bounds(b)) for path, b in config.hazardous_outside.items()),
        rate_limit=(
            RateLimit(config.rate_limit.max, config.rate_limit.window)
            if config.rate_limit
            else None
        ),
        interlocks=tuple(
            Interlock(
                name=lock.name,
                alarms=frozenset(lock.alarms) if lock.alarms is not None else None,
                min_severity=lock.min_severity,
            )
            for lock in config.interlocks
        ),
        roles=frozenset(config.roles) if config.roles is not None else DEFAULT_ROLES,
    )


def _bounds(config: BoundsConfig) -> Bounds:
    allowed = tuple(config.allowed) if config.allowed is not None else None
    return Bounds(min=config.min, max=config.max, allowed=allowed)


def _problems(error: ValidationError) -> list[str]:
    out = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "<policy>"
        message = item["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {message} [{item['type']}]")
    return out


def _same(value: Any, allowed: Any) -> bool:
    # True == 1 in Python, but a boolean is not the number 1 in a JSON request.
    return isinstance(value, bool) == isinstance(allowed, bool) and value == allowed


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    text = json.dumps(value, default=repr) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
