"""Generate a large synthetic PROV-JSON document of many training runs (for check/lineage benchmarks).

    python benchmarks/gen_lineage_doc.py OUT.json [--runs 1200] [--series 40] [--seed 0]

Each run: one activity using 3 of 500 tagged datasets, 40 metric-series entities and one
model derived from its datasets; 30% of runs fine-tune an earlier model (chains up to
hundreds deep). About 85 records per run: 1,200 runs give ~100k records.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from prov4torch.provjson import PREFIXES


def generate(runs: int, series: int, seed: int) -> dict:
    rng = random.Random(seed)
    doc: dict = {"prefix": dict(PREFIXES), "entity": {}, "activity": {}, "used": {}, "wasGeneratedBy": {},
                 "wasDerivedFrom": {}}
    n = 0

    def rel(kind: str, body: dict) -> None:
        nonlocal n
        n += 1
        doc[kind][f"_:r{n}"] = body

    juris = ["EU", "US", "UK", "BR", "JP"]
    for d in range(500):
        doc["entity"][f"p4t:dataset/d{d}"] = {
            "prov:type": {"$": "mls:Dataset", "type": "xsd:QName"},
            "p4t:jurisdiction": rng.choice(juris), "p4t:originCountry": "DE",
            "p4t:license": rng.choice(["MIT", "CC-BY-4.0", "CC-BY-NC-4.0"]),
            "p4t:consentScope": ["training", "research"],
        }
    models: list[str] = []
    for r in range(runs):
        act = f"p4t:run/r{r}/rank/0"
        doc["activity"][act] = {"prov:startTime": "2026-01-01T00:00:00+00:00",
                                "prov:type": {"$": "mls:Run", "type": "xsd:QName"},
                                "p4t:purpose": "training", "p4t:computeRegion": rng.choice(["eu-west-1", "us-east-1"])}
        data = rng.sample(range(500), 3)
        for d in data:
            rel("used", {"prov:activity": act, "prov:entity": f"p4t:dataset/d{d}", "prov:role": "training"})
        if models and rng.random() < 0.3:
            base = rng.choice(models[-50:])
            rel("used", {"prov:activity": act, "prov:entity": base, "prov:role": "p4t:baseModel"})
        else:
            base = None
        for s in range(series):
            sid = f"{act}/metric/training/m{s}"
            doc["entity"][sid] = {"prov:type": {"$": "p4t:MetricSeries", "type": "xsd:QName"},
                                  "p4t:count": {"$": "1000", "type": "xsd:int"}}
            rel("wasGeneratedBy", {"prov:entity": sid, "prov:activity": act})
        model = f"p4t:model/m{r}"
        doc["entity"][model] = {"prov:type": {"$": "mls:Model", "type": "xsd:QName"},
                                "p4t:intendedUse": rng.choice(["research", "commercial"])}
        rel("wasGeneratedBy", {"prov:entity": model, "prov:activity": act})
        for d in data:
            rel("wasDerivedFrom", {"prov:generatedEntity": model, "prov:usedEntity": f"p4t:dataset/d{d}"})
        if base:
            rel("wasDerivedFrom", {"prov:generatedEntity": model, "prov:usedEntity": base})
        models.append(model)
    return doc


def count(doc: dict) -> int:
    return sum(len(v) for k, v in doc.items() if k != "prefix")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--runs", type=int, default=1200)
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    doc = generate(args.runs, args.series, args.seed)
    args.out.write_text(json.dumps(doc))
    print(f"{args.out}: {count(doc):,} records, {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
