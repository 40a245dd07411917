"""The sample factory, shipped as package data: its DTDL models (an ISA-95 hierarchy and
equipment types, DTDL v3), the alarm rules and the safety policy the demo runs with, and
its physics: which of twinforge's FMUs runs beside the twins of each equipment type, and
the anomaly models they carry."""

from __future__ import annotations

import json
from pathlib import Path

from twinforge.physics.config import PhysicsBinding, load_physics_config

FACTORY_DIR = Path(__file__).resolve().parent
MODELS_DIR = FACTORY_DIR / "models"
ALARM_RULES = FACTORY_DIR / "alarm_rules.json"
SAFETY_POLICY = FACTORY_DIR / "safety_policy.json"
#: The bindings, with ``fmu`` naming one of :data:`twinforge.sim.fmus.FMU_NAMES`.
PHYSICS = FACTORY_DIR / "physics.json"
#: The anomaly models its twins carry (see :mod:`twinforge.ml.config`).
ML = FACTORY_DIR / "ml.json"

__all__ = [
    "ALARM_RULES",
    "FACTORY_DIR",
    "ML",
    "MODELS_DIR",
    "PHYSICS",
    "SAFETY_POLICY",
    "sample_physics",
]


def sample_physics(cache_dir: Path | None = None) -> list[PhysicsBinding]:
    """The sample factory's physics bindings, each ``fmu`` the built FMU of its name
    (built into ``cache_dir`` on first use)."""
    # Imported here: the plant layout imports this package for its models, and needs
    # neither the FMUs' sources nor a compiler.
    from twinforge.sim.fmus import fmu_path

    bindings = json.loads(PHYSICS.read_text(encoding="utf-8"))
    for binding in bindings:
        binding["fmu"] = str(fmu_path(binding["fmu"], cache_dir))
    return load_physics_config(bindings)
