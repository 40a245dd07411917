"""Model repositories: where the parser finds the models a document refers to.

:class:`ModelRepository` keeps models in the layout of the Azure IoT Device Models
Repository (DMR): ``dtmi:com:Example:Thermostat;1`` lives at
``dtmi/com/example/thermostat-1.json``, and an optional ``thermostat-1.expanded.json``
holds an array of the model and its dependencies. :class:`DirectoryResolver` serves a
folder of any layout (the ISA-95 ontology, a project's ``models/``) by the ``@id``\\ s its
files define.

Both hand the parser one top-level element per JSON text, and only the elements it asks
for, so a dependency the caller passed in is never defined twice.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SEGMENT = r"[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?"
_LABELS = rf"dtmi:{_SEGMENT}(?::{_SEGMENT})*"
# The DMR accepts user DTMIs with a one-part version only.
_REPOSITORY_DTMI = re.compile(rf"{_LABELS};[1-9][0-9]{{0,8}}")
_UNVERSIONED_DTMI = re.compile(_LABELS)
_TWO_PART_DTMI = re.compile(rf"{_LABELS};[1-9][0-9]{{0,8}}\.[1-9][0-9]{{0,5}}")

Document = str | bytes | dict[str, Any] | list[Any]


def dtmi_to_path(dtmi: str) -> str:
    """The DMR path of ``dtmi``, relative to the repository root, with ``/`` separators.

    ``dtmi:com:Example:Thermostat;1`` -> ``dtmi/com/example/thermostat-1.json``. Raises
    ``ValueError`` for anything but a versioned user DTMI, so the path never holds ``..``,
    a separator or any character outside ``[a-z0-9_-]``.
    """
    if not isinstance(dtmi, str):
        raise ValueError(f"a DTMI must be a string, got {type(dtmi).__name__}")
    if _REPOSITORY_DTMI.fullmatch(dtmi):
        return dtmi.lower().replace(":", "/").replace(";", "-") + ".json"
    if _UNVERSIONED_DTMI.fullmatch(dtmi):
        raise ValueError(f"{dtmi!r} has no version; a model repository stores dtmi:...;<version>")
    if _TWO_PART_DTMI.fullmatch(dtmi):
        raise ValueError(f"{dtmi!r} has a two-part version; a model repository needs ;<major>")
    raise ValueError(
        f"{dtmi!r} is not a valid DTMI for a model repository "
        "(dtmi:<segment>[:<segment>...];<version>, segments of letters, digits and _)"
    )


def expanded_path(dtmi: str) -> str:
    """The DMR path of the expanded form of ``dtmi`` (the model and its dependencies)."""
    return dtmi_to_path(dtmi).removesuffix(".json") + ".expanded.json"


class ModelRepository:
    """A folder of models in the DMR layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, dtmi: str, *, expanded: bool = True) -> str | None:
        """The stored JSON text of ``dtmi``: its expanded form when there is one (and
        ``expanded``), else the model itself; None when the repository lacks it.

        Raises ``ValueError`` when ``dtmi`` is not a versioned DTMI.
        """
        paths = [expanded_path(dtmi)] if expanded else []
        for relative in [*paths, dtmi_to_path(dtmi)]:
            text = _read_text(self.root / relative)
            if text is not None:
                return text
        return None

    def resolver(self) -> Callable[[list[str]], list[str]]:
        """A resolver for ``parse_models(..., resolver=...)`` serving this repository."""
        loaded: dict[str, str] = {}

        def resolve(dtmis: list[str]) -> list[str]:
            for dtmi in dtmis:
                if dtmi not in loaded:
                    loaded.update(self._load(dtmi))
            return list(dict.fromkeys(loaded[d] for d in dtmis if d in loaded))

        return resolve

    def _load(self, dtmi: str) -> dict[str, str]:
        try:
            text = self.get(dtmi)
        except ValueError:  # an unversioned or system DTMI cannot live in the DMR
            return {}
        if text is None:
            return {}
        found = _elements_by_id(text)
        if found is None:
            log.warning("model repository: the file for %s is not JSON; skipped", dtmi)
            return {}
        if dtmi not in found:
            log.warning("model repository: the file for %s does not define it", dtmi)
        return found

    def add(self, document: Document) -> list[str]:
        """Store each top-level element of ``document`` at its DMR path; its ``@id``\\ s.

        Only the ``@id`` is checked (a versioned DTMI); the model is not parsed. Raises
        ``ValueError`` (and stores nothing) for text that is not JSON, an element without
        a valid ``@id``, or an ``@id`` whose path holds a model with another ``@id``
        (DTMIs that differ only in case share a path).
        """
        value = _decode(document) if isinstance(document, str | bytes) else document
        elements = value if isinstance(value, list) else [value]
        if not elements:
            raise ValueError("the document holds no model")
        ids = [self._checked_id(element) for element in elements]
        if len(set(ids)) != len(ids):
            raise ValueError("the document defines the same @id twice")
        for dtmi, element in zip(ids, elements, strict=True):
            path = self.root / dtmi_to_path(dtmi)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(json.dumps(element, indent=2) + "\n", encoding="utf-8")
            os.replace(temporary, path)
            # A stale expanded form would shadow the new model.
            (self.root / expanded_path(dtmi)).unlink(missing_ok=True)
        return ids

    def _checked_id(self, element: Any) -> str:
        if not isinstance(element, dict) or not isinstance(element.get("@id"), str):
            raise ValueError("every model must be a JSON object with a string @id")
        dtmi: str = element["@id"]
        path = self.root / dtmi_to_path(dtmi)  # raises ValueError for a bad @id
        existing = _read_text(path)
        held = _top_level_ids(existing) if existing is not None else []
        clash = [other for other in held if other != dtmi]
        if clash:
            raise ValueError(f"{dtmi} would replace {clash[0]} at {dtmi_to_path(dtmi)}")
        return dtmi


class DirectoryResolver:
    """Resolves DTMIs from every ``*.json`` file under ``root``, whatever the layout.

    Files are indexed once, by each ``@id`` their elements define; a file that is not JSON
    is skipped with a warning, and a DTMI defined twice keeps its first file (by path).
    Pass the instance itself as ``parse_models(..., resolver=...)``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._index: dict[str, _Entry] = {}
        for path in sorted(self.root.rglob("*.json")):
            if path.is_file():
                self._add_file(path)

    def _add_file(self, path: Path) -> None:
        text = _read_text(path)
        found = _elements_by_id(text) if text is not None else None
        if found is None:
            log.warning("model folder: %s is not JSON; skipped", path)
            return
        entries: dict[str, _Entry] = {}
        for dtmi, element_text in found.items():
            if dtmi in self._index:
                log.warning("model folder: %s defined again in %s; ignored", dtmi, path)
                continue
            entry = entries.setdefault(element_text, _Entry(path, element_text))
            self._index[dtmi] = entry

    def __call__(self, dtmis: list[str]) -> list[str]:
        entries = dict.fromkeys(self._index[d] for d in dtmis if d in self._index)
        return [entry.text for entry in entries]

    def path_of(self, dtmi: str) -> Path | None:
        """The file that defines ``dtmi``, or None."""
        entry = self._index.get(dtmi)
        return entry.path if entry else None

    def __contains__(self, dtmi: object) -> bool:
        return dtmi in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass(frozen=True, eq=False, slots=True)
class _Entry:
    """One top-level element of a file, as the JSON text handed to the parser."""

    path: Path
    text: str


def _read_text(path: Path) -> str | None:
    """The UTF-8 text of ``path`` (a leading BOM dropped); None when absent or unreadable."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except UnicodeDecodeError:
        log.warning("model repository: %s is not UTF-8; skipped", path)
        return None
    except OSError as exc:  # a name too long for the file system cannot be stored either
        if exc.errno == errno.ENAMETOOLONG:
            return None
        raise


def _decode(text: str | bytes) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_strict_object)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not a JSON model document: {exc}") from None


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return result


def _elements_by_id(text: str) -> dict[str, str] | None:
    """Each ``@id`` the text defines -> the JSON text of its top-level element.

    A file holding one element maps to its own text; an array is split into one text per
    element. None when the text is not JSON.
    """
    try:
        value = _decode(text)
    except ValueError:
        return None
    single = not isinstance(value, list)
    found: dict[str, str] = {}
    for element in [value] if single else value:
        if isinstance(element, dict):
            served = text if single else json.dumps(element)
            for dtmi in _defined_ids(element):
                found.setdefault(dtmi, served)
    return found


def _top_level_ids(text: str) -> list[str]:
    try:
        value = _decode(text)
    except ValueError:
        return []
    elements = value if isinstance(value, list) else [value]
    return [e["@id"] for e in elements if isinstance(e, dict) and isinstance(e.get("@id"), str)]


def _defined_ids(element: dict[str, Any]) -> list[str]:
    """The ``@id`` of ``element`` and of every element nested in it (iteratively)."""
    ids: list[str] = []
    stack: list[Any] = [element]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if isinstance(current.get("@id"), str):
                ids.append(current["@id"])
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return ids
