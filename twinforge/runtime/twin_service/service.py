"""The twin service: models, twins, relationships and queries on a graph store, with an
event for every change. Synchronous and thread-safe; the API layers call it from worker
threads."""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twinforge.runtime.events import EventBus, EventKind
from twinforge.runtime.history import BatchingWriter, HistoryPoint
from twinforge.runtime.stores import GraphStore
from twinforge.runtime.topology import Edge, TopologyView
from twinforge.runtime.twin_service import documents as docs
from twinforge.runtime.twin_service.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PreconditionFailed,
    invalid,
)
from twinforge.runtime.twin_service.models import ModelCatalog
from twinforge.runtime.twin_service.queries import TwinQuery, check_read_only, compile_query
from twinforge.runtime.twin_service.relationships import RelationshipRecord, build_relationship
from twinforge.runtime.twin_service.twins import TwinRecord, apply_patch, build_twin

# Optimistic retries for patches without If-Match; jittered so racing writers spread out.
_PATCH_RETRIES = 30


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    #: Pass as ``after`` to get the next page; None on the last page.
    next_after: str | None


class TwinService:
    """``history``, when given, receives every property value a change sets (kind
    ``property``, timestamped with its ``lastUpdateTime``)."""

    def __init__(
        self,
        store: GraphStore,
        bus: EventBus | None = None,
        history: BatchingWriter | None = None,
    ) -> None:
        self.store = store
        self.bus = bus if bus is not None else EventBus()
        self.history = history
        for label, prop in (("Twin", "twin_id"), ("Twin", "model"), ("Model", "model_id")):
            store.ensure_index(label, prop)
        self.models = ModelCatalog(store, self.bus)

    # -- twins -----------------------------------------------------------------------
    def create_twin(self, twin_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
        record = build_twin(twin_id, document, self.models)
        rows = self.store.write(
            # count(), not "WITH e WHERE e IS NULL": FalkorDB lets the latter through.
            "OPTIONAL MATCH (e:Twin {twin_id: $id}) WITH count(e) AS existing "
            "WHERE existing = 0 CREATE (t:Twin) SET t = $node RETURN t.etag AS etag",
            {"id": twin_id, "node": record.node()},
        )
        if not rows:
            raise AlreadyExists(f"twin {twin_id} exists")
        self._record_history(record)
        self.bus.publish(EventKind.TWIN_CREATED, twin_id, record.document)
        return record.document

    def get_twin(self, twin_id: str) -> dict[str, Any]:
        return self._read_twin(twin_id)[0]

    def get_twins(self, twin_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Several twins in one round trip (for batching loaders); missing ids are absent."""
        rows = self.store.read(
            "MATCH (t:Twin) WHERE t.twin_id IN $ids RETURN t.twin_id AS id, t.doc AS doc",
            {"ids": list(twin_ids)},
        )
        return {r["id"]: docs.decode(r["doc"]) for r in rows}

    def replace_twin(
        self, twin_id: str, document: Mapping[str, Any], *, if_match: str | None = None
    ) -> dict[str, Any]:
        current, etag = self._read_twin(twin_id)
        _check_etag(if_match, etag, twin_id)
        record = build_twin(twin_id, document, self.models, previous=current)
        self._write_twin(record, etag, if_match)
        self._record_history(record)
        self.bus.publish(EventKind.TWIN_REPLACED, twin_id, record.document)
        return record.document

    def patch_twin(
        self, twin_id: str, patch: Sequence[Mapping[str, Any]], *, if_match: str | None = None
    ) -> dict[str, Any]:
        """Apply a JSON Patch; without ``if_match`` a concurrent change is merged by
        re-applying the patch to the newer twin."""
        for attempt in range(_PATCH_RETRIES):
            if attempt:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
            current, etag = self._read_twin(twin_id)
            _check_etag(if_match, etag, twin_id)
            patched = apply_patch(current, patch)
            record = build_twin(twin_id, patched, self.models, previous=current)
            if self._write_twin(record, etag, if_match):
                self._record_history(record)
                self.bus.publish(
                    EventKind.TWIN_PATCHED, twin_id, {"patch": list(patch), "twin": record.document}
                )
                return record.document
        raise Conflict(f"twin {twin_id} kept changing; patch not applied")

    def delete_twin(
        self, twin_id: str, *, if_match: str | None = None, cascade: bool = False
    ) -> None:
        """Delete a twin; it must have no relationships unless ``cascade`` deletes them."""
        current, etag = self._read_twin(twin_id)
        _check_etag(if_match, etag, twin_id)
        removed: list[dict[str, Any]] = []
        if cascade:
            removed = self.list_relationships(twin_id) + self.list_incoming_relationships(twin_id)
        rows = self.store.write(
            "MATCH (t:Twin {twin_id: $id}) WHERE t.etag = $etag "
            "OPTIONAL MATCH (t)-[r]-() WITH t, count(r) AS n WHERE n = 0 OR $cascade "
            "DETACH DELETE t RETURN 1 AS done",
            {"id": twin_id, "etag": etag, "cascade": cascade},
        )
        if not rows:
            if self._read_twin(twin_id)[1] != etag:
                raise PreconditionFailed(f"twin {twin_id} changed; read it again")
            raise Conflict(
                f"twin {twin_id} has relationships; delete them first or delete with cascade"
            )
        for relationship in removed:
            self.bus.publish(
                EventKind.RELATIONSHIP_DELETED, relationship["$sourceId"], relationship
            )
        self.bus.publish(EventKind.TWIN_DELETED, twin_id, current)

    # -- relationships ---------------------------------------------------------------
    def create_relationship(
        self, source_id: str, relationship_id: str, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        docs.check_id(source_id, "$sourceId")
        target_id = document.get("$targetId") if isinstance(document, Mapping) else None
        rows = self.store.read(
            "MATCH (s:Twin {twin_id: $source}) OPTIONAL MATCH (t:Twin {twin_id: $target}) "
            "RETURN s.model AS model, t.models AS target_models",
            {"source": source_id, "target": target_id if isinstance(target_id, str) else ""},
        )
        if not rows:
            raise NotFound(f"no twin {source_id}")
        interface = self.models.interface(rows[0]["model"])
        record = build_relationship(
            source_id, relationship_id, document, interface, rows[0]["target_models"]
        )
        if not self._create_relationships(record.name, [record]):
            self._explain_refused_relationship(record)
        self.bus.publish(EventKind.RELATIONSHIP_CREATED, source_id, record.document)
        return record.document

    def get_relationship(self, source_id: str, relationship_id: str) -> dict[str, Any]:
        rows = self.store.read(
            "MATCH (s:Twin {twin_id: $source})-[r]->() WHERE r.rel_id = $id RETURN r.doc AS doc",
            {"source": source_id, "id": relationship_id},
        )
        if not rows:
            raise NotFound(f"twin {source_id} has no relationship {relationship_id}")
        return docs.decode(rows[0]["doc"])

    def list_relationships(self, source_id: str, name: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.read(
            "MATCH (s:Twin {twin_id: $source})-[r]->() "
            "WHERE $name IS NULL OR type(r) = $name RETURN r.doc AS doc ORDER BY r.rel_id",
            {"source": source_id, "name": name},
        )
        return [docs.decode(r["doc"]) for r in rows]

    def relationships_of(self, source_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Outgoing relationships of several twins in one round trip (for batching
        loaders), ordered by relationship id; twins without any are absent."""
        return self._grouped(
            "MATCH (s:Twin)-[r]->() WHERE s.twin_id IN $ids "
            "RETURN s.twin_id AS twin, r.doc AS doc ORDER BY twin, r.rel_id",
            source_ids,
        )

    def incoming_relationships_of(
        self, target_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Incoming relationships of several twins in one round trip, ordered by source
        and relationship id; twins without any are absent."""
        return self._grouped(
            "MATCH (s:Twin)-[r]->(t:Twin) WHERE t.twin_id IN $ids "
            "RETURN t.twin_id AS twin, r.doc AS doc ORDER BY twin, s.twin_id, r.rel_id",
            target_ids,
        )

    def list_incoming_relationships(self, target_id: str) -> list[dict[str, Any]]:
        rows = self.store.read(
            "MATCH (s:Twin)-[r]->(t:Twin {twin_id: $target}) "
            "RETURN r.doc AS doc ORDER BY s.twin_id, r.rel_id",
            {"target": target_id},
        )
        return [docs.decode(r["doc"]) for r in rows]

    def delete_relationship(
        self, source_id: str, relationship_id: str, *, if_match: str | None = None
    ) -> None:
        current = self.get_relationship(source_id, relationship_id)
        _check_etag(if_match, current["$etag"], relationship_id)
        rows = self.store.write(
            "MATCH (s:Twin {twin_id: $source})-[r]->() WHERE r.rel_id = $id AND r.etag = $etag "
            "DELETE r RETURN 1 AS done",
            {"source": source_id, "id": relationship_id, "etag": current["$etag"]},
        )
        if not rows:
            raise PreconditionFailed(f"relationship {relationship_id} changed; read it again")
        self.bus.publish(EventKind.RELATIONSHIP_DELETED, source_id, current)

    # -- queries ---------------------------------------------------------------------
    def query_twins(self, query: TwinQuery) -> Page:
        cypher, params = compile_query(query)
        rows = self.store.read(cypher, params)
        items = [docs.decode(r["doc"]) for r in rows]
        full = len(rows) == query.limit
        return Page(items, rows[-1]["id"] if full else None)

    def cypher(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run an admin's read-only Cypher query."""
        return self.store.read(check_read_only(query), dict(params or {}))

    def topology(self, relationship_names: Collection[str] | None = None) -> TopologyView:
        """A networkx view of the relationships named, kept fresh by this service's events."""
        rows = self.store.read(
            "MATCH (s:Twin)-[r]->(t:Twin) WHERE $names IS NULL OR type(r) IN $names "
            "RETURN r.rel_id AS id, s.twin_id AS source, t.twin_id AS target, type(r) AS name "
            "ORDER BY source, id",  # a deterministic view: BFS order follows insertion
            {"names": list(relationship_names) if relationship_names is not None else None},
        )
        view = TopologyView(
            relationship_names,
            (Edge(r["id"], r["source"], r["target"], r["name"]) for r in rows),
        )
        self.bus.add_listener(view.apply)
        return view

    # -- helpers ---------------------------------------------------------------------
    def _grouped(self, cypher: str, twin_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for row in self.store.read(cypher, {"ids": list(twin_ids)}):
            found.setdefault(row["twin"], []).append(docs.decode(row["doc"]))
        return found

    def _record_history(self, record: TwinRecord) -> None:
        """Values whose ``lastUpdateTime`` is this change's go to the history store."""
        if self.history is None:
            return
        document = record.document
        time = document["$metadata"]["$lastUpdateTime"]
        points = [
            HistoryPoint(record.id, path, docs.parse_time(time), value, "property")
            for path, value, updated in docs.updated_values(document)
            if updated == time
        ]
        if points:
            self.history.put_many(points)

    def _read_twin(self, twin_id: str) -> tuple[dict[str, Any], str]:
        docs.check_id(twin_id, "$dtId")
        rows = self.store.read(
            "MATCH (t:Twin {twin_id: $id}) RETURN t.doc AS doc, t.etag AS etag", {"id": twin_id}
        )
        if not rows:
            raise NotFound(f"no twin {twin_id}")
        return docs.decode(rows[0]["doc"]), rows[0]["etag"]

    def _write_twin(self, record: TwinRecord, read_etag: str, if_match: str | None) -> bool:
        """Write if the stored ETag is still the one read; False when it is not and the
        caller named none (it may retry), PreconditionFailed when the caller's is stale."""
        rows = self.store.write(
            "MATCH (t:Twin {twin_id: $id}) WHERE t.etag = $expected SET t = $node "
            "RETURN t.etag AS etag",
            {"id": record.id, "expected": read_etag, "node": record.node()},
        )
        if rows:
            return True
        if if_match not in (None, "*"):
            raise PreconditionFailed(f"twin {record.id} changed; read it again")
        return False

    def _create_relationships(self, name: str, records: Sequence[RelationshipRecord]) -> int:
        """Create relationships of one name, each only if its id is new for its source and
        its source stays within the relationship's maxMultiplicity; returns how many."""
        rows = self.store.write(
            "UNWIND $rows AS row "
            "MATCH (s:Twin {twin_id: row.source}) MATCH (t:Twin {twin_id: row.target}) "
            "OPTIONAL MATCH (s)-[same]->() WHERE same.rel_id = row.props.rel_id "
            "WITH row, s, t, count(same) AS duplicates "
            f"OPTIONAL MATCH (s)-[peer:`{docs.check_name(name, '$relationshipName')}`]->() "
            "WITH row, s, t, duplicates, count(peer) AS peers "
            "WHERE duplicates = 0 AND (row.max IS NULL OR peers < row.max) "
            f"CREATE (s)-[r:`{name}`]->(t) SET r = row.props RETURN count(r) AS created",
            {
                "rows": [
                    {
                        "source": r.source,
                        "target": r.target,
                        "props": r.edge(),
                        "max": r.max_multiplicity,
                    }
                    for r in records
                ]
            },
        )
        return int(rows[0]["created"]) if rows else 0

    def _explain_refused_relationship(self, record: RelationshipRecord) -> None:
        try:
            self.get_relationship(record.source, record.id)
        except NotFound:
            raise Conflict(
                f"{record.source} already has {record.max_multiplicity} {record.name!r} "
                "relationship(s), the model's maxMultiplicity"
            ) from None
        raise AlreadyExists(f"twin {record.source} already has a relationship {record.id}")


def _check_etag(if_match: str | None, etag: str, item: str) -> None:
    if if_match is None or if_match == "*":
        return
    if not isinstance(if_match, str):
        raise invalid("If-Match", "type", "If-Match must be an ETag string")
    if if_match != etag:
        raise PreconditionFailed(f"{item} has changed since ETag {if_match}; read it again")
