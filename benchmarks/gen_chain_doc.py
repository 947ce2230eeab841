"""A PROV-JSON document holding one long fine-tune chain, for the audit commands' worst case (issue 24).

    python benchmarks/gen_chain_doc.py 1000000 /tmp/chain.json [--tagged-every K]

Model i wasDerivedFrom model i-1 and wasGeneratedBy run i, which used model i-1 (its base model) and -- every K
runs (default: only the first) -- a tagged dataset of its own. Written as it goes (no document in memory).
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--tagged-every", type=int, default=0, help="a new dataset every K runs (0: only the first)")
    args = ap.parse_args()
    q = {"type": "xsd:QName"}
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write('{"prefix": {"p4t": "https://w3id.org/prov4torch/ns#", "mls": "http://www.w3.org/ns/mls#", '
                 '"ex": "https://example.org/"},\n"entity": {')
        first = True
        for i in range(args.n):
            records = [(f"ex:m{i}", {"prov:type": {"$": "mls:Model", **q}, "p4t:sha256": f"{i:064x}"})]
            if i == 0 or (args.tagged_every and i % args.tagged_every == 0):
                records.append((f"ex:d{i}", {"prov:type": {"$": "mls:Dataset", **q}, "p4t:jurisdiction": "EU",
                                             "p4t:originCountry": "DE", "p4t:license": "CC-BY-4.0",
                                             "p4t:consentScope": ["training", "research"]}))
            for key, rec in records:
                fh.write(("" if first else ",\n") + json.dumps(key) + ": " + json.dumps(rec))
                first = False
        fh.write('},\n"activity": {')
        for i in range(args.n):
            rec = {"prov:type": {"$": "mls:Run", **q}, "p4t:purpose": "research", "p4t:computeRegion": "eu-west-1",
                   "prov:startTime": "2026-01-01T00:00:00+00:00"}
            fh.write(("" if i == 0 else ",\n") + json.dumps(f"ex:r{i}") + ": " + json.dumps(rec))
        sections = {"wasGeneratedBy": [], "used": [], "wasDerivedFrom": []}
        fh.write('},\n')
        for name in sections:
            fh.write(json.dumps(name) + ": {")
            first = True
            for i in range(args.n):
                recs = []
                if name == "wasGeneratedBy":
                    recs.append({"prov:entity": f"ex:m{i}", "prov:activity": f"ex:r{i}"})
                elif name == "used":
                    if i:
                        recs.append({"prov:activity": f"ex:r{i}", "prov:entity": f"ex:m{i - 1}",
                                     "prov:role": {"$": "p4t:baseModel", **q}})
                    if i == 0 or (args.tagged_every and i % args.tagged_every == 0):
                        recs.append({"prov:activity": f"ex:r{i}", "prov:entity": f"ex:d{i}",
                                     "prov:role": {"$": "p4t:training", **q}})
                else:
                    if i:
                        recs.append({"prov:generatedEntity": f"ex:m{i}", "prov:usedEntity": f"ex:m{i - 1}"})
                    if i == 0 or (args.tagged_every and i % args.tagged_every == 0):
                        recs.append({"prov:generatedEntity": f"ex:m{i}", "prov:usedEntity": f"ex:d{i}"})
                for j, rec in enumerate(recs):
                    fh.write(("" if first else ",\n") + json.dumps(f"_:{name}{i}-{j}") + ": " + json.dumps(rec))
                    first = False
            fh.write("}" + (",\n" if name != "wasDerivedFrom" else "\n"))
        fh.write("}\n")


if __name__ == "__main__":
    main()
