"""The sample factory, shipped as package data: its DTDL models (an ISA-95 hierarchy and
equipment types, DTDL v3), the alarm rules and the safety policy the demo runs with."""

from __future__ import annotations

from pathlib import Path

FACTORY_DIR = Path(__file__).resolve().parent
MODELS_DIR = FACTORY_DIR / "models"
ALARM_RULES = FACTORY_DIR / "alarm_rules.json"
SAFETY_POLICY = FACTORY_DIR / "safety_policy.json"

__all__ = ["ALARM_RULES", "FACTORY_DIR", "MODELS_DIR", "SAFETY_POLICY"]
