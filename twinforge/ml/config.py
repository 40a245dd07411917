"""The model configuration: which anomaly models the twins of a DTDL interface carry.

A JSON list, one entry per model and interface::

    [{"name": "anomaly", "interface": "dtmi:com:example:MoldingMachine;1",
      "detector": "memae", "features": ["barrelSetpoint", "meltTemperature",
      "meltTemperature.residual"], "settings": ["barrelSetpoint"]},
     {"name": "energy", "interface": "dtmi:com:example:Equipment;1",
      "detector": "isolation_forest", "features": ["powerKw"]}]

``features`` are telemetry names, or the ``<name>.residual`` / ``.expected`` values physics
derives; ``settings`` are those features that are machine settings, clustered so that
each setting cluster gets its own model. A twin carries, per model name, the entry of the
most specific interface it implements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from twinforge.ml.anomaly.detectors import AUTOENCODER, DETECTORS
from twinforge.ml.anomaly.threshold import ThresholdRule
from twinforge.ml.anomaly.training import TrainingConfig

Name = Annotated[str, Field(min_length=1, max_length=256)]


class ModelBinding(BaseModel):
    """One anomaly model of one interface and how it is trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-zA-Z0-9_]{0,63}$", description="e.g. anomaly, energy")
    interface: Name
    detector: str = AUTOENCODER
    features: tuple[Name, ...] = Field(min_length=1)
    settings: tuple[Name, ...] = ()
    min_samples: int = Field(default=500, ge=10)
    persistence: int = Field(default=3, ge=1, le=100)
    interval_s: float = Field(default=10.0, ge=0.0, le=3600.0)
    """Each twin is scored once per window of this many seconds (0: every sample)."""
    quantile: float = Field(default=1.0, ge=0.5, le=1.0)
    cv_weight: float = Field(default=0.0, ge=0.0)
    margin: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> ModelBinding:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector: {self.detector!r} is not one of {', '.join(DETECTORS)}")
        extra = [s for s in self.settings if s not in self.features]
        if extra:
            raise ValueError(f"settings: {', '.join(extra)} must also be features")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: each feature once")
        return self

    def training_config(self, *, seed: int = 0, quick: bool = False) -> TrainingConfig:
        rule = ThresholdRule(cv_weight=self.cv_weight, margin=self.margin, quantile=self.quantile)
        return TrainingConfig(
            detector=self.detector,
            min_samples=self.min_samples,
            rule=rule,
            persistence=self.persistence,
            interval_s=self.interval_s,
            seed=seed,
            quick=quick,
        )


_BINDINGS = TypeAdapter(list[ModelBinding])


def load_model_config(source: Path | str | list[dict[str, Any]]) -> list[ModelBinding]:
    """The entries of a JSON file, JSON text or decoded list; ValueError naming each bad
    field, and for two entries of one name and interface."""
    if isinstance(source, Path):
        source = source.read_text(encoding="utf-8")
    try:
        data = json.loads(source) if isinstance(source, str) else source
        bindings = _BINDINGS.validate_python(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"model config: not JSON: {error}") from None
    except ValidationError as error:
        problems = [f"[{'.'.join(str(p) for p in e['loc'])}]: {e['msg']}" for e in error.errors()]
        raise ValueError("model config: " + "; ".join(problems)) from None
    seen: set[tuple[str, str]] = set()
    for binding in bindings:
        key = (binding.name, binding.interface)
        if key in seen:
            raise ValueError(f"model config: two {binding.name} models for {binding.interface}")
        seen.add(key)
    return bindings
