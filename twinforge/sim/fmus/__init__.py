"""twinforge's own Co-Simulation FMUs, built from their C sources on first use.

Each model is a directory here with its ``modelDescription.xml`` (FMI 2.0) and a
``model.c`` that holds only its physics; ``common/`` is the FMI runtime they share (FMI
2.0 and 3.0 API over one model interface, ``model.h``). :func:`fmu_path` assembles a
standard source FMU from them and builds it with :func:`twinforge.physics.build.build_fmu`,
so the result carries its binary and its sources and any FMI tool can load it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from twinforge.physics.build import build_fmu, default_cache_dir

__all__ = ["FMU_NAMES", "assemble_source_fmu", "fmu_path"]

FMU_NAMES = ("pump", "molding_barrel", "cnc_spindle")

HERE = Path(__file__).parent
COMMON = HERE / "common"
#: The runtime's sources every FMU carries, and the FMI API file of each version.
RUNTIME_FILES = ("model.h", "runtime.h", "runtime.c")
API_FILES = {"2.0": "fmi2Functions.c", "3.0": "fmi3Functions.c"}

_built: dict[tuple[str, Path], Path] = {}
_lock = threading.Lock()


def fmu_path(name: str, cache_dir: Path | None = None) -> Path:
    """The built, validated FMU of model ``name`` (one of :data:`FMU_NAMES`), from the
    cache in ``cache_dir`` (default :func:`~twinforge.physics.build.default_cache_dir`).
    Built once per machine, looked up once per process."""
    if name not in FMU_NAMES:
        raise ValueError(f"name: {name!r} is not one of twinforge's FMUs {FMU_NAMES}")
    key = (name, Path(cache_dir or default_cache_dir()).resolve())
    with _lock:
        if key not in _built or not _built[key].exists():  # the cache may have been cleared
            with tempfile.TemporaryDirectory(prefix=f"twinforge-{name}-") as tmp:
                source = assemble_source_fmu(HERE / name, Path(tmp) / name)
                _built[key] = build_fmu(source, key[1])
        return _built[key]


def assemble_source_fmu(model_dir: Path, into: Path, sources_from: Path | None = None) -> Path:
    """Lay out an unpacked source FMU at ``into``: ``model_dir``'s model description, and
    under ``sources/`` the shared runtime for its FMI version plus the model's own C files
    (from ``sources_from``, default ``model_dir``) and any ``buildDescription.xml``."""
    description = model_dir / "modelDescription.xml"
    version = ET.parse(description).getroot().get("fmiVersion", "")
    sources = into / "sources"
    sources.mkdir(parents=True)
    shutil.copy2(description, into / "modelDescription.xml")
    for file in (*RUNTIME_FILES, API_FILES.get(version, API_FILES["2.0"])):
        shutil.copy2(COMMON / file, sources / file)
    own = sorted((sources_from or model_dir).glob("*.[ch]"))
    for file in (*own, *model_dir.glob("buildDescription.xml")):
        shutil.copy2(file, sources / file.name)
    return into
