"""Benchmark: the twin graph on the embedded FalkorDB.

Imports a generated plant (default 100,000 twins, 300,000 relationships) through the
import job (every line validated against its DTDL model), then measures twin-by-id reads and
2-hop traversals through the twin service. Baselines, measured in the same run on the same
store: a raw UNWIND CREATE of the same nodes without validation, and the bare Cypher round
trip of each read. Goals: import in at most 60 s, twin-by-id p50 under 1 ms, 2-hop p50 under
5 ms.

    uv run python bench/graph.py [--twins 100000] [--relationships-per-twin 3]

The last line printed is JSON: {"import_s": ..., "twin_by_id_p50_ms": ..., "two_hop_p50_ms": ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from twinforge.runtime.stores import open_graph_store
from twinforge.runtime.twin_service import Traversal, TwinQuery, TwinService, import_ndjson

GOALS = {"import_s": 60.0, "twin_by_id_p50_ms": 1.0, "two_hop_p50_ms": 5.0}
MACHINE = "dtmi:com:twinforge:bench:Machine;1"
MODEL = {
    "@context": "dtmi:dtdl:context;3",
    "@id": MACHINE,
    "@type": "Interface",
    "contents": [
        {"@type": "Property", "name": "serialNumber", "schema": "string"},
        {"@type": "Property", "name": "ratedPowerKw", "schema": "double"},
        {"@type": "Property", "name": "line", "schema": "integer"},
        {"@type": "Telemetry", "name": "temperature", "schema": "double"},
        {"@type": "Relationship", "name": "feeds", "target": MACHINE},
    ],
}


def import_lines(twins: int, per_twin: int, seed: int = 7) -> Iterator[str]:
    """An ADT import file: each machine feeds ``per_twin`` machines further down."""
    rng = random.Random(seed)
    yield json.dumps({"Section": "Header"})
    yield json.dumps({"fileVersion": "1.0.0", "author": "bench/graph.py"})
    yield json.dumps({"Section": "Models"})
    yield json.dumps(MODEL)
    yield json.dumps({"Section": "Twins"})
    for i in range(twins):
        yield json.dumps(
            {
                "$dtId": f"m{i}",
                "$metadata": {"$model": MACHINE},
                "serialNumber": f"SN-{i:07d}",
                "ratedPowerKw": round(rng.uniform(1, 90), 2),
                "line": i % 50,
            }
        )
    yield json.dumps({"Section": "Relationships"})
    for i in range(twins):
        for k in range(per_twin):
            target = (i + 1 + rng.randrange(1000)) % twins
            yield json.dumps(
                {
                    "$dtId": f"m{i}",
                    "$relationshipId": f"f{k}",
                    "$targetId": f"m{target}",
                    "$relationshipName": "feeds",
                }
            )


def p50_ms(fn: Callable[[str], object], ids: list[str]) -> tuple[float, float]:
    for twin_id in ids[:50]:
        fn(twin_id)  # warm
    times = []
    for twin_id in ids:
        start = time.perf_counter()
        fn(twin_id)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--relationships-per-twin", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(11)

    with tempfile.TemporaryDirectory(prefix="twinforge-bench-") as tmp:
        store = open_graph_store(None, Path(tmp))
        try:
            service = TwinService(store)
            lines = list(import_lines(args.twins, args.relationships_per_twin))
            start = time.perf_counter()
            report = import_ndjson(service, lines)
            import_s = time.perf_counter() - start
            assert report.ok, report.errors[:3]
            print(
                f"import   {report.twins} twins, {report.relationships} relationships in "
                f"{import_s:.1f} s = {(report.twins + report.relationships) / import_s:,.0f} items/s"
            )

            # Baseline: the same nodes created raw, no validation, into another graph label.
            rows = [{"twin_id": f"raw{i}", "doc": lines[5 + i]} for i in range(args.twins)]
            start = time.perf_counter()
            for offset in range(0, len(rows), 2000):
                store.write(
                    "UNWIND $rows AS row CREATE (t:Raw) SET t = row",
                    {"rows": rows[offset : offset + 2000]},
                )
            raw_s = time.perf_counter() - start
            print(f"baseline raw UNWIND CREATE of {args.twins} nodes, no validation: {raw_s:.2f} s")

            ids = [f"m{rng.randrange(args.twins)}" for _ in range(args.samples)]
            by_id = p50_ms(service.get_twin, ids)
            raw_by_id = p50_ms(
                lambda i: store.read(
                    "MATCH (t:Twin {twin_id: $id}) RETURN t.doc AS doc", {"id": i}
                ),
                ids,
            )
            two_hop = p50_ms(
                lambda i: service.query_twins(
                    TwinQuery(traversal=Traversal(i, ("feeds",), min_hops=2, max_hops=2))
                ),
                ids,
            )
            raw_two_hop = p50_ms(
                lambda i: store.read(
                    "MATCH (:Twin {twin_id: $id})-[:feeds]->()-[:feeds]->(t) RETURN DISTINCT t.twin_id AS id",
                    {"id": i},
                ),
                ids,
            )
            print(
                f"twin by id   p50 {by_id[0]:.3f} ms  p99 {by_id[1]:.3f} ms  | raw Cypher p50 {raw_by_id[0]:.3f} ms"
            )
            print(
                f"2-hop        p50 {two_hop[0]:.3f} ms  p99 {two_hop[1]:.3f} ms  | raw Cypher p50 {raw_two_hop[0]:.3f} ms"
            )
        finally:
            store.close()
    figures = {
        "import_s": round(import_s, 1),
        "twin_by_id_p50_ms": round(by_id[0], 3),
        "two_hop_p50_ms": round(two_hop[0], 3),
        "twin_by_id_p99_ms": round(by_id[1], 3),
        "two_hop_p99_ms": round(two_hop[1], 3),
        "raw_import_s": round(raw_s, 2),
        "raw_twin_by_id_p50_ms": round(raw_by_id[0], 3),
        "raw_two_hop_p50_ms": round(raw_two_hop[0], 3),
        "twins": report.twins,
        "relationships": report.relationships,
    }
    met = all(figures[k] <= goal for k, goal in GOALS.items())
    print(f"goals {'met' if met else 'NOT met'}: {GOALS}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
