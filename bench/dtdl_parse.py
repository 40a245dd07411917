"""Benchmark: parse DTDL model sets with twinforge.twin_models.parse_models.

Two workloads: the sample factory in examples/models, and a synthetic set of N
interfaces that each extend a shared base and carry a mix of contents. Prints the median
of several runs; with --out, also writes the figures as JSON.

    uv run python bench/dtdl_parse.py [--interfaces 500] [--repeat 5] [--out bench/out/x.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from twinforge.twin_models import parse_models

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"


def synthetic_models(count: int) -> list[str]:
    """A base interface plus ``count`` interfaces extending it, each with ten contents."""
    base = "dtmi:com:twinforge:bench:Base;1"
    docs = [
        {
            "@context": "dtmi:dtdl:context;3",
            "@id": base,
            "@type": "Interface",
            "contents": [
                {"@type": "Property", "name": "serialNumber", "schema": "string"},
                {"@type": "Relationship", "name": "feeds", "target": base},
            ],
        }
    ]
    for i in range(count):
        contents: list[dict[str, object]] = [
            {"@type": "Telemetry", "name": f"sensor{j}", "schema": "double"} for j in range(6)
        ]
        contents += [
            {"@type": "Property", "name": "setPoint", "schema": "double", "writable": True},
            {
                "@type": "Property",
                "name": "state",
                "schema": {
                    "@type": "Enum",
                    "valueSchema": "string",
                    "enumValues": [
                        {"name": s, "enumValue": s} for s in ("running", "stopped", "fault")
                    ],
                },
            },
            {
                "@type": "Command",
                "name": "configure",
                "request": {
                    "name": "settings",
                    "schema": {
                        "@type": "Object",
                        "fields": [
                            {"name": "mode", "schema": "string"},
                            {"name": "limit", "schema": "double"},
                        ],
                    },
                },
            },
            {"@type": "Relationship", "name": "partOf", "target": base},
        ]
        docs.append(
            {
                "@context": "dtmi:dtdl:context;3",
                "@id": f"dtmi:com:twinforge:bench:Machine{i};1",
                "@type": "Interface",
                "extends": base,
                "contents": contents,
            }
        )
    return [json.dumps(doc) for doc in docs]


def time_parse(docs: list[str], repeat: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        model_set = parse_models(docs)
        seconds.append(time.perf_counter() - start)
    return {
        "documents": len(docs),
        "interfaces": len(model_set.interfaces),
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interfaces", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    examples = [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.json"))]
    results = {
        "examples": time_parse(examples, args.repeat),
        "synthetic": time_parse(synthetic_models(args.interfaces), args.repeat),
    }
    for name, r in results.items():
        print(
            f"{name:10s} {r['documents']:6.0f} docs {r['interfaces']:6.0f} interfaces "
            f"median {r['median_s'] * 1000:9.1f} ms  min {r['min_s'] * 1000:9.1f} ms"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
