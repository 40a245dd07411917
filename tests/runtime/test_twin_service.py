"""The twin service on both graph backends (embedded FalkorDB, Neo4j over Bolt)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.twin_models_for_tests import (
    ALL_MODELS,
    EQUIPMENT,
    EQUIPMENT_MODEL,
    LINE,
    MOTOR_MODEL,
    PUMP,
    TANK,
    pump,
    tank,
)

from twinforge.runtime.events import EventKind, TwinEvent
from twinforge.runtime.twin_service import (
    AlreadyExists,
    Conflict,
    NotFound,
    Op,
    PreconditionFailed,
    Predicate,
    QueryRejected,
    Traversal,
    TwinQuery,
    TwinService,
    ValidationFailed,
    import_ndjson,
)


@pytest.fixture
def service(graph_store: Any) -> TwinService:
    svc = TwinService(graph_store)
    svc.models.upload(ALL_MODELS)
    return svc


@pytest.fixture
def plant(service: TwinService) -> TwinService:
    """tank1 feeds pump1 and pump2 (pump2 backs pump1); both pumps feed tank2."""
    service.create_twin("tank1", tank("tank1", levelPercent=80.0, serialNumber="T-1"))
    service.create_twin(
        "pump1", pump("pump1", state="running", ratedPowerKw=7.5, serialNumber="P-1")
    )
    service.create_twin(
        "pump2", pump("pump2", state="stopped", ratedPowerKw=5.5, serialNumber="P-2")
    )
    service.create_twin("tank2", tank("tank2", levelPercent=10.0))
    for rid, source, target in [
        ("f1", "tank1", "pump1"),
        ("f2", "tank1", "pump2"),
        ("f3", "pump1", "tank2"),
        ("f4", "pump2", "tank2"),
    ]:
        service.create_relationship(
            source, rid, {"$relationshipName": "feeds", "$targetId": target}
        )
    service.create_relationship(
        "pump2", "b1", {"$relationshipName": "backupOf", "$targetId": "pump1"}
    )
    return service


def _twin_count(service: TwinService) -> int:
    return service.cypher("MATCH (t:Twin) RETURN count(t) AS n")[0]["n"]


def _edge_count(service: TwinService) -> int:
    return service.cypher("MATCH ()-[r]->() RETURN count(r) AS n")[0]["n"]


# -- models --------------------------------------------------------------------------


def test_models_upload_list_and_dependencies(service: TwinService) -> None:
    listed = {m.id for m in service.models.list()}
    assert listed == {m["@id"] for m in ALL_MODELS}
    pump_model = service.models.get(PUMP)
    assert set(pump_model.dependencies) == {EQUIPMENT, "dtmi:test:plant:Motor;1"}
    assert {m.id for m in service.models.list(dependencies_for=[PUMP])} == {
        PUMP,
        EQUIPMENT,
        "dtmi:test:plant:Motor;1",
    }
    assert pump_model.to_dict()["model"]["@id"] == PUMP
    assert service.models.lineage(PUMP) == [PUMP, EQUIPMENT]


def test_models_survive_a_new_service_on_the_same_store(service: TwinService) -> None:
    again = TwinService(service.store)
    assert {m.id for m in again.models.list()} == {m["@id"] for m in ALL_MODELS}
    assert again.models.interface(PUMP).properties.keys() >= {"state", "serialNumber"}


def test_model_upload_rejects_duplicates_invalid_dtdl_and_unresolved(service: TwinService) -> None:
    with pytest.raises(AlreadyExists):
        service.models.upload([EQUIPMENT_MODEL])
    bad = {
        **MOTOR_MODEL,
        "@id": "dtmi:test:plant:Bad;1",
        "contents": [{"@type": "Property", "name": "x"}],
    }
    with pytest.raises(ValidationFailed) as caught:
        service.models.upload([bad])
    assert caught.value.problems[0].rule.startswith("dtmi:dtdl:parsingError:")
    dangling = {
        **MOTOR_MODEL,
        "@id": "dtmi:test:plant:Dangling;1",
        "extends": "dtmi:test:plant:Nowhere;1",
    }
    with pytest.raises(ValidationFailed) as caught:
        service.models.upload([dangling])
    assert caught.value.problems[0].field == "dtmi:test:plant:Nowhere;1"
    assert "dtmi:test:plant:Bad;1" not in {m.id for m in service.models.list()}


def test_model_upload_in_a_batch_resolves_against_stored_models(service: TwinService) -> None:
    child = {
        "@context": "dtmi:dtdl:context;3",
        "@id": "dtmi:test:plant:MixingTank;1",
        "@type": "Interface",
        "extends": TANK,
    }
    stored = service.models.upload([child])
    assert stored[0].dependencies == (TANK,)
    assert service.models.lineage("dtmi:test:plant:MixingTank;1") == [
        "dtmi:test:plant:MixingTank;1",
        TANK,
        EQUIPMENT,
    ]


def test_decommissioned_model_takes_no_new_twins(service: TwinService) -> None:
    service.create_twin("t-old", tank("t-old"))
    service.models.decommission(TANK)
    with pytest.raises(ValidationFailed) as caught:
        service.create_twin("t-new", tank("t-new"))
    assert caught.value.problems[0].rule == "decommissioned"
    # existing twins of the model still change
    service.patch_twin("t-old", [{"op": "add", "path": "/levelPercent", "value": 5.0}])


def test_model_delete_refused_while_used(service: TwinService) -> None:
    with pytest.raises(Conflict):
        service.models.delete(EQUIPMENT)  # Pump and Tank extend it
    service.create_twin("l1", {"$metadata": {"$model": LINE}})
    with pytest.raises(Conflict) as caught:
        service.models.delete(LINE)
    assert caught.value.problems[0].field == "l1"
    service.delete_twin("l1")
    service.models.delete(LINE)
    with pytest.raises(NotFound):
        service.models.get(LINE)


# -- twins ---------------------------------------------------------------------------


def test_create_and_get_twin_with_metadata_and_components(service: TwinService) -> None:
    created = service.create_twin("p1", pump("p1", state="running", limits={"maxPressureBar": 6.0}))
    assert created["$etag"].startswith('W/"')
    assert created["motor"]["$metadata"] == {}  # components exist from the start
    metadata = created["$metadata"]
    assert metadata["$model"] == PUMP
    assert set(metadata) >= {"$lastUpdateTime", "state", "limits"}
    assert service.get_twin("p1") == created
    with pytest.raises(AlreadyExists):
        service.create_twin("p1", pump("p1"))
    with pytest.raises(NotFound):
        service.get_twin("nope")


@pytest.mark.parametrize(
    ("document", "field", "rule"),
    [
        (pump("x", state="flying"), "state", "enum"),
        (pump("x", ratedPowerKw="fast"), "ratedPowerKw", None),
        (pump("x", unknownThing=1), "unknownThing", None),
        (pump("x", limits={"maxPressureBar": "high"}), "limits.maxPressureBar", None),
        (pump("x", motor={"speedRpm": 1.5}), "motor.speedRpm", None),
        (
            {"$metadata": {"$model": "dtmi:test:plant:Nothing;1"}},
            "$metadata.$model",
            "unknownModel",
        ),
        ({"$metadata": {}}, "$metadata.$model", "required"),
        (pump("other"), "$dtId", "mismatch"),
    ],
)
def test_invalid_twins_name_the_field_and_change_nothing(
    service: TwinService, document: dict, field: str, rule: str | None
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        service.create_twin("x", document)
    problem = caught.value.problems[0]
    assert problem.field == field
    if rule:
        assert problem.rule == rule
    assert _twin_count(service) == 0


@pytest.mark.parametrize(
    "twin_id", ["", "$x", "a\nb", "x" * 129, 42, "x'}) DETACH DELETE t //", "p1` {a:1}) //"]
)
def test_hostile_twin_ids(service: TwinService, twin_id: Any) -> None:
    service.create_twin("keep", tank("keep"))
    try:
        service.create_twin(twin_id, tank(twin_id) if isinstance(twin_id, str) else tank("y"))
    except ValidationFailed as exc:
        assert exc.problems[0].field == "$dtId"
    else:  # ids carrying Cypher are plain data
        assert service.get_twin(twin_id)["$dtId"] == twin_id
    assert service.get_twin("keep")["$dtId"] == "keep"


def test_property_values_carrying_cypher_are_stored_verbatim(service: TwinService) -> None:
    evil = "x'}) MATCH (n) DETACH DELETE n //"
    service.create_twin("t1", tank("t1", serialNumber=evil))
    assert service.get_twin("t1")["serialNumber"] == evil
    page = service.query_twins(TwinQuery(where=(Predicate("serialNumber", Op.EQ, evil),)))
    assert [t["$dtId"] for t in page.items] == ["t1"]


def test_oversize_twin_is_refused(service: TwinService) -> None:
    with pytest.raises(ValidationFailed) as caught:
        service.create_twin("big", tank("big", serialNumber="x" * 1_100_000))
    assert caught.value.problems[0].rule == "maxSize"
    assert _twin_count(service) == 0


def test_replace_with_etags(service: TwinService) -> None:
    first = service.create_twin("p1", pump("p1", state="running", serialNumber="A"))
    second = service.replace_twin(
        "p1", pump("p1", state="stopped", serialNumber="A"), if_match=first["$etag"]
    )
    assert second["$etag"] != first["$etag"]
    # the unchanged value keeps its update time, the changed one moves on
    assert second["$metadata"]["serialNumber"] == first["$metadata"]["serialNumber"]
    assert second["$metadata"]["state"] != first["$metadata"]["state"]
    with pytest.raises(PreconditionFailed):
        service.replace_twin("p1", pump("p1", state="running"), if_match=first["$etag"])
    assert service.get_twin("p1")["state"] == "stopped"
    assert service.replace_twin("p1", pump("p1"), if_match="*")["$etag"]


def test_json_patch(service: TwinService) -> None:
    service.create_twin("p1", pump("p1", state="running", ratedPowerKw=7.5))
    patched = service.patch_twin(
        "p1",
        [
            {"op": "replace", "path": "/state", "value": "stopped"},
            {"op": "remove", "path": "/ratedPowerKw"},
            {"op": "add", "path": "/motor/speedRpm", "value": 1450},
            {"op": "add", "path": "/limits", "value": {"maxFlow": 12.5}},
        ],
    )
    assert patched["state"] == "stopped"
    assert "ratedPowerKw" not in patched and "ratedPowerKw" not in patched["$metadata"]
    assert patched["motor"]["speedRpm"] == 1450
    assert "speedRpm" in patched["motor"]["$metadata"]
    stored = service.get_twin("p1")
    assert stored == patched
    # the removed value is gone from queries too
    assert not service.query_twins(TwinQuery(where=(Predicate("ratedPowerKw", Op.EXISTS),))).items
    assert service.query_twins(TwinQuery(where=(Predicate("motor.speedRpm", Op.GT, 1000),))).items


@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        ([{"op": "replace", "path": "/state", "value": 3}], None),
        ([{"op": "replace", "path": "/$etag", "value": "x"}], "systemProperty"),
        ([{"op": "remove", "path": "/nothing"}], "jsonPatch"),
        ([{"op": "explode", "path": "/state"}], "jsonPatch"),
        ([], "type"),
        ("not a patch", "type"),
        ([{"op": "add", "path": "/unknown", "value": 1}], None),
    ],
)
def test_bad_patches_leave_the_twin_unchanged(
    service: TwinService, patch: Any, rule: str | None
) -> None:
    before = service.create_twin("p1", pump("p1", state="running"))
    with pytest.raises(ValidationFailed) as caught:
        service.patch_twin("p1", patch)
    if rule:
        assert caught.value.problems[0].rule == rule
    assert service.get_twin("p1") == before


def test_patch_with_stale_etag_is_refused(service: TwinService) -> None:
    first = service.create_twin("p1", pump("p1", state="running"))
    service.patch_twin("p1", [{"op": "replace", "path": "/state", "value": "stopped"}])
    with pytest.raises(PreconditionFailed):
        service.patch_twin(
            "p1", [{"op": "replace", "path": "/state", "value": "running"}], if_match=first["$etag"]
        )
    assert service.get_twin("p1")["state"] == "stopped"


def test_patch_can_move_a_twin_to_another_model(service: TwinService) -> None:
    service.create_twin("e1", tank("e1", levelPercent=3.0))
    with pytest.raises(ValidationFailed):  # levelPercent is not a Pump property
        service.patch_twin("e1", [{"op": "replace", "path": "/$metadata/$model", "value": PUMP}])
    moved = service.patch_twin(
        "e1",
        [
            {"op": "remove", "path": "/levelPercent"},
            {"op": "replace", "path": "/$metadata/$model", "value": PUMP},
        ],
    )
    assert moved["$metadata"]["$model"] == PUMP
    assert "motor" in moved


def test_delete_twin_refused_with_relationships_unless_cascade(plant: TwinService) -> None:
    with pytest.raises(Conflict):
        plant.delete_twin("pump1")
    assert plant.get_twin("pump1")
    with pytest.raises(PreconditionFailed):
        plant.delete_twin("tank2", if_match='W/"stale"')
    plant.delete_twin("pump1", cascade=True)
    with pytest.raises(NotFound):
        plant.get_twin("pump1")
    assert plant.list_incoming_relationships("tank2")[0]["$sourceId"] == "pump2"
    assert plant.list_relationships("tank1") == [plant.get_relationship("tank1", "f2")]


# -- relationships -------------------------------------------------------------------


def test_relationships_out_and_in(plant: TwinService) -> None:
    out = plant.list_relationships("tank1")
    assert [(r["$relationshipId"], r["$targetId"]) for r in out] == [
        ("f1", "pump1"),
        ("f2", "pump2"),
    ]
    assert {r["$sourceId"] for r in plant.list_incoming_relationships("tank2")} == {
        "pump1",
        "pump2",
    }
    assert [r["$relationshipId"] for r in plant.list_relationships("pump2", "backupOf")] == ["b1"]
    got = plant.get_relationship("pump2", "b1")
    assert got["$relationshipName"] == "backupOf" and got["$etag"]


def test_relationships_of_many_twins_in_one_call(plant: TwinService) -> None:
    ids = ["tank1", "tank2", "pump2", "nobody"]
    out = plant.relationships_of(ids)
    assert set(out) <= set(ids) and "nobody" not in out
    for twin_id in ids:
        assert out.get(twin_id, []) == plant.list_relationships(twin_id)
    incoming = plant.incoming_relationships_of(ids)
    for twin_id in ids:
        assert incoming.get(twin_id, []) == plant.list_incoming_relationships(twin_id)


def test_relationship_rules(plant: TwinService) -> None:
    edges = _edge_count(plant)

    def refused(error: type[Exception], source: str, rid: str, doc: dict) -> Exception:
        with pytest.raises(error) as caught:
            plant.create_relationship(source, rid, doc)
        return caught.value

    e = refused(
        ValidationFailed, "tank1", "x", {"$relationshipName": "flowsTo", "$targetId": "pump1"}
    )
    assert e.problems[0].rule == "unknownRelationship" and "feeds" in e.problems[0].message
    # backupOf must target a Pump; a Tank is Equipment but no Pump
    e = refused(
        ValidationFailed, "pump1", "x", {"$relationshipName": "backupOf", "$targetId": "tank1"}
    )
    assert e.problems[0].rule == "targetModel"
    refused(ValidationFailed, "pump1", "x", {"$relationshipName": "feeds", "$targetId": "ghost"})
    refused(NotFound, "ghost", "x", {"$relationshipName": "feeds", "$targetId": "pump1"})
    refused(AlreadyExists, "tank1", "f1", {"$relationshipName": "feeds", "$targetId": "tank2"})
    # maxMultiplicity 1 for backupOf
    refused(Conflict, "pump2", "b2", {"$relationshipName": "backupOf", "$targetId": "pump2"})
    e = refused(
        ValidationFailed,
        "tank1",
        "x",
        {"$relationshipName": "feeds", "$targetId": "tank2", "pipeDiameterMm": "wide"},
    )
    assert e.problems[0].field == "pipeDiameterMm"
    refused(
        ValidationFailed,
        "tank1",
        "x",
        {"$relationshipName": "feeds) DELETE (n", "$targetId": "tank2"},
    )
    assert _edge_count(plant) == edges
    ok = plant.create_relationship(
        "tank1", "f9", {"$relationshipName": "feeds", "$targetId": "tank2", "pipeDiameterMm": 80}
    )
    assert plant.get_relationship("tank1", "f9") == ok


def test_delete_relationship(plant: TwinService) -> None:
    with pytest.raises(PreconditionFailed):
        plant.delete_relationship("tank1", "f1", if_match='W/"old"')
    plant.delete_relationship("tank1", "f1")
    with pytest.raises(NotFound):
        plant.get_relationship("tank1", "f1")


# -- queries ---------------------------------------------------------------------------


def _ids(page: Any) -> list[str]:
    return [t["$dtId"] for t in page.items]


def test_query_by_model_including_submodels(plant: TwinService) -> None:
    assert _ids(plant.query_twins(TwinQuery(model=EQUIPMENT))) == [
        "pump1",
        "pump2",
        "tank1",
        "tank2",
    ]
    assert _ids(plant.query_twins(TwinQuery(model=EQUIPMENT, include_submodels=False))) == []
    assert _ids(plant.query_twins(TwinQuery(model=TANK))) == ["tank1", "tank2"]


def test_query_predicates_and_pages(plant: TwinService) -> None:
    q = TwinQuery(where=(Predicate("ratedPowerKw", Op.GT, 6),))
    assert _ids(plant.query_twins(q)) == ["pump1"]
    q = TwinQuery(
        where=(
            Predicate("state", Op.IN, ["running", "stopped"]),
            Predicate("serialNumber", Op.STARTS_WITH, "P-"),
        )
    )
    assert _ids(plant.query_twins(q)) == ["pump1", "pump2"]
    first = plant.query_twins(TwinQuery(model=EQUIPMENT, limit=3))
    assert _ids(first) == ["pump1", "pump2", "tank1"] and first.next_after == "tank1"
    rest = plant.query_twins(TwinQuery(model=EQUIPMENT, limit=3, after=first.next_after))
    assert _ids(rest) == ["tank2"] and rest.next_after is None


def test_query_traversal(plant: TwinService) -> None:
    one = TwinQuery(traversal=Traversal("tank1", ("feeds",), max_hops=1))
    assert _ids(plant.query_twins(one)) == ["pump1", "pump2"]
    two = TwinQuery(traversal=Traversal("tank1", ("feeds",), min_hops=2, max_hops=2))
    assert _ids(plant.query_twins(two)) == ["tank2"]
    upstream = TwinQuery(
        traversal=Traversal("tank2", ("feeds",), direction="in", max_hops=2), model=PUMP
    )
    assert _ids(plant.query_twins(upstream)) == ["pump1", "pump2"]
    anything = TwinQuery(traversal=Traversal("pump2", (), max_hops=1))
    assert _ids(plant.query_twins(anything)) == ["pump1", "tank2"]


@pytest.mark.parametrize(
    "query",
    [
        TwinQuery(where=(Predicate("x) DETACH DELETE (t", Op.EQ, 1),)),
        TwinQuery(where=(Predicate("a.b.c", Op.EQ, 1),)),
        TwinQuery(where=(Predicate("state", "matches", ".*"),)),  # type: ignore[arg-type]
        TwinQuery(where=(Predicate("state", Op.EQ, {"$ne": 1}),)),
        TwinQuery(where=(Predicate("state", Op.STARTS_WITH, 3),)),
        TwinQuery(traversal=Traversal("tank1", ("feeds]->() DETACH DELETE (x",))),
        TwinQuery(traversal=Traversal("tank1", ("feeds",), max_hops=50)),
        TwinQuery(limit=100_000),
    ],
)
def test_hostile_queries_are_refused(plant: TwinService, query: TwinQuery) -> None:
    with pytest.raises(ValidationFailed):
        plant.query_twins(query)
    assert _twin_count(plant) == 4


def test_cypher_passthrough_is_read_only(plant: TwinService) -> None:
    rows = plant.cypher(
        "MATCH (t:Twin) WHERE t.p_state = $s RETURN t.twin_id AS id", {"s": "running"}
    )
    assert rows == [{"id": "pump1"}]
    assert plant.cypher("MATCH (t:Twin) WHERE t.twin_id = 'DELETE me' RETURN count(t) AS n") == [
        {"n": 0}
    ]
    for cypher in [
        "MATCH (t) DETACH DELETE t",
        "MATCH (t) SET t.x = 1",
        "CREATE (x:Twin {twin_id: 'x'})",
        "MATCH (t) WITH t MERGE (y:Y)",
        "CALL db.clearQueryCaches()",
        "match (t) remove t.p_state",
    ]:
        with pytest.raises(QueryRejected):
            plant.cypher(cypher)
    assert _twin_count(plant) == 4 and _edge_count(plant) == 5


# -- events and topology -------------------------------------------------------------------


def test_every_change_emits_an_event(service: TwinService) -> None:
    seen: list[TwinEvent] = []
    service.bus.add_listener(seen.append)
    service.create_twin("a", tank("a"))
    service.create_twin("b", tank("b"))
    service.patch_twin("a", [{"op": "add", "path": "/levelPercent", "value": 1.0}])
    service.create_relationship("a", "r", {"$relationshipName": "feeds", "$targetId": "b"})
    service.delete_relationship("a", "r")
    service.delete_twin("b")
    assert [e.kind for e in seen] == [
        EventKind.TWIN_CREATED,
        EventKind.TWIN_CREATED,
        EventKind.TWIN_PATCHED,
        EventKind.RELATIONSHIP_CREATED,
        EventKind.RELATIONSHIP_DELETED,
        EventKind.TWIN_DELETED,
    ]
    assert seen[2].data["patch"][0]["path"] == "/levelPercent"
    assert seen[3].data["$targetId"] == "b"


def test_topology_view_follows_the_graph(plant: TwinService) -> None:
    view = plant.topology({"feeds"})
    assert view.downstream("tank1") == ["pump1", "pump2", "tank2"]
    assert view.impact("pump1").affected == ()
    plant.delete_relationship("pump2", "f4")  # now only pump1 feeds tank2
    assert view.impact("pump1").affected == ("tank2",)
    plant.create_relationship("tank2", "loop", {"$relationshipName": "feeds", "$targetId": "tank1"})
    assert view.cycles()


# -- import ----------------------------------------------------------------------------------


def _ndjson(*lines: Any) -> list[str]:
    return [line if isinstance(line, str) else json.dumps(line) for line in lines]


def test_import_job(graph_store: Any) -> None:
    service = TwinService(graph_store)
    lines = _ndjson(
        {"Section": "Header"},
        {"fileVersion": "1.0.0", "author": "tests", "organization": "twinforge"},
        {"Section": "Models"},
        *ALL_MODELS,
        {"Section": "Twins"},
        tank("t1", levelPercent=50.0),
        pump("p1", state="running"),
        pump("p2", state="exploded"),  # line 12: bad enum value
        "{not json",  # line 13
        tank("t1"),  # line 14: twice
        {"Section": "Relationships"},
        {"$dtId": "t1", "$relationshipId": "r1", "$targetId": "p1", "$relationshipName": "feeds"},
        {"$dtId": "p1", "$relationshipId": "r2", "$targetId": "p2", "$relationshipName": "feeds"},
        {
            "$dtId": "p1",
            "$relationshipId": "r3",
            "$targetId": "t1",
            "$relationshipName": "backupOf",
        },
        {"$dtId": "t1", "$relationshipId": "r1", "$targetId": "p1", "$relationshipName": "feeds"},
    )
    report = import_ndjson(service, lines)
    assert (report.models, report.twins, report.relationships) == (5, 2, 1)
    assert report.header["author"] == "tests"
    assert [(e.line, e.code) for e in report.errors] == [
        (12, "validationFailed"),
        (13, "invalidJson"),
        (14, "alreadyExists"),
        (17, "validationFailed"),  # p2 was refused
        (18, "validationFailed"),  # backupOf must target a Pump
        (19, "alreadyExists"),
    ]
    assert service.get_relationship("t1", "r1")["$targetId"] == "p1"
    assert service.get_twin("p1")["state"] == "running"
    again = import_ndjson(
        service, _ndjson({"Section": "Header"}, {}, {"Section": "Twins"}, tank("t1"))
    )
    assert again.twins == 0 and again.errors[0].code == "alreadyExists"


def test_import_refuses_sections_out_of_order(graph_store: Any) -> None:
    service = TwinService(graph_store)
    report = import_ndjson(
        service, _ndjson(tank("t1"), {"Section": "Twins"}, {"Section": "Models"})
    )
    assert [e.code for e in report.errors] == ["section", "section"]
    assert _twin_count(service) == 0


def test_import_skips_an_unknown_section_instead_of_reading_it_as_the_last(
    graph_store: Any,
) -> None:
    service = TwinService(graph_store)
    report = import_ndjson(
        service,
        _ndjson(
            {"Section": "Header"},
            {},
            {"Section": "Models"},
            *ALL_MODELS,
            {"Section": "Twins"},  # line 9
            tank("t1"),
            {"Section": "Widgets"},  # line 11
            tank("w1"),
            tank("w2"),
            {"Section": "Relationships"},
            {
                "$dtId": "t1",
                "$relationshipId": "r1",
                "$targetId": "w1",
                "$relationshipName": "feeds",
            },
            {"Section": "Twins"},  # line 16: again, out of order
            tank("w3"),
        ),
    )
    assert (report.twins, report.relationships) == (1, 0)
    assert [(e.line, e.section, e.code) for e in report.errors] == [
        (11, "Widgets", "section"),
        (15, "Relationships", "validationFailed"),  # w1 was never imported
        (16, "Twins", "section"),
    ]
    assert "unknown" in report.errors[0].message
    assert "its 2 lines were skipped" in report.errors[0].message
    assert "out of order" in report.errors[2].message
    assert "its 1 line was skipped" in report.errors[2].message
    assert _twin_count(service) == 1
    assert report.summary() == "imported 5 models, 1 twin, 0 relationships; 3 lines refused"


def test_import_report_lists_lines_in_file_order(graph_store: Any) -> None:
    service = TwinService(graph_store)
    service.models.upload(ALL_MODELS)
    service.create_twin("t1", tank("t1"))
    report = import_ndjson(
        service,
        _ndjson(
            {"Section": "Header"},
            {},
            {"Section": "Twins"},
            tank("t1"),  # line 4: exists, found when the batch is written
            tank("t2", levelPercent="full"),  # line 5: refused as it is read
        ),
    )
    assert [e.line for e in report.errors] == [4, 5]
    assert report.summary() == "imported 0 models, 0 twins, 0 relationships; 2 lines refused"


@pytest.mark.parametrize("text", ["", "\n", "  \n\n"])
def test_import_refuses_an_empty_file(graph_store: Any, text: str) -> None:
    report = import_ndjson(TwinService(graph_store), text.splitlines(keepends=True))
    assert not report.ok
    [error] = report.errors
    assert error.code == "empty" and "empty" in error.message
    assert '{"Section": "Header"}' in error.message
    assert report.summary().endswith("; 1 line refused")


def test_property_changes_reach_the_history_store(graph_store: Any, tmp_path: Any) -> None:
    from twinforge.runtime.history import BatchingWriter, open_history_store

    history = open_history_store(None, tmp_path)
    writer = BatchingWriter(history)
    try:
        service = TwinService(graph_store, history=writer)
        service.models.upload(ALL_MODELS)
        service.create_twin("p1", pump("p1", state="running", motor={"speedRpm": 1000}))
        service.patch_twin("p1", [{"op": "replace", "path": "/state", "value": "stopped"}])
        service.patch_twin("p1", [{"op": "replace", "path": "/motor/speedRpm", "value": 1450}])
        writer.flush()
        assert [p.value for p in history.query("p1", "state")] == ["running", "stopped"]
        assert [p.value for p in history.query("p1", "motor.speedRpm")] == [1000, 1450]
        assert all(p.kind == "property" for p in history.query("p1", "state"))
    finally:
        writer.close()
        history.close()


def test_concurrent_patches_without_if_match_all_apply(embedded_store: Any) -> None:
    import threading

    embedded_store.clear()
    service = TwinService(embedded_store)
    service.models.upload(ALL_MODELS)
    service.create_twin("p1", pump("p1"))
    errors: list[Exception] = []

    def patcher(path: str) -> None:
        for value in range(15):
            try:
                service.patch_twin("p1", [{"op": "add", "path": path, "value": value}])
            except Exception as exc:  # collected: an assertion in a thread is lost
                errors.append(exc)

    threads = [
        threading.Thread(target=patcher, args=(p,))
        for p in ("/ratedPowerKw", "/serialNumber", "/motor/speedRpm")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # serialNumber is a string: those patches are refused, the others all land
    assert {type(e).__name__ for e in errors} == {"ValidationFailed"} and len(errors) == 15
    twin = service.get_twin("p1")
    assert twin["ratedPowerKw"] == 14 and twin["motor"]["speedRpm"] == 14
