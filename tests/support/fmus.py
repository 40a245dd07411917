"""The test FMUs: ``faulty`` (FMI 2.0) and ``faulty3`` (FMI 3.0) built from source with
twinforge's FMU runtime, and hostile files that must be refused with a clear error."""

from __future__ import annotations

import zipfile
from pathlib import Path

from twinforge.physics.build import build_fmu
from twinforge.physics.checks import PhysicsPlan, check_binding
from twinforge.physics.config import PhysicsBinding
from twinforge.sim.fmus import assemble_source_fmu
from twinforge.twin_models import parse_models

SOURCES = Path(__file__).parents[1] / "physics" / "fmus"


def build_test_fmus(cache_dir: Path, work_dir: Path) -> dict[str, Path]:
    """Every test FMU by name, the buildable ones built into ``cache_dir``."""
    faulty = assemble_source_fmu(SOURCES / "faulty", work_dir / "faulty")
    faulty3 = assemble_source_fmu(SOURCES / "faulty3", work_dir / "faulty3", SOURCES / "faulty")
    model_exchange = assemble_source_fmu(
        SOURCES / "model_exchange", work_dir / "model_exchange", SOURCES / "faulty"
    )
    return {
        "faulty": build_fmu(faulty, cache_dir),
        "faulty3": build_fmu(faulty3, cache_dir),
        "description_only": _zip(
            work_dir / "description_only.fmu", {"modelDescription.xml": faulty}
        ),
        "fmi1": _zip(work_dir / "fmi1.fmu", {"modelDescription.xml": SOURCES / "fmi1"}),
        "model_exchange": _zip_dir(model_exchange, work_dir / "model_exchange.fmu"),
    }


FAULTY = "dtmi:com:example:physics:Faulty;1"
FAULTY_MODEL = {
    "@context": "dtmi:dtdl:context;3",
    "@id": FAULTY,
    "@type": "Interface",
    "contents": [
        {"@type": "Telemetry", "name": "u", "schema": "double"},
        {"@type": "Telemetry", "name": "y", "schema": "double"},
    ],
}


def faulty_plan(fmu: Path, fail_at: float, fail_mode: int) -> PhysicsPlan:
    """The plan of twins of :data:`FAULTY`: telemetry ``u`` drives the faulty FMU, whose
    ``y`` is the expected ``y``; from source time ``fail_at`` on it fails as ``fail_mode``
    says (1 Error, 2 Fatal, 3 NaN, 4 the process crashes)."""
    binding = PhysicsBinding(
        interface=FAULTY,
        fmu=fmu,
        inputs={"u": "u"},
        parameters={"failAt": fail_at, "failMode": float(fail_mode)},
        expected={"y": "y"},
    )
    return check_binding(binding, parse_models([FAULTY_MODEL]).interface(FAULTY))


def _zip(target: Path, members: dict[str, Path]) -> Path:
    """An FMU holding only ``members``, each taken from the folder it names."""
    with zipfile.ZipFile(target, "w") as archive:
        for name, folder in members.items():
            archive.write(folder / name, name)
    return target


def _zip_dir(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return target
