"""DTDL units against FMU units: which are the same quantity, and the linear map between
them (an FMU from Modelica speaks SI, a twin's telemetry often bar, m³/h or rpm)."""

from __future__ import annotations

import math

#: Unit symbol -> (SI base symbol, scale, offset): ``si = value * scale + offset``.
_SYMBOLS: dict[str, tuple[str, float, float]] = {
    "K": ("K", 1.0, 0.0),
    "degC": ("K", 1.0, 273.15),
    "Pa": ("Pa", 1.0, 0.0),
    "kPa": ("Pa", 1e3, 0.0),
    "MPa": ("Pa", 1e6, 0.0),
    "bar": ("Pa", 1e5, 0.0),
    "m3/s": ("m3/s", 1.0, 0.0),
    "m3/h": ("m3/s", 1 / 3600, 0.0),
    "l/s": ("m3/s", 1e-3, 0.0),
    "l/min": ("m3/s", 1e-3 / 60, 0.0),
    "rad/s": ("rad/s", 1.0, 0.0),
    "rpm": ("rad/s", 2 * math.pi / 60, 0.0),
    "1/min": ("rad/s", 2 * math.pi / 60, 0.0),
    "A": ("A", 1.0, 0.0),
    "V": ("V", 1.0, 0.0),
    "W": ("W", 1.0, 0.0),
    "kW": ("W", 1e3, 0.0),
    "J": ("J", 1.0, 0.0),
    "kWh": ("J", 3.6e6, 0.0),
    "m/s": ("m/s", 1.0, 0.0),
    "mm/s": ("m/s", 1e-3, 0.0),
    "m/min": ("m/s", 1 / 60, 0.0),
    "mm/min": ("m/s", 1e-3 / 60, 0.0),
    "s": ("s", 1.0, 0.0),
    "min": ("s", 60.0, 0.0),
    "h": ("s", 3600.0, 0.0),
    "m": ("m", 1.0, 0.0),
    "mm": ("m", 1e-3, 0.0),
    "kg": ("kg", 1.0, 0.0),
    "N": ("N", 1.0, 0.0),
    "N.m": ("N.m", 1.0, 0.0),
    "Hz": ("Hz", 1.0, 0.0),
    "1": ("1", 1.0, 0.0),
    "%": ("1", 0.01, 0.0),
}

#: DTDL unit names (the ``unit`` of semantic types) -> symbol.
_DTDL: dict[str, str] = {
    "kelvin": "K",
    "degreeCelsius": "degC",
    "pascal": "Pa",
    "kilopascal": "kPa",
    "megapascal": "MPa",
    "bar": "bar",
    "cubicMetrePerSecond": "m3/s",
    "cubicMetrePerHour": "m3/h",
    "litrePerSecond": "l/s",
    "litrePerMinute": "l/min",
    "radianPerSecond": "rad/s",
    "revolutionPerMinute": "rpm",
    "ampere": "A",
    "volt": "V",
    "watt": "W",
    "kilowatt": "kW",
    "joule": "J",
    "kilowattHour": "kWh",
    "metrePerSecond": "m/s",
    "millimetrePerSecond": "mm/s",
    "second": "s",
    "minute": "min",
    "hour": "h",
    "metre": "m",
    "millimetre": "mm",
    "kilogram": "kg",
    "newton": "N",
    "newtonMetre": "N.m",
    "hertz": "Hz",
    "unity": "1",
    "percent": "%",
}

#: Spellings FMUs use for the same symbols.
_ALIASES = {"°C": "degC", "deg C": "degC", "m3/hr": "m3/h", "r/min": "rpm", "Nm": "N.m"}

Conversion = tuple[float, float]
"""``(scale, offset)``: ``target = value * scale + offset``."""

IDENTITY: Conversion = (1.0, 0.0)


def _symbol(unit: str) -> str:
    return _DTDL.get(unit) or _ALIASES.get(unit) or unit


def conversion(source: str | None, target: str | None) -> Conversion | None:
    """The map from a value in ``source`` units to ``target`` units (DTDL names or FMU
    symbols, either side); identity when either is undeclared, None when they measure
    different quantities or one is unknown and they differ."""
    if source is None or target is None:
        return IDENTITY
    a, b = _symbol(source), _symbol(target)
    if a == b:
        return IDENTITY
    if a not in _SYMBOLS or b not in _SYMBOLS:
        return None
    (base_a, scale_a, offset_a), (base_b, scale_b, offset_b) = _SYMBOLS[a], _SYMBOLS[b]
    if base_a != base_b:
        return None
    return scale_a / scale_b, (offset_a - offset_b) / scale_b
