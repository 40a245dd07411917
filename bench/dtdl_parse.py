"""Benchmark: DTDL parsing speed, warm, on a real ontology and a generated one.

Workloads: the ISA-95 ontology (vendored in tests/data/isa95; $TWINFORGE_SHARED, if set,
points at a shared/ folder to read instead) and 2,000 generated interfaces shaped
like it (an extends chain, localized names, properties, relationships, components, enums).
The baseline, measured in the same run, is ``json.loads`` of the same documents: the work
any parser must do before it validates anything. Goal: 6,000 interfaces/s.

    uv run python bench/dtdl_parse.py [--interfaces 2000] [--repeat 7]

The last line printed is JSON: {"interfaces_per_s": ..., ...}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from pathlib import Path

from twinforge.twin_models import parse_models

REPO = Path(__file__).resolve().parents[1]
GOAL_INTERFACES_PER_S = 6000


def isa95_ontology_dir() -> Path:
    """The vendored copy in tests/data, or ``$TWINFORGE_SHARED/models/isa95/Ontology``."""
    shared = os.environ.get("TWINFORGE_SHARED")
    if shared:
        return Path(shared) / "models" / "isa95" / "Ontology"
    return REPO / "tests" / "data" / "isa95" / "Ontology"


def isa95_documents() -> list[str]:
    ontology = isa95_ontology_dir()
    files = sorted(ontology.rglob("*.json"))
    if not files:
        raise SystemExit(f"ISA-95 ontology not found under {ontology}")
    return [f.read_text(encoding="utf-8") for f in files]


def _localized(text: str) -> dict[str, str]:
    return {"en": text, "de": text + " (de)"}


def generated_documents(count: int) -> list[str]:
    """``count`` DTDL v3 interfaces in ISA-95's proportions: ~10 elements per interface."""
    prefix = "dtmi:com:twinforge:bench"
    base = {
        "@context": "dtmi:dtdl:context;3",
        "@id": f"{prefix}:Equipment;1",
        "@type": "Interface",
        "displayName": _localized("Equipment"),
        "contents": [
            {"@type": "Property", "name": "equipmentId", "schema": "string"},
            {"@type": "Relationship", "name": "isPartOf", "target": f"{prefix}:Equipment;1"},
        ],
    }
    docs = [base]
    for i in range(count):
        parent = f"{prefix}:Equipment;1" if i % 10 == 0 else f"{prefix}:Machine{i - 1};1"
        contents: list[dict] = [
            {
                "@type": "Property",
                "name": f"serial{i}",
                "schema": "string",
                "displayName": _localized("serial"),
            },
            {"@type": "Property", "name": f"ratedPower{i}", "schema": "double", "writable": True},
            {"@type": "Telemetry", "name": f"temperature{i}", "schema": "double"},
            {
                "@type": "Relationship",
                "name": f"feeds{i}",
                "target": f"{prefix}:Equipment;1",
                "maxMultiplicity": 8,
            },
            {
                "@type": "Relationship",
                "name": f"hasLocation{i}",
                "displayName": _localized("has location"),
            },
            {
                "@type": "Property",
                "name": f"state{i}",
                "schema": {
                    "@type": "Enum",
                    "valueSchema": "string",
                    "enumValues": [
                        {"name": s, "enumValue": s} for s in ("running", "idle", "fault")
                    ],
                },
            },
        ]
        docs.append(
            {
                "@context": "dtmi:dtdl:context;3",
                "@id": f"{prefix}:Machine{i};1",
                "@type": "Interface",
                "extends": parent,
                "displayName": _localized(f"Machine {i}"),
                "description": _localized("generated for the parse benchmark"),
                "contents": contents,
            }
        )
    return [json.dumps(doc) for doc in docs]


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm: metamodel loaded, caches filled
    runs = []
    for _ in range(repeat):
        gc.collect()  # every run starts from the same heap, as timeit's runs do
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
        del result  # freeing the previous result is not part of the next parse
    return statistics.median(runs)


def measure(name: str, docs: list[str], repeat: int) -> dict[str, float]:
    interfaces = len(parse_models(docs).interfaces)
    parse_s = _median_seconds(lambda: parse_models(docs), repeat)
    json_s = _median_seconds(lambda: [json.loads(d) for d in docs], repeat)
    rate = interfaces / parse_s
    print(
        f"{name:10s} {interfaces:6d} interfaces  parse {parse_s * 1000:8.1f} ms = {rate:8.0f} interfaces/s"
        f"  | baseline json.loads {json_s * 1000:6.1f} ms ({parse_s / json_s:4.1f}x)"
    )
    return {
        "interfaces": interfaces,
        "parse_s": parse_s,
        "json_s": json_s,
        "interfaces_per_s": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interfaces", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    isa95 = measure("isa95", isa95_documents(), args.repeat)
    generated = measure("generated", generated_documents(args.interfaces), args.repeat)
    total = isa95["interfaces"] + generated["interfaces"]
    rate = total / (isa95["parse_s"] + generated["parse_s"])
    print(f"overall {rate:.0f} interfaces/s warm (goal {GOAL_INTERFACES_PER_S})")
    print(
        json.dumps(
            {
                "interfaces_per_s": round(rate),
                "isa95_interfaces_per_s": round(isa95["interfaces_per_s"]),
                "generated_interfaces_per_s": round(generated["interfaces_per_s"]),
                "vs_json_loads": round(
                    (isa95["parse_s"] + generated["parse_s"])
                    / (isa95["json_s"] + generated["json_s"]),
                    1,
                ),
                "goal": GOAL_INTERFACES_PER_S,
            }
        )
    )


if __name__ == "__main__":
    main()
