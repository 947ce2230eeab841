"""validate, show, check, lineage, merge and render on large documents: wall time and peak RSS (fresh process each).

    python benchmarks/bench_audit.py DOC.json [DOC2.json ...] [--commands validate,show,check,lineage,merge,render]

Make inputs with gen_lineage_doc.py (a ~100k-record lineage document) and gen_rank_files.py
+ `prov4torch merge` (a merged 512-rank run). Targets (issue 15): on a 500 MB document (gen_lineage_doc.py
--runs 42500), each command <= 60 s and <= 2 GiB peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from prov4torch.audit.stream import Records, items

CHILD = """
import json, resource, sys, time
what, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if what == "show":
    from prov4torch.audit.show import summarize
    s = summarize([path]); info = f"{len(s['runs'])} runs"
elif what == "lineage":
    from prov4torch.audit.load import load_graph
    from prov4torch.audit.query import query, kind_of
    g = load_graph([path])
    models = [n.id for n in g.nodes.values() if kind_of(n) == "model"]
    focal, hits = query(g, models[-1], direction="up")
    info = f"{len(hits)} upstream of the last model"
elif what == "render":
    from prov4torch.audit.render import render
    d = render([path], out)
    info = f"{d.nodes} nodes, {d.edges} edges, {d.engine}"
elif what == "check":
    from prov4torch.governance.evaluate import check
    r = check([path], "default"); info = f"verdict {r.verdict}"
elif what == "merge":
    from prov4torch.audit.merge import merge
    r = merge([path], out[:-4] + ".merged.json"); info = f"{r.records} records, {r.shared} shared"
elif what == "validate":
    from prov4torch.audit.validate import validate_file
    r = validate_file(path); info = f"valid={r.valid}"
print(json.dumps({"s": time.perf_counter() - t, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "info": info}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("docs", nargs="+", type=Path)
    ap.add_argument("--commands", default="validate,show,check,lineage,merge,render")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for doc in args.docs:
            records = sum(len(item.records) for item in items(doc) if isinstance(item, Records))
            print(f"{doc.name}: {doc.stat().st_size / 1e6:.1f} MB, {records:,} records")
            for what in args.commands.split(","):
                out = Path(tmp) / f"{doc.stem}.svg"
                res = subprocess.run([sys.executable, "-c", CHILD, what, str(doc), str(out)], capture_output=True,
                                     text=True, timeout=900)
                if res.returncode != 0:
                    print(f"  {what:9} FAILED: {res.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(res.stdout)
                print(f"  {what:9} {r['s']:7.2f} s  peak RSS {r['rss']:6.0f} MB  ({r['info']})")


if __name__ == "__main__":
    main()
