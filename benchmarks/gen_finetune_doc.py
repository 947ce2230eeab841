"""A large PROV-JSON document of another shape than ``gen_lineage_doc`` and ``gen_chain_doc`` (issue 28): many
runs in short fine-tune chains, sharing a pool of tagged datasets, each with many metric entities -- a team's
merged store rather than one long chain.

    python benchmarks/gen_finetune_doc.py /tmp/store.json [--runs 46000] [--chain 50] [--datasets 2000]
                                          [--metrics 40]

Run r generates model r and its metric entities; a run that is not the first of its chain used model r-1 as its
base model (and model r wasDerivedFrom it); every run trained on two datasets of the pool and validated on a
third (wasDerivedFrom too for the training ones). Defaults give 466 MB and 4.1 million records. Written as it
goes (no document in memory); the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random

Q = {"type": "xsd:QName"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--runs", type=int, default=46_000)
    ap.add_argument("--chain", type=int, default=50)
    ap.add_argument("--datasets", type=int, default=2_000)
    ap.add_argument("--metrics", type=int, default=40)
    args = ap.parse_args()
    rng = random.Random(28)
    uses = [(rng.randrange(args.datasets), rng.randrange(args.datasets), rng.randrange(args.datasets))
            for _ in range(args.runs)]
    with open(args.out, "w", encoding="utf-8") as fh:
        out = _Out(fh)
        fh.write('{"prefix": {"p4t": "https://w3id.org/prov4torch/ns#", "mls": "http://www.w3.org/ns/mls#", '
                 '"ex": "https://example.org/"},\n')
        out.section("entity")
        for d in range(args.datasets):
            eu = d % 3 == 0
            out.record(f"ex:d{d}", {"prov:type": {"$": "mls:Dataset", **Q}, "p4t:sha256": f"{d:064x}",
                                    "p4t:jurisdiction": "EU" if eu else "US", "p4t:originCountry": "DE" if eu else "US",
                                    "p4t:license": "CC-BY-4.0" if d % 5 else "CC-BY-NC-4.0",
                                    "p4t:consentScope": ["training", "validation", "research"],
                                    "p4t:personalData": bool(d % 7 == 0)})
        for r in range(args.runs):
            out.record(f"ex:m{r}", {"prov:type": {"$": "mls:Model", **Q}, "p4t:sha256": f"{r + 10**9:064x}"})
            for k in range(args.metrics):
                out.record(f"ex:r{r}/metric/{k}", {"prov:type": {"$": "p4t:MetricSeries", **Q}, "p4t:name": f"m{k}",
                                                   "p4t:count": 100, "p4t:last": 0.5 + k / 1000})
        out.section("activity")
        for r in range(args.runs):
            out.record(f"ex:r{r}", {"prov:type": {"$": "mls:Run", **Q}, "p4t:purpose": "research",
                                    "p4t:computeRegion": "eu-west-1", "prov:startTime": "2026-01-01T00:00:00+00:00"})
        out.section("wasGeneratedBy")
        for r in range(args.runs):
            out.record(None, {"prov:entity": f"ex:m{r}", "prov:activity": f"ex:r{r}"})
            for k in range(args.metrics):
                out.record(None, {"prov:entity": f"ex:r{r}/metric/{k}", "prov:activity": f"ex:r{r}"})
        out.section("used")
        for r, (a, b, v) in enumerate(uses):
            if r % args.chain:
                out.record(None, {"prov:activity": f"ex:r{r}", "prov:entity": f"ex:m{r - 1}",
                                  "prov:role": {"$": "p4t:baseModel", **Q}})
            for d, role in ((a, "training"), (b, "training"), (v, "validation")):
                out.record(None, {"prov:activity": f"ex:r{r}", "prov:entity": f"ex:d{d}",
                                  "prov:role": {"$": f"p4t:{role}", **Q}})
        out.section("wasDerivedFrom")
        for r, (a, b, _v) in enumerate(uses):
            if r % args.chain:
                out.record(None, {"prov:generatedEntity": f"ex:m{r}", "prov:usedEntity": f"ex:m{r - 1}"})
            for d in (a, b):
                out.record(None, {"prov:generatedEntity": f"ex:m{r}", "prov:usedEntity": f"ex:d{d}"})
        fh.write("}\n}\n")
    print(f"{out.records:,} records")


class _Out:
    def __init__(self, fh) -> None:
        self.fh, self.first, self.records, self.blank, self.opened = fh, True, 0, 0, False

    def section(self, name: str) -> None:
        self.fh.write(("},\n" if self.opened else "") + json.dumps(name) + ": {")
        self.first, self.opened = True, True

    def record(self, key: str | None, rec: dict) -> None:
        if key is None:
            key = f"_:n{self.blank}"
            self.blank += 1
        self.fh.write(("" if self.first else ",\n") + json.dumps(key) + ": " + json.dumps(rec))
        self.first = False
        self.records += 1


if __name__ == "__main__":
    main()
