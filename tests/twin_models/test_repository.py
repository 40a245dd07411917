"""Model repositories: the DMR layout, resolving through it, and folders of any layout."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from twinforge.twin_models import (
    Component,
    ModelParsingError,
    ResolutionError,
    parse_models,
)
from twinforge.twin_models.repository import (
    DirectoryResolver,
    ModelRepository,
    dtmi_to_path,
    expanded_path,
)


def interface(dtmi: str, version: int = 3, **properties: Any) -> dict[str, Any]:
    return {
        "@context": f"dtmi:dtdl:context;{version}",
        "@id": dtmi,
        "@type": "Interface",
        **properties,
    }


def telemetry(name: str) -> dict[str, Any]:
    return {"@type": "Telemetry", "name": name, "schema": "double"}


ROOT = interface("dtmi:ex:Root;1", contents=[telemetry("uptime")])
BASE = interface("dtmi:ex:Base;1", extends="dtmi:ex:Root;1", contents=[telemetry("temp")])
PART = interface("dtmi:ex:Part;1", contents=[telemetry("rpm")])
MAIN = interface(
    "dtmi:ex:Main;1",
    extends="dtmi:ex:Base;1",
    contents=[{"@type": "Component", "name": "motor", "schema": "dtmi:ex:Part;1"}],
)


# -- dtmi_to_path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtmi", "path"),
    [
        ("dtmi:com:Example:Thermostat;1", "dtmi/com/example/thermostat-1.json"),
        (
            "dtmi:com:example:TemperatureController;2",
            "dtmi/com/example/temperaturecontroller-2.json",
        ),
        (
            "dtmi:azure:DeviceManagement:DeviceInformation;1",
            "dtmi/azure/devicemanagement/deviceinformation-1.json",
        ),
        ("dtmi:ex;123456789", "dtmi/ex-123456789.json"),
        ("dtmi:a_b:C9;10", "dtmi/a_b/c9-10.json"),
    ],
)
def test_dtmi_to_path(dtmi: str, path: str) -> None:
    assert dtmi_to_path(dtmi) == path


def test_expanded_path() -> None:
    assert (
        expanded_path("dtmi:com:Example:Thermostat;1")
        == "dtmi/com/example/thermostat-1.expanded.json"
    )


@pytest.mark.parametrize(
    ("dtmi", "message"),
    [
        ("dtmi:com:example:Thermostat", "no version"),
        ("dtmi:com:example:Thermostat;1.2", "two-part version"),
        ("dtmi:com:example:Thermostat;0", "not a valid DTMI"),
        ("dtmi:com:example:Thermostat;1234567890", "not a valid DTMI"),
        ("dtmi:com:example:Thermostat;1#frag", "not a valid DTMI"),
        ("dtmi:com:example:Thermostat;1\n", "not a valid DTMI"),
        ("dtmi:com:example:_system;1", "not a valid DTMI"),
        ("dtmi:com:example:trailing_;1", "not a valid DTMI"),
        ("dtmi:com:9lives;1", "not a valid DTMI"),
        ("dtmi:com::x;1", "not a valid DTMI"),
        ("com:example:Thermostat;1", "not a valid DTMI"),
        ("DTMI:com:example:Thermostat;1", "not a valid DTMI"),
        ("dtmi:../../etc/passwd;1", "not a valid DTMI"),
        ("dtmi:com:ex/../x;1", "not a valid DTMI"),
        ("dtmi:com:caf\u00e9;1", "not a valid DTMI"),
        ("", "not a valid DTMI"),
    ],
)
def test_dtmi_to_path_rejects(dtmi: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dtmi_to_path(dtmi)


def test_dtmi_to_path_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        dtmi_to_path(None)  # type: ignore[arg-type]


# -- ModelRepository ------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    repository = ModelRepository(tmp_path / "models")
    assert repository.add(json.dumps(ROOT)) == ["dtmi:ex:Root;1"]
    assert repository.add(BASE) == ["dtmi:ex:Base;1"]
    assert repository.add([PART, MAIN]) == ["dtmi:ex:Part;1", "dtmi:ex:Main;1"]
    return repository


def test_add_stores_each_model_at_its_dmr_path(repo: ModelRepository) -> None:
    stored = repo.root / "dtmi" / "ex" / "part-1.json"
    assert json.loads(stored.read_text(encoding="utf-8")) == PART
    assert json.loads(repo.get("dtmi:ex:Main;1") or "null") == MAIN
    assert repo.get("dtmi:ex:Absent;1") is None
    assert sorted(p.name for p in (repo.root / "dtmi" / "ex").iterdir()) == [
        "base-1.json",
        "main-1.json",
        "part-1.json",
        "root-1.json",
    ]


def test_resolver_supplies_extends_and_component_schemas(repo: ModelRepository) -> None:
    resolve = repo.resolver()
    asked: list[list[str]] = []

    def recording(dtmis: list[str]) -> list[str]:
        asked.append(list(dtmis))
        return resolve(dtmis)

    models = parse_models([json.dumps(MAIN)], resolver=recording)

    main = models.interface("dtmi:ex:Main;1")
    assert [e.id for e in main.extends] == ["dtmi:ex:Base;1"]
    motor = main.contents["motor"]
    assert isinstance(motor, Component)
    assert motor.schema.id == "dtmi:ex:Part;1"
    assert set(main.contents) == {"motor", "temp", "uptime"}
    # Only what is missing, each once: Main is given, Root is found through Base.
    assert asked == [["dtmi:ex:Base;1", "dtmi:ex:Part;1"], ["dtmi:ex:Root;1"]]


def test_resolver_missing_dependency_raises_resolution_error(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    repository.add(BASE)  # Root is not stored
    with pytest.raises(ResolutionError) as caught:
        parse_models([MAIN], resolver=repository.resolver())
    assert caught.value.undefined_ids == ["dtmi:ex:Part;1", "dtmi:ex:Root;1"]


def test_resolver_skips_dtmis_a_repository_cannot_hold(tmp_path: Path) -> None:
    doc = interface("dtmi:ex:Main;1", extends="dtmi:ex:Unversioned")
    with pytest.raises(ResolutionError) as caught:
        parse_models([doc], resolver=ModelRepository(tmp_path).resolver())
    assert caught.value.undefined_ids == ["dtmi:ex:Unversioned"]


def test_expanded_form_is_used_and_split(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    path = tmp_path / expanded_path("dtmi:ex:Main;1")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([MAIN, BASE, ROOT, PART]), encoding="utf-8")
    device = interface("dtmi:ex:Device;1", extends="dtmi:ex:Main;1")
    assert json.loads(repository.get("dtmi:ex:Main;1") or "null")[0] == MAIN
    # Base is passed in too: the expanded array must not define it a second time.
    models = parse_models([device, BASE], resolver=repository.resolver())
    assert set(models.interfaces) == {
        "dtmi:ex:Device;1",
        "dtmi:ex:Main;1",
        "dtmi:ex:Base;1",
        "dtmi:ex:Root;1",
        "dtmi:ex:Part;1",
    }


def test_add_removes_a_stale_expanded_form(repo: ModelRepository) -> None:
    stale = repo.root / expanded_path("dtmi:ex:Main;1")
    stale.write_text(json.dumps([PART]), encoding="utf-8")
    repo.add(MAIN)
    assert not stale.exists()
    assert json.loads(repo.get("dtmi:ex:Main;1") or "null") == MAIN


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"@id": "dtmi:ex:A;1",', "not a JSON model document"),
        ('{"@id": "dtmi:ex:A;1", "@id": "dtmi:ex:B;1"}', "duplicate key"),
        (b"\xff\xfe\x00", "not a JSON model document"),
        ("[]", "no model"),
        ('{"@type": "Interface"}', "string @id"),
        ('{"@id": 7}', "string @id"),
        ('["dtmi:ex:A;1"]', "string @id"),
        ('{"@id": "dtmi:ex:A"}', "no version"),
        ('{"@id": "dtmi:../../etc/passwd;1"}', "not a valid DTMI"),
        ('{"@id": "../../etc/passwd"}', "not a valid DTMI"),
        ('{"@id": "dtmi:ex:A;1\' OR 1=1 --"}', "not a valid DTMI"),
        ('[{"@id": "dtmi:ex:A;1"}, {"@id": "dtmi:ex:A;1"}]', "same @id twice"),
        ('[{"@id": "dtmi:ex:A;1"}, {"@id": "dtmi:ex:B"}]', "no version"),
    ],
)
def test_add_refuses(tmp_path: Path, document: str | bytes, message: str) -> None:
    repository = ModelRepository(tmp_path / "models")
    with pytest.raises(ValueError, match=message):
        repository.add(document)
    # Nothing is written, not even for the valid elements of a refused document.
    assert not (tmp_path / "models").exists()


def test_add_refuses_a_case_variant_that_shares_a_path(repo: ModelRepository) -> None:
    with pytest.raises(ValueError, match=r"would replace dtmi:ex:Part;1"):
        repo.add(interface("dtmi:ex:PART;1"))
    assert json.loads(repo.get("dtmi:ex:Part;1") or "null") == PART


def test_resolver_skips_a_file_that_is_not_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / dtmi_to_path("dtmi:ex:Base;1")
    path.parent.mkdir(parents=True)
    path.write_text("{ not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING), pytest.raises(ResolutionError) as caught:
        parse_models(
            [interface("dtmi:ex:A;1", extends="dtmi:ex:Base;1")],
            resolver=ModelRepository(tmp_path).resolver(),
        )
    assert caught.value.undefined_ids == ["dtmi:ex:Base;1"]
    assert "not JSON" in caplog.text


# -- DirectoryResolver ----------------------------------------------------------------


@pytest.fixture
def isa95(isa95_ontology_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "isa95"
    shutil.copytree(isa95_ontology_dir, copy)
    return copy


def test_directory_resolver_resolves_isa95_area_with_its_dependencies(isa95: Path) -> None:
    resolver = DirectoryResolver(isa95)
    area_file = isa95 / "EquipmentHierarchy" / "Area.json"
    assert resolver.path_of("dtmi:digitaltwins:isa95:Area;1") == area_file
    assert len(resolver) == len(list(isa95.rglob("*.json")))
    asked: list[str] = []

    def recording(dtmis: list[str]) -> list[str]:
        asked.extend(dtmis)
        return resolver(dtmis)

    models = parse_models([area_file.read_text(encoding="utf-8")], resolver=recording)

    area = models.interface("dtmi:digitaltwins:isa95:Area;1")
    assert {e.id for e in area.extends} == {
        "dtmi:digitaltwins:isa95:HierarchyScope;1",
        "dtmi:digitaltwins:isa95:SiteAsset;1",
    }
    assert area.contents["workCenter"].kind == "Relationship"
    # Exactly the Interfaces reached through extends and component schemas in the raw
    # files (a Relationship target need not resolve, so WorkCenter stays out).
    assert set(models.interfaces) == _dependency_closure(resolver, "dtmi:digitaltwins:isa95:Area;1")
    assert "dtmi:digitaltwins:isa95:WorkCenter;1" not in models.interfaces
    assert "dtmi:digitaltwins:isa95:Area;1" not in asked
    assert len(asked) == len(set(asked)), "a DTMI was asked for twice"
    assert set(asked) == set(models.interfaces) - {"dtmi:digitaltwins:isa95:Area;1"}


def _dependency_closure(resolver: DirectoryResolver, root: str) -> set[str]:
    seen: set[str] = set()
    stack = [root]
    while stack:
        dtmi = stack.pop()
        if dtmi in seen:
            continue
        seen.add(dtmi)
        path = resolver.path_of(dtmi)
        assert path is not None, f"{dtmi} is not in the folder"
        model = json.loads(path.read_text(encoding="utf-8"))
        extends = model.get("extends", [])
        stack.extend([extends] if isinstance(extends, str) else extends)
        contents = model.get("contents", [])
        stack.extend(c["schema"] for c in contents if c.get("@type") == "Component")
    return seen


def test_directory_resolver_skips_non_json_and_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "base.json").write_text(json.dumps(BASE), encoding="utf-8")
    (tmp_path / "a" / "broken.json").write_text('{"@id": ', encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes(b'{"@id": "dtmi:ex:X;1", "d": "\xe9"}')
    (tmp_path / "b.json").write_text(json.dumps([ROOT, PART, 3, "x"]), encoding="utf-8")
    (tmp_path / "z.json").write_text(json.dumps(interface("dtmi:ex:Base;1")), encoding="utf-8")
    (tmp_path / "notes.txt").write_text(json.dumps(MAIN), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        resolver = DirectoryResolver(tmp_path)
    assert sorted(resolver) == ["dtmi:ex:Base;1", "dtmi:ex:Part;1", "dtmi:ex:Root;1"]
    assert resolver.path_of("dtmi:ex:Base;1") == tmp_path / "a" / "base.json"
    assert "broken.json is not JSON" in caplog.text
    assert "latin1.json" in caplog.text
    assert "dtmi:ex:Base;1 defined again" in caplog.text
    # Root and Part come from one array file, one text each.
    assert [json.loads(t) for t in resolver(["dtmi:ex:Root;1", "dtmi:ex:Part;1"])] == [ROOT, PART]
    assert resolver(["dtmi:ex:Main;1"]) == []
    models = parse_models([MAIN], resolver=resolver)
    assert set(models.interfaces) == {
        "dtmi:ex:Main;1",
        "dtmi:ex:Base;1",
        "dtmi:ex:Part;1",
        "dtmi:ex:Root;1",
    }


def test_directory_resolver_serves_nested_ids_with_their_interface(tmp_path: Path) -> None:
    holder = interface(
        "dtmi:ex:Holder;1",
        schemas=[
            {
                "@id": "dtmi:ex:Mode;1",
                "@type": "Enum",
                "valueSchema": "integer",
                "enumValues": [{"name": "on", "enumValue": 1}],
            }
        ],
    )
    (tmp_path / "holder.json").write_text(json.dumps(holder), encoding="utf-8")
    resolver = DirectoryResolver(tmp_path)
    assert len(resolver(["dtmi:ex:Holder;1", "dtmi:ex:Mode;1"])) == 1
    user = interface(
        "dtmi:ex:User;1",
        contents=[{"@type": "Property", "name": "mode", "schema": "dtmi:ex:Mode;1"}],
    )
    # Found, so the parser names the real rule instead of an undefined reference.
    with pytest.raises(ModelParsingError) as caught:
        parse_models([user], resolver=resolver)
    assert [e.validation_id for e in caught.value.errors] == [
        "dtmi:dtdl:parsingError:nonReferenceableTarget"
    ]


def test_directory_resolver_does_not_hide_parse_errors(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(
        json.dumps(interface("dtmi:ex:Base;1", contents=3)), encoding="utf-8"
    )
    with pytest.raises(ModelParsingError):
        parse_models(
            [interface("dtmi:ex:A;1", extends="dtmi:ex:Base;1")],
            resolver=DirectoryResolver(tmp_path),
        )
