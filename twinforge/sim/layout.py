"""The sample factory's plant layout: an ISA-95 hierarchy of twins, generated deterministically.

Site → areas → production lines → work cells → equipment, using the DTDL models in
``twinforge/sim/factory/models``. Every area holds a machining line (CNC cells) and a molding line
(injection-molding cells); every line has a power meter on its feeder and three cells; a
cell's producers feed its conveyor, the conveyor feeds the inspection station, and the
inspection station feeds the next cell. The layout is plain data: the simulator runs it and
``to_import_ndjson`` loads it into the twin graph.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinforge.sim.factory import MODELS_DIR

FACTORY = "dtmi:com:twinforge:factory"


def model_id(name: str) -> str:
    """The sample factory's DTMI for an interface name, e.g. ``Pump``."""
    return f"{FACTORY}:{name};1"


SITE = model_id("Site")
AREA = model_id("Area")
LINE = model_id("ProductionLine")
CELL = model_id("WorkCell")
CNC = model_id("CncMachine")
MOLDING = model_id("InjectionMoldingMachine")
PUMP = model_id("Pump")
CONVEYOR = model_id("Conveyor")
METER = model_id("PowerMeter")
INSPECTION = model_id("InspectionStation")
EQUIPMENT_MODELS = (CNC, MOLDING, PUMP, CONVEYOR, METER, INSPECTION)

#: Twin id prefix per model: ids read like ``cnc-01``, ``pump-03``, ``line-2``.
ID_PREFIX = {
    SITE: "site",
    AREA: "area",
    LINE: "line",
    CELL: "cell",
    CNC: "cnc",
    MOLDING: "molding",
    PUMP: "pump",
    CONVEYOR: "conveyor",
    METER: "meter",
    INSPECTION: "inspection",
}
_UNPADDED = {SITE, AREA, LINE}

LINES_PER_AREA = 2
CELLS_PER_LINE = 3
# Flow order inside a cell, per line type (the meter sits on the line's feeder, first).
_MACHINING_CELL = (CNC, CNC, CONVEYOR, INSPECTION)
_MOLDING_CELL = (PUMP, MOLDING, CONVEYOR, INSPECTION)
MAX_EQUIPMENT = 100_000
# Twin ids become MQTT topic levels: no separators, wildcards, whitespace or control characters.
_BAD_PREFIX = re.compile(r"[/+#\s\x00-\x1f\x7f]")

_MANUFACTURERS = {
    CNC: ("DMG Mori", "Haas", "Mazak", "Okuma"),
    MOLDING: ("Arburg", "Engel", "KraussMaffei"),
    PUMP: ("Grundfos", "KSB", "Wilo"),
    CONVEYOR: ("Interroll", "Dorner"),
    METER: ("Janitza", "Siemens"),
    INSPECTION: ("Cognex", "Keyence"),
}

DEFAULT_MODELS_DIR = MODELS_DIR


@dataclass(frozen=True, slots=True)
class TwinSpec:
    """One twin: its id, model and initial property values; ``parent`` contains it."""

    id: str
    model: str
    properties: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None

    def document(self) -> dict[str, Any]:
        """The twin as an Azure Digital Twins document (``$dtId``, ``$metadata``)."""
        return {"$dtId": self.id, "$metadata": {"$model": self.model}, **self.properties}


@dataclass(frozen=True, slots=True)
class RelationshipSpec:
    source: str
    id: str
    name: str
    target: str

    def document(self) -> dict[str, Any]:
        """The relationship as an import-job line."""
        return {
            "$dtId": self.source,
            "$relationshipId": self.id,
            "$targetId": self.target,
            "$relationshipName": self.name,
        }


@dataclass(slots=True)
class PlantLayout:
    """Twins (parents before children), relationships, and the DTDL documents they use.

    ``metered`` maps each power meter to the equipment on its feeder.
    """

    twins: list[TwinSpec]
    relationships: list[RelationshipSpec]
    models: list[dict[str, Any]]
    metered: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _by_id: dict[str, TwinSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {t.id: t for t in self.twins}
        if len(self._by_id) != len(self.twins):
            duplicate = next(i for i, n in Counter(t.id for t in self.twins).items() if n > 1)
            raise ValueError(f"twins: id {duplicate!r} appears more than once")

    def twin(self, twin_id: str) -> TwinSpec:
        try:
            return self._by_id[twin_id]
        except KeyError:
            raise KeyError(f"twin_id: no twin {twin_id!r} in the layout") from None

    def __contains__(self, twin_id: object) -> bool:
        return twin_id in self._by_id

    def equipment(self) -> list[TwinSpec]:
        """The equipment twins (the ones with telemetry and commands), in layout order."""
        return [t for t in self.twins if t.model in EQUIPMENT_MODELS]

    def of_model(self, model: str) -> list[TwinSpec]:
        return [t for t in self.twins if t.model == model]

    def to_import_ndjson(self) -> str:
        """The layout as an Azure Digital Twins import-job file (Header, Models, Twins,
        Relationships), as ``twin_service.import_job.import_ndjson`` reads it."""
        lines: list[Any] = [
            {"Section": "Header"},
            {"fileVersion": "1.0.0", "author": "twinforge", "organization": "sample factory"},
            {"Section": "Models"},
            *self.models,
            {"Section": "Twins"},
            *(t.document() for t in self.twins),
            {"Section": "Relationships"},
            *(r.document() for r in self.relationships),
        ]
        return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def load_factory_models(directory: Path | None = None) -> list[dict[str, Any]]:
    """The sample factory's DTDL documents (``twinforge/sim/factory/models/*.json``), in name order."""
    root = directory if directory is not None else DEFAULT_MODELS_DIR
    paths = sorted(root.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"models_dir: no DTDL *.json files in {root}")
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def sample_plant(
    equipment: int = 24,
    seed: int = 7,
    *,
    id_prefix: str = "",
    models_dir: Path | None = None,
) -> PlantLayout:
    """The sample factory with ``equipment`` equipment twins (1 to 100,000).

    The structure depends only on ``equipment``; ``seed`` picks serial numbers,
    manufacturers and set-points. Equal arguments give an equal layout. ``id_prefix`` goes
    before every twin id (``t1-cnc-01``), so several plants can share one graph or broker.
    """
    if isinstance(equipment, bool) or not isinstance(equipment, int):
        raise TypeError(f"equipment: must be an integer, got {type(equipment).__name__}")
    if not 1 <= equipment <= MAX_EQUIPMENT:
        raise ValueError(f"equipment: must be between 1 and {MAX_EQUIPMENT}, got {equipment}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: must be an integer, got {type(seed).__name__}")
    if not isinstance(id_prefix, str) or _BAD_PREFIX.search(id_prefix) or id_prefix[:1] == "$":
        raise ValueError(
            f"id_prefix: {id_prefix!r} may not start with $ or hold control characters, "
            "spaces or the MQTT topic characters / + #"
        )
    builder = _Builder(np.random.default_rng(seed), id_prefix)
    builder.build(equipment)
    return builder.layout(load_factory_models(models_dir))


class _Builder:
    """Plans the hierarchy with provisional keys, then names twins once counts are known
    (so the zero padding of ``cnc-01`` or ``cnc-001`` fits the plant)."""

    def __init__(self, rng: np.random.Generator, id_prefix: str) -> None:
        self.rng = rng
        self.id_prefix = id_prefix
        self.nodes: list[
            tuple[str, str, dict[str, Any], str | None]
        ] = []  # key, model, props, parent
        self.edges: list[tuple[str, str, str]] = []  # source key, name, target key
        self.metered: dict[str, list[str]] = {}
        self.counts: Counter[str] = Counter()

    def add(self, model: str, props: dict[str, Any], parent: str | None) -> str:
        self.counts[model] += 1
        key = f"{model}#{self.counts[model]}"
        self.nodes.append((key, model, props, parent))
        return key

    def build(self, equipment: int) -> None:
        site = self.add(
            SITE,
            {
                "siteName": "Twinforge Sample Works",
                "location": "Stuttgart, Germany",
                "timeZone": "Europe/Berlin",
            },
            None,
        )
        left = equipment
        area = ""
        line_index = 0
        while left > 0:
            if line_index % LINES_PER_AREA == 0:
                area = self.add(AREA, {"areaName": f"Hall {self.counts[AREA] + 1}"}, site)
                self.edges.append((site, "contains", area))
            machining = line_index % LINES_PER_AREA == 0
            left -= self.add_line(area, machining, left)
            line_index += 1

    def add_line(self, area: str, machining: bool, budget: int) -> int:
        number = self.counts[LINE] + 1
        kind = "Machining" if machining else "Molding"
        throughput = float(self.rng.integers(12, 25) * 10)
        line = self.add(
            LINE, {"lineName": f"{kind} line {number}", "targetThroughput": throughput}, area
        )
        self.edges.append((area, "hasLine", line))
        template = _MACHINING_CELL if machining else _MOLDING_CELL
        used = 0
        meter = ""
        previous_inspection: str | None = None
        for _ in range(CELLS_PER_LINE):
            if used >= budget:
                break
            cell = self.add(CELL, {"cellName": f"{kind} cell {self.counts[CELL] + 1}"}, line)
            self.edges.append((line, "hasCell", cell))
            if not meter:
                # The line's feeder meter lives in its first cell: every twin has one parent.
                meter = self.add_equipment(METER, cell)
                self.metered[meter] = []
                used += 1
            members: list[str] = []
            for model in template:
                if used >= budget:
                    break
                members.append(self.add_equipment(model, cell))
                used += 1
            self.metered[meter].extend(members)
            previous_inspection = self.wire_cell(members, previous_inspection)
        return used

    def add_equipment(self, model: str, cell: str) -> str:
        rng = self.rng
        props: dict[str, Any] = {
            "serialNumber": f"{ID_PREFIX[model][:3].upper()}-{int(rng.integers(16**6)):06X}",
            "manufacturer": str(rng.choice(_MANUFACTURERS[model])),
        }
        if model == CNC:
            props["targetFeedRate"] = float(rng.integers(80, 250) * 10)
        elif model == PUMP:
            props["state"] = "running"
        key = self.add(model, props, cell)
        self.edges.append((cell, "hasEquipment", key))
        return key

    def wire_cell(self, members: list[str], upstream: str | None) -> str | None:
        """Material flow: upstream inspection → producers → conveyor → inspection.
        Returns this cell's inspection station, the next cell's upstream."""
        by_model: dict[str, list[str]] = {}
        for key in members:
            by_model.setdefault(key.split("#")[0], []).append(key)
        producers = by_model.get(CNC, []) + by_model.get(MOLDING, [])
        conveyor = by_model.get(CONVEYOR, [None])[0]
        inspection = by_model.get(INSPECTION, [None])[0]
        if upstream is not None and producers:
            self.edges.append((upstream, "feeds", producers[0]))
        for pump in by_model.get(PUMP, []):  # cooling water for the molding machine
            for target in by_model.get(MOLDING, []):
                self.edges.append((pump, "feeds", target))
        if conveyor is not None:
            self.edges.extend((p, "feeds", conveyor) for p in producers)
            if inspection is not None:
                self.edges.append((conveyor, "feeds", inspection))
        return inspection if inspection is not None else upstream

    def layout(self, models: list[dict[str, Any]]) -> PlantLayout:
        names = {key: self.name(key) for key, *_ in self.nodes}
        twins = [
            TwinSpec(names[key], model, props, None if parent is None else names[parent])
            for key, model, props, parent in self.nodes
        ]
        relationships = [
            RelationshipSpec(names[s], f"{name}-{names[t]}", name, names[t])
            for s, name, t in self.edges
        ]
        metered = {names[m]: tuple(names[k] for k in ks) for m, ks in self.metered.items()}
        return PlantLayout(twins, relationships, models, metered)

    def name(self, key: str) -> str:
        model, number = key.split("#")
        width = 1 if model in _UNPADDED else max(2, len(str(self.counts[model])))
        return f"{self.id_prefix}{ID_PREFIX[model]}-{int(number):0{width}d}"
