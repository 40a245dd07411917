"""The safety policy's file format: what a policy JSON file (or dict) may say.

Keys are camelCase as in DTDL (``rateLimit``, ``minSeverity``); the snake_case spellings are
accepted too. Values are checked strictly (``"5"`` is not a number) and every problem is
reported with its place in the document::

    {"models": {"dtmi:com:example:Cnc;1": {"setSpindleSpeed": {
        "bounds": {"rpm": {"min": 0, "max": 24000}},
        "rateLimit": {"max": 10, "window": 60},
        "interlocks": [{"name": "noAlarms"}],
        "hazardous": false,
        "hazardousOutside": {"rpm": {"max": 18000}},
        "roles": ["operator", "engineer", "admin"]}}}}

A bounds path starts with the request's DTDL name (``rpm``, ``part``) and goes down Object
fields by name (``part.partId``); ``*`` stands for every element of an Array or every value
of a Map (``recipe.steps.*.temperature``).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel

from twinforge.auth.principal import VIEWER
from twinforge.twin_models import is_valid_dtmi

__all__ = [
    "BoundsConfig",
    "CommandRuleConfig",
    "InterlockConfig",
    "RateLimitConfig",
    "SafetyPolicyConfig",
]

_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")
_MAX_NAME = 512  # DTDL's limit on a name's length
_MAX_PATH_SEGMENTS = 32


def _name(value: str) -> str:
    if len(value) > _MAX_NAME or not _NAME.match(value):
        raise ValueError(f"{value[:80]!r} is not a DTDL name (a letter, then letters, digits, _)")
    return value


def _model_id(value: str) -> str:
    if not is_valid_dtmi(value):
        raise ValueError(f"{value[:80]!r} is not a DTMI")
    return value


def _path(value: str) -> str:
    segments = value.split(".")
    if len(segments) > _MAX_PATH_SEGMENTS:
        raise ValueError(f"a bounds path has at most {_MAX_PATH_SEGMENTS} segments")
    if segments[0] == "*" or not all(s == "*" or _NAME.match(s) for s in segments):
        raise ValueError(
            f"{value[:80]!r} is not a bounds path (the request name, then field names or *, "
            "joined by dots)"
        )
    return value


DtdlName = Annotated[str, AfterValidator(_name)]
ModelId = Annotated[str, AfterValidator(_model_id)]
BoundsPath = Annotated[str, AfterValidator(_path)]
JsonScalar = StrictBool | StrictInt | StrictFloat | StrictStr


class _Config(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class BoundsConfig(_Config):
    """Limits on the value at one request path: ``min``/``max`` for numbers, or ``allowed``."""

    min: float | None = None
    max: float | None = None
    allowed: list[JsonScalar] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min is None and self.max is None and self.allowed is None:
            raise ValueError("give min, max or allowed")
        for limit in (self.min, self.max):
            if limit is not None and not math.isfinite(limit):
                raise ValueError("min and max must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class RateLimitConfig(_Config):
    """At most ``max`` invocations per twin in any ``window`` seconds."""

    max: int = Field(ge=1, le=1_000_000)
    window: float = Field(gt=0, le=7 * 86400)


class InterlockConfig(_Config):
    """Refuse while a matching alarm is active on the twin.

    With neither ``alarms`` nor ``minSeverity``, any active alarm matches; ``alarms``
    narrows it to those names, ``minSeverity`` to alarms at least that severe.
    """

    name: str | None = Field(default=None, max_length=200)
    alarms: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1
    )
    min_severity: int | None = None


class CommandRuleConfig(_Config):
    """The safety rules of one command of one model (and the models extending it)."""

    bounds: dict[BoundsPath, BoundsConfig] = Field(default_factory=dict)
    hazardous: bool = False
    hazardous_outside: dict[BoundsPath, BoundsConfig] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None
    interlocks: list[InterlockConfig] = Field(default_factory=list)
    roles: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, min_length=1
    )

    @model_validator(mode="after")
    def _no_viewer(self) -> Self:
        if self.roles is not None and VIEWER in self.roles:
            raise ValueError("roles: the viewer role may never invoke commands")
        return self


class SafetyPolicyConfig(_Config):
    """A whole policy: model id → command name → rule."""

    models: dict[ModelId, dict[DtdlName, CommandRuleConfig]] = Field(default_factory=dict)
    description: str | None = None
