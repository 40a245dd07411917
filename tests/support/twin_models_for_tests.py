"""A small plant's DTDL models for the twin service tests."""

from __future__ import annotations

from typing import Any

CTX = "dtmi:dtdl:context;3"
EQUIPMENT = "dtmi:test:plant:Equipment;1"
PUMP = "dtmi:test:plant:Pump;1"
TANK = "dtmi:test:plant:Tank;1"
MOTOR = "dtmi:test:plant:Motor;1"
LINE = "dtmi:test:plant:Line;1"

EQUIPMENT_MODEL: dict[str, Any] = {
    "@context": CTX,
    "@id": EQUIPMENT,
    "@type": "Interface",
    "contents": [
        {"@type": "Property", "name": "serialNumber", "schema": "string"},
        {"@type": "Property", "name": "ratedPowerKw", "schema": "double", "writable": True},
        {"@type": "Telemetry", "name": "powerKw", "schema": "double"},
        {
            "@type": "Relationship",
            "name": "feeds",
            "target": EQUIPMENT,
            "properties": [{"@type": "Property", "name": "pipeDiameterMm", "schema": "integer"}],
        },
    ],
}
MOTOR_MODEL: dict[str, Any] = {
    "@context": CTX,
    "@id": MOTOR,
    "@type": "Interface",
    "contents": [
        {"@type": "Property", "name": "speedRpm", "schema": "integer"},
        {"@type": "Property", "name": "vendor", "schema": "string"},
    ],
}
PUMP_MODEL: dict[str, Any] = {
    "@context": CTX,
    "@id": PUMP,
    "@type": "Interface",
    "extends": EQUIPMENT,
    "contents": [
        {
            "@type": "Property",
            "name": "state",
            "schema": {
                "@type": "Enum",
                "valueSchema": "string",
                "enumValues": [
                    {"name": "running", "enumValue": "running"},
                    {"name": "stopped", "enumValue": "stopped"},
                ],
            },
        },
        {
            "@type": "Property",
            "name": "limits",
            "schema": {
                "@type": "Object",
                "fields": [
                    {"name": "maxPressureBar", "schema": "double"},
                    {"name": "maxFlow", "schema": "double"},
                ],
            },
        },
        {"@type": "Component", "name": "motor", "schema": MOTOR},
        {"@type": "Relationship", "name": "backupOf", "target": PUMP, "maxMultiplicity": 1},
    ],
}
TANK_MODEL: dict[str, Any] = {
    "@context": CTX,
    "@id": TANK,
    "@type": "Interface",
    "extends": EQUIPMENT,
    "contents": [{"@type": "Property", "name": "levelPercent", "schema": "double"}],
}
LINE_MODEL: dict[str, Any] = {
    "@context": CTX,
    "@id": LINE,
    "@type": "Interface",
    "contents": [
        {"@type": "Property", "name": "lineName", "schema": "string"},
        {"@type": "Relationship", "name": "hasEquipment", "target": EQUIPMENT},
    ],
}
ALL_MODELS = [EQUIPMENT_MODEL, MOTOR_MODEL, PUMP_MODEL, TANK_MODEL, LINE_MODEL]


def pump(twin_id: str, **properties: Any) -> dict[str, Any]:
    return {"$dtId": twin_id, "$metadata": {"$model": PUMP}, **properties}


def tank(twin_id: str, **properties: Any) -> dict[str, Any]:
    return {"$dtId": twin_id, "$metadata": {"$model": TANK}, **properties}
