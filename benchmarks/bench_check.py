"""prov4torch check on a large document: wall time and peak RSS.

    python benchmarks/gen_lineage_doc.py /tmp/big.json
    python benchmarks/bench_check.py /tmp/big.json [--policy default]
    python benchmarks/gen_chain_doc.py 500000 /tmp/chain.json && python benchmarks/bench_check.py /tmp/chain.json
"""

from __future__ import annotations

import argparse
import resource
import time

from prov4torch.governance.evaluate import check


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--policy", default="default")
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = check(args.files, args.policy)
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"check: {elapsed:.2f} s, peak RSS {rss:.0f} MB, verdict {report.verdict}, "
          f"{len(report.violations)} violations")


if __name__ == "__main__":
    main()
