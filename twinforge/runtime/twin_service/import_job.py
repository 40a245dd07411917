"""Bulk import in the Azure Digital Twins import-job format (NDJSON).

Sections, each opened by a ``{"Section": "..."}`` line: ``Header`` (one metadata object),
``Models`` (one DTDL Interface per line, uploaded as one batch), ``Twins`` (one twin
document per line, ``$dtId`` and ``$metadata.$model``), ``Relationships`` (``$dtId`` of
the source, ``$relationshipId``, ``$targetId``, ``$relationshipName``, properties). Each
line is checked on its own; bad lines are reported with their number and the rest is
imported, in batches. The report lists the refused lines in file order. A section that is
unknown or out of order is refused on its ``{"Section": ...}`` line, and its lines are
skipped (counted in that error), never read as part of the section before it. A file with
no lines at all is refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twinforge.runtime.events import EventKind
from twinforge.runtime.twin_service import documents as docs
from twinforge.runtime.twin_service.errors import TwinServiceError
from twinforge.runtime.twin_service.relationships import RelationshipRecord, build_relationship
from twinforge.runtime.twin_service.service import TwinService
from twinforge.runtime.twin_service.twins import TwinRecord, build_twin

SECTIONS = ("Header", "Models", "Twins", "Relationships")
MAX_LINE_BYTES = 2_000_000


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    section: str
    item: str | None
    code: str
    message: str


@dataclass(slots=True)
class ImportReport:
    header: dict[str, Any] = field(default_factory=dict)
    models: int = 0
    twins: int = 0
    relationships: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """``imported 11 models, 24 twins, 1 relationship; 2 lines refused``."""
        return (
            f"imported {_count(self.models, 'model')}, {_count(self.twins, 'twin')}, "
            f"{_count(self.relationships, 'relationship')}; "
            f"{_count(len(self.errors), 'line')} refused"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "twins": self.twins,
            "relationships": self.relationships,
            "errors": [dataclasses.asdict(e) for e in self.errors],
        }


class _Importer:
    def __init__(self, service: TwinService, batch_size: int) -> None:
        self.service = service
        self.batch_size = batch_size
        self.report = ImportReport()
        self.models: list[tuple[int, dict[str, Any]]] = []
        self.twins: list[tuple[int, TwinRecord]] = []
        self.relationship_lines: list[tuple[int, Any]] = []
        # Lineage of the twins this import created, so relationships need no lookups.
        self.lineages: dict[str, list[str]] = {}
        # Relationship counts per (source, name) and ids per source, for the sources in
        # known_sources: those created here and those whose stored ones were read.
        self.counts: Counter[tuple[str, str]] = Counter()
        self.taken: set[tuple[str, str]] = set()
        self.known_sources: set[str] = set()

    def fail(
        self, line: int, section: str, item: Any, error: TwinServiceError | str, code: str = ""
    ) -> None:
        if isinstance(error, TwinServiceError):
            code, message = error.code, str(error)
        else:
            message = error
        self.report.errors.append(
            LineError(line, section, item if isinstance(item, str) else None, code, message)
        )

    # -- sections ----------------------------------------------------------------------
    def run(self, lines: Iterable[str | bytes]) -> ImportReport:
        section: str | None = None
        # A section refused on its heading line: (line number, name, lines skipped).
        skipping: list[Any] | None = None
        anything = False
        for number, raw in enumerate(lines, start=1):
            if len(raw) > MAX_LINE_BYTES:
                if skipping is not None:
                    skipping[2] += 1
                    continue
                self.fail(
                    number,
                    section or "",
                    None,
                    f"line longer than {MAX_LINE_BYTES} bytes",
                    "maxSize",
                )
                continue
            if not raw.strip():
                continue
            anything = True
            try:
                value = json.loads(raw)
            except ValueError as exc:
                if skipping is not None:
                    skipping[2] += 1
                    continue
                self.fail(number, section or "", None, f"not JSON: {exc}", "invalidJson")
                continue
            if isinstance(value, dict) and set(value) == {"Section"}:
                name = value["Section"]
                self.end_skipped(skipping)
                skipping = None
                if name not in SECTIONS or (
                    section is not None and SECTIONS.index(name) <= SECTIONS.index(section)
                ):
                    # Its lines are not the previous section's: skip them, counted.
                    skipping = [number, name, 0]
                    continue
                self.end_section(section)
                section = name
                continue
            if skipping is not None:
                skipping[2] += 1
            elif section is None:
                self.fail(
                    number, "", None, 'the file must start with {"Section": "Header"}', "section"
                )
            elif section == "Header":
                self.report.header = value if isinstance(value, dict) else {}
            elif section == "Models":
                self.models.append((number, value))
            elif section == "Twins":
                self.add_twin(number, value)
            else:
                self.relationship_lines.append((number, value))
                if len(self.relationship_lines) >= self.batch_size:
                    self.flush_relationships()
        self.end_skipped(skipping)
        self.end_section(section)
        if not anything:
            self.fail(
                1,
                "",
                None,
                'the file is empty: an import file starts with {"Section": "Header"}, then '
                "holds Models, Twins and Relationships sections",
                "empty",
            )
        self.report.errors.sort(key=lambda e: e.line)  # flushed in batches, so out of order
        return self.report

    def end_skipped(self, skipping: list[Any] | None) -> None:
        if skipping is None:
            return
        number, name, skipped = skipping
        known = name in SECTIONS
        self.fail(
            number,
            name if isinstance(name, str) else "",
            None,
            f"section {name!r} is "
            + ("out of order" if known else "unknown")
            + f": sections are {', '.join(SECTIONS)}, in that order, each once; "
            + (
                f"its {_count(skipped, 'line')} {'was' if skipped == 1 else 'were'} skipped"
                if skipped
                else "it is empty"
            ),
            "section",
        )

    def end_section(self, section: str | None) -> None:
        if section == "Models":
            self.flush_models()
        elif section == "Twins":
            self.flush_twins()
        elif section == "Relationships":
            self.flush_relationships()

    # -- models ----------------------------------------------------------------------
    def flush_models(self) -> None:
        if not self.models:
            return
        try:
            self.report.models = len(self.service.models.upload([m for _, m in self.models]))
        except TwinServiceError as exc:
            first = self.models[0][0]
            self.fail(first, "Models", None, exc)
        self.models = []

    # -- twins -----------------------------------------------------------------------
    def add_twin(self, number: int, value: Any) -> None:
        twin_id = value.get("$dtId") if isinstance(value, dict) else None
        try:
            record = build_twin(twin_id, value, self.service.models)  # type: ignore[arg-type]
        except TwinServiceError as exc:
            self.fail(number, "Twins", twin_id, exc)
            return
        if record.id in self.lineages:
            self.fail(
                number,
                "Twins",
                record.id,
                f"twin {record.id} appears twice in the file",
                "alreadyExists",
            )
            return
        self.lineages[record.id] = record.lineage
        self.twins.append((number, record))
        if len(self.twins) >= self.batch_size:
            self.flush_twins()

    def flush_twins(self) -> None:
        if not self.twins:
            return
        store = self.service.store
        existing = {
            r["id"]
            for r in store.read(
                "MATCH (t:Twin) WHERE t.twin_id IN $ids RETURN t.twin_id AS id",
                {"ids": [r.id for _, r in self.twins]},
            )
        }
        fresh = []
        for number, record in self.twins:
            if record.id in existing:
                del self.lineages[record.id]
                self.fail(number, "Twins", record.id, f"twin {record.id} exists", "alreadyExists")
            else:
                fresh.append(record)
        if fresh:
            store.write(
                "UNWIND $rows AS row CREATE (t:Twin) SET t = row",
                {"rows": [r.node() for r in fresh]},
            )
            for record in fresh:
                self.known_sources.add(record.id)
                self.service.bus.publish(EventKind.TWIN_CREATED, record.id, record.document)
        self.report.twins += len(fresh)
        self.twins = []

    # -- relationships ---------------------------------------------------------------
    def flush_relationships(self) -> None:
        if not self.relationship_lines:
            return
        lines, self.relationship_lines = self.relationship_lines, []
        ids = {v.get(k) for _, v in lines if isinstance(v, dict) for k in ("$dtId", "$targetId")}
        unknown = [i for i in ids if isinstance(i, str) and i not in self.lineages]
        if unknown:
            for row in self.service.store.read(
                "MATCH (t:Twin) WHERE t.twin_id IN $ids RETURN t.twin_id AS id, t.models AS models",
                {"ids": unknown},
            ):
                self.lineages[row["id"]] = list(row["models"])
        self.load_existing({v.get("$dtId") for _, v in lines if isinstance(v, dict)})
        by_name: dict[str, list[RelationshipRecord]] = defaultdict(list)
        for number, value in lines:
            record = self.check_relationship(number, value)
            if record is not None:
                by_name[record.name].append(record)
        for name, records in by_name.items():
            self.service.store.write(
                "UNWIND $rows AS row MATCH (s:Twin {twin_id: row.source}) "
                f"MATCH (t:Twin {{twin_id: row.target}}) CREATE (s)-[r:`{name}`]->(t) SET r = row.props",
                {
                    "rows": [
                        {"source": r.source, "target": r.target, "props": r.edge()} for r in records
                    ]
                },
            )
            for record in records:
                self.service.bus.publish(
                    EventKind.RELATIONSHIP_CREATED, record.source, record.document
                )
            self.report.relationships += len(records)

    def load_existing(self, sources: set[Any]) -> None:
        """Count the stored relationships of sources this import did not create."""
        wanted = [s for s in sources if isinstance(s, str) and s not in self.known_sources]
        if not wanted:
            return
        for row in self.service.store.read(
            "MATCH (s:Twin)-[r]->() WHERE s.twin_id IN $ids "
            "RETURN s.twin_id AS source, type(r) AS name, r.rel_id AS id",
            {"ids": wanted},
        ):
            self.counts[row["source"], row["name"]] += 1
            self.taken.add((row["source"], row["id"]))
        self.known_sources.update(wanted)

    def check_relationship(self, number: int, value: Any) -> RelationshipRecord | None:
        source = value.get("$dtId") if isinstance(value, dict) else None
        item = value.get("$relationshipId") if isinstance(value, dict) else None
        try:
            docs.check_id(source, "$dtId")
            lineage = self.lineages.get(source)
            if lineage is None:
                self.fail(number, "Relationships", item, f"no twin {source}", "notFound")
                return None
            body = {k: v for k, v in value.items() if k != "$dtId"}
            record = build_relationship(
                source,
                item,
                body,
                self.service.models.interface(lineage[0]),  # type: ignore[arg-type]
                self.lineages.get(body.get("$targetId")),
            )
        except TwinServiceError as exc:
            self.fail(number, "Relationships", item, exc)
            return None
        counts, taken = self.counts, self.taken
        if (source, record.id) in taken:
            self.fail(
                number,
                "Relationships",
                record.id,
                f"{source} already has a relationship {record.id}",
                "alreadyExists",
            )
            return None
        if (
            record.max_multiplicity is not None
            and counts[source, record.name] >= record.max_multiplicity
        ):
            self.fail(
                number,
                "Relationships",
                record.id,
                f"{source} would exceed maxMultiplicity {record.max_multiplicity} of {record.name!r}",
                "conflict",
            )
            return None
        taken.add((source, record.id))
        counts[source, record.name] += 1
        return record


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def import_ndjson(
    service: TwinService, lines: Iterable[str | bytes], *, batch_size: int = 2000
) -> ImportReport:
    """Import an ADT import-job file, line by line; see the module docstring."""
    return _Importer(service, batch_size).run(lines)
