"""Building an FMU's binary for this platform from the C sources it carries.

A source FMU (FMI 2.0 or 3.0, its ``sources/`` listed in the model description) is built
with fmpy's build support: its CMake template (``fmpy/c-code``) and settings, run here so
that the compiler's output can go into the error. Built FMUs are kept in a cache keyed by
their sources' digest and the platform, so each is built once per machine; the build is
written to a temporary name and renamed, so processes building the same FMU at once
never read half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import fmpy
from fmpy.build import create_cmake_settings
from fmpy.validation import validate_fmu

from twinforge.physics.errors import FmuError
from twinforge.physics.model_description import read_description

#: Seconds one cmake step may take (a small FMU builds in about 2 s).
BUILD_TIMEOUT_S = 300


def default_cache_dir() -> Path:
    """Where built FMUs are kept unless told otherwise (``TWINFORGE_FMU_CACHE``)."""
    configured = os.environ.get("TWINFORGE_FMU_CACHE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "twinforge" / "fmus"


def build_fmu(source: Path, cache_dir: Path | None = None) -> Path:
    """The FMU built from ``source``: a directory laid out like an unpacked source FMU
    (``modelDescription.xml``, ``sources/``) or a source FMU file. Built for this platform,
    checked with fmpy's validation and cached; raises :class:`FmuError` with the
    compiler's or the validator's complaints."""
    source = Path(source).resolve()
    cache_dir = (cache_dir or default_cache_dir()).resolve()
    with tempfile.TemporaryDirectory(prefix="twinforge-fmu-") as tmp:
        unpacked = Path(tmp) / "fmu"
        if source.is_dir():
            shutil.copytree(source, unpacked)
        else:
            _unzip(source, unpacked)
        description = read_description(unpacked)
        if not description.has_sources:
            raise FmuError(f"fmu: {source.name} carries no C sources to build from")
        digest = _digest(unpacked)
        # Named after the source, so messages about the built FMU say which one it is.
        target = cache_dir / f"{Path(source.name).stem}-{digest[:16]}.fmu"
        if target.exists():
            return target
        _compile(unpacked, Path(tmp) / "build", source.name)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        _zip(unpacked, partial)
        problems = validate_fmu(str(partial))
        if problems:
            partial.unlink()
            raise FmuError(f"fmu: {source.name} fails fmpy's validation: {'; '.join(problems)}")
        os.replace(partial, target)
        return target


def ensure_binary(fmu: Path, cache_dir: Path | None = None) -> Path:
    """``fmu`` itself if it has a binary for this platform, else the FMU built from its
    sources; raises :class:`FmuError` if it has neither."""
    description = read_description(fmu)
    if description.has_binary:
        return Path(fmu)
    if not description.has_sources:
        found = ", ".join(p for p in description.platforms) or "none"
        raise FmuError(
            f"fmu: {Path(fmu).name} has no binary for {fmpy.platform} (it has: {found}) "
            "and no C sources to build one from"
        )
    return build_fmu(Path(fmu), cache_dir)


def _compile(unpacked: Path, build_dir: Path, name: str) -> None:
    build_dir.mkdir()
    try:
        create_cmake_settings(unpacked, build_dir)
    except Exception as error:  # fmpy raises plain Exceptions for a bad build description
        raise FmuError(f"fmu: cannot build {name}: {error}") from error
    template = Path(fmpy.__file__).parent / "c-code"
    for command in (
        ["cmake", "-S", str(template), "-B", str(build_dir)],
        ["cmake", "--build", str(build_dir), "--target", "install", "--config", "Release"],
    ):
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
            )
        except FileNotFoundError as error:
            raise FmuError(f"fmu: building {name} needs cmake and a C compiler") from error
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-2000:]
            raise FmuError(f"fmu: building {name} failed:\n{tail}")


def _digest(unpacked: Path) -> str:
    h = hashlib.sha256(f"{fmpy.platform_tuple}|{fmpy.__version__}".encode())
    for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
        h.update(path.relative_to(unpacked).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _unzip(fmu: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(fmu) as archive:
            for member in archive.namelist():
                # A hostile archive must not write outside its folder.
                if member.startswith("/") or ".." in Path(member).parts:
                    raise FmuError(f"fmu: {fmu.name} holds a path outside the FMU: {member}")
            archive.extractall(into)
    except zipfile.BadZipFile as error:
        raise FmuError(f"fmu: {fmu.name} is not a zip archive") from error


def _zip(unpacked: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(unpacked).as_posix())
