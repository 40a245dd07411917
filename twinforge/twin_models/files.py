"""Validate DTDL model files on disk: collect them, parse them as one set, and tie every
error back to the file it came from.

The parser (``twinforge.twin_models``) works on a list of JSON texts and reports errors by
index into that list; this module owns the mapping between paths and those indexes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinforge.twin_models import ModelParsingError, ResolutionError, parse_models

INVALID_JSON = "dtmi:dtdl:parsingError:invalidJson"
"""The parser's id for a document that is not JSON; also used for files that are not UTF-8."""

UNREADABLE_FILE = "twinforge:unreadableFile"
"""Our id for a file that could not be read at all (permissions, I/O error)."""


@dataclass(frozen=True)
class ModelFile:
    """One file handed to the parser: where it came from and its text."""

    path: Path
    text: str


@dataclass(frozen=True)
class ModelError:
    """One reason the set is invalid, tied to the file it came from (None: not known)."""

    file: Path | None
    validation_id: str
    cause: str
    action: str
    primary_id: str | None = None
    property: str | None = None
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": None if self.file is None else str(self.file),
            "validation_id": self.validation_id,
            "primary_id": self.primary_id,
            "property": self.property,
            "value": self.value,
            "cause": self.cause,
            "action": self.action,
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating a set of model files together."""

    files: list[Path]
    interfaces: int = 0
    errors: list[ModelError] = field(default_factory=list)
    undefined_ids: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors and not self.undefined_ids

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "files": len(self.files),
            "interfaces": self.interfaces,
            "errors": [error.to_json() for error in self.errors],
            "undefined_ids": list(self.undefined_ids),
        }

    def text_lines(self) -> list[str]:
        """Human-readable report: one block per problem, then a summary line."""
        lines: list[str] = []
        for error in self.errors:
            where = str(error.file) if error.file is not None else "(model set)"
            lines.append(f"{where}: error {error.validation_id}")
            if error.primary_id is not None:
                lines.append(f"  element:  {error.primary_id}")
            if error.property is not None:
                value = "" if error.value is None else f" = {_short(error.value)}"
                lines.append(f"  property: {error.property}{value}")
            lines.append(f"  rule:     {error.cause}")
            if error.action:
                lines.append(f"  fix:      {error.action}")
        for dtmi in self.undefined_ids:
            lines.append(f"(model set): error undefined reference {dtmi}")
            lines.append("  fix:      define it in one of the files given, or remove the reference")
        files = _count(len(self.files), "file")
        if self.valid:
            lines.append(f"{files}, {_count(self.interfaces, 'interface')}: valid")
        else:
            problems = len(self.errors) + len(self.undefined_ids)
            lines.append(f"{_count(problems, 'error')} in {files}")
        return lines


def collect_model_paths(paths: Iterable[Path]) -> list[Path]:
    """Expand ``paths`` into model files: a file stands for itself, whatever its name; a
    directory for every ``*.json`` below it, in sorted order. Duplicates are dropped.

    Raises FileNotFoundError for a path that does not exist.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*.json") if p.is_file())
        elif path.exists():
            candidates = [path]
        else:
            raise FileNotFoundError(path)
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


def read_model_files(paths: Sequence[Path]) -> tuple[list[ModelFile], list[ModelError]]:
    """Read each file as UTF-8 text; files that cannot be read become errors instead."""
    files: list[ModelFile] = []
    errors: list[ModelError] = []
    for path in paths:
        try:
            files.append(ModelFile(path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as exc:
            errors.append(
                ModelError(
                    file=path,
                    validation_id=INVALID_JSON,
                    cause=f"The file is not UTF-8 text, so it is not a JSON document ({exc}).",
                    action="Save the model as UTF-8 encoded JSON.",
                )
            )
        except OSError as exc:
            errors.append(
                ModelError(
                    file=path,
                    validation_id=UNREADABLE_FILE,
                    cause=f"The file could not be read: {exc.strerror or exc}.",
                    action="Check that the file exists and is readable.",
                )
            )
    return files, errors


def validate_model_files(
    paths: Sequence[Path],
    *,
    allow_undefined_extensions: bool = False,
    max_dtdl_version: int | None = None,
) -> ValidationReport:
    """Read ``paths`` (already expanded by ``collect_model_paths``) and parse them together
    as one model set, so that models may reference each other across files."""
    files, errors = read_model_files(paths)
    report_files = list(paths)
    try:
        model_set = parse_models(
            [f.text for f in files],
            allow_undefined_extensions=allow_undefined_extensions,
            resolver=None,
            max_dtdl_version=max_dtdl_version,
        )
    except ResolutionError as exc:
        return ValidationReport(
            files=report_files,
            errors=errors + _map_errors(getattr(exc, "errors", []), files),
            undefined_ids=sorted(exc.undefined_ids),
        )
    except ModelParsingError as exc:
        return ValidationReport(files=report_files, errors=errors + _map_errors(exc.errors, files))
    return ValidationReport(files=report_files, interfaces=len(model_set.interfaces), errors=errors)


def _map_errors(parsing_errors: Iterable[Any], files: Sequence[ModelFile]) -> list[ModelError]:
    mapped = []
    for error in parsing_errors:
        document = getattr(error, "document", None)
        path = files[document].path if document is not None and 0 <= document < len(files) else None
        mapped.append(
            ModelError(
                file=path,
                validation_id=error.validation_id,
                cause=error.cause,
                action=error.action,
                primary_id=error.primary_id,
                property=error.property,
                value=error.value,
            )
        )
    return mapped


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
