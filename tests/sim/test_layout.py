"""The sample factory's layout: its ISA-95 hierarchy, its determinism, and its import into a
real embedded twin graph."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from twinforge.runtime.stores import FalkorDBStore
from twinforge.runtime.twin_service import TwinService
from twinforge.runtime.twin_service.import_job import import_ndjson
from twinforge.sim.layout import (
    AREA,
    CELL,
    CNC,
    EQUIPMENT_MODELS,
    LINE,
    METER,
    PUMP,
    SITE,
    sample_plant,
)
from twinforge.twin_models import parse_models, validate_twin_properties


def test_default_plant_has_every_kind_in_a_hierarchy() -> None:
    plant = sample_plant()
    equipment = plant.equipment()
    assert len(equipment) == 24
    assert {t.model for t in equipment} == set(EQUIPMENT_MODELS)
    assert [t.id for t in plant.of_model(SITE)] == ["site-1"]
    assert "cnc-01" in plant and "pump-03" in plant and "line-2" in plant
    # Every twin but the site has a parent one level up, linked by the right relationship.
    level_of = {SITE: None, AREA: SITE, LINE: AREA, CELL: LINE}
    link = {SITE: "contains", AREA: "hasLine", LINE: "hasCell", CELL: "hasEquipment"}
    edges = {(r.source, r.name, r.target) for r in plant.relationships}
    for twin in plant.twins:
        if twin.model == SITE:
            assert twin.parent is None
            continue
        parent = plant.twin(twin.parent)  # type: ignore[arg-type]
        expected = level_of.get(twin.model, CELL)
        assert parent.model == expected, twin.id
        assert (parent.id, link[parent.model], twin.id) in edges
    # Material flows within cells; every meter measures its line's other equipment.
    assert ("cnc-01", "feeds", "conveyor-01") in edges
    assert ("conveyor-01", "feeds", "inspection-01") in edges
    assert ("pump-01", "feeds", "molding-01") in edges
    metered = [t for ids in plant.metered.values() for t in ids]
    assert sorted(metered) == sorted(t.id for t in equipment if t.model != METER)


def test_properties_are_valid_for_their_models() -> None:
    plant = sample_plant(60, seed=3)
    models = parse_models(plant.models)
    for twin in plant.twins:
        assert validate_twin_properties(twin.properties, models.interface(twin.model)) == []
    assert all(t.properties["state"] == "running" for t in plant.of_model(PUMP))
    assert all(t.properties["targetFeedRate"] > 0 for t in plant.of_model(CNC))


def test_deterministic_and_seeded() -> None:
    assert sample_plant(40, seed=1) == sample_plant(40, seed=1)
    first, other = sample_plant(40, seed=1), sample_plant(40, seed=2)
    assert [t.id for t in first.twins] == [t.id for t in other.twins]
    assert [t.properties for t in first.twins] != [t.properties for t in other.twins]


def test_scales_to_a_thousand_with_unique_readable_ids() -> None:
    plant = sample_plant(1000)
    assert len(plant.equipment()) == 1000
    ids = [t.id for t in plant.twins]
    assert len(set(ids)) == len(ids)
    counts = Counter(t.model for t in plant.equipment())
    assert counts[CNC] > 100 and "cnc-001" in plant  # padding widens with the count
    # Relationship ids must be unique per source twin for the import to take them all.
    assert len({(r.source, r.id) for r in plant.relationships}) == len(plant.relationships)


def test_id_prefix_and_bad_arguments() -> None:
    plant = sample_plant(5, id_prefix="t1-")
    assert all(t.id.startswith("t1-") for t in plant.twins)
    assert all(r.target.startswith("t1-") for r in plant.relationships)
    with pytest.raises(ValueError, match="equipment: must be between 1 and"):
        sample_plant(0)
    with pytest.raises(TypeError, match="equipment: must be an integer"):
        sample_plant(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"id_prefix: .* MQTT topic characters"):
        sample_plant(3, id_prefix="a/b")
    with pytest.raises(FileNotFoundError, match="models_dir: no DTDL"):
        sample_plant(3, models_dir=Path("/nonexistent"))
    with pytest.raises(KeyError, match="twin_id: no twin 'nope'"):
        sample_plant(3).twin("nope")


def test_ndjson_sections_and_models() -> None:
    plant = sample_plant()
    lines = [json.loads(line) for line in plant.to_import_ndjson().splitlines()]
    sections = [line["Section"] for line in lines if set(line) == {"Section"}]
    assert sections == ["Header", "Models", "Twins", "Relationships"]
    model_ids = {line["@id"] for line in lines if "@id" in line}
    assert {SITE, CNC, "dtmi:com:twinforge:factory:Equipment;1"} <= model_ids


@pytest.mark.parametrize("equipment", [24, 300])
def test_imports_into_the_embedded_graph_without_refusals(
    embedded_store: FalkorDBStore, equipment: int
) -> None:
    store = embedded_store
    store.clear()
    plant = sample_plant(equipment)
    report = import_ndjson(TwinService(store), plant.to_import_ndjson().splitlines())
    assert report.errors == []
    assert (report.models, report.twins, report.relationships) == (
        len(plant.models),
        len(plant.twins),
        len(plant.relationships),
    )
    rows = store.read(
        "MATCH (:Twin {twin_id: $id})-[:hasEquipment]->(e:Twin) RETURN e.twin_id AS id",
        {"id": "cell-01"},
    )
    assert sorted(r["id"] for r in rows) == sorted(
        r.target for r in plant.relationships if r.source == "cell-01" and r.name == "hasEquipment"
    )
