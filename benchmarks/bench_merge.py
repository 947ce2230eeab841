"""Merge time and peak memory as the number of ranks grows (each size in a fresh process).

    python benchmarks/bench_merge.py [--sizes 64 128 256 512]

Target (issue 5): linear time, peak memory independent of the number of ranks, 512 ranks
in under 30 s on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import resource, sys, time
from prov4torch.audit.merge import merge
t = time.perf_counter()
r = merge([sys.argv[1]], sys.argv[2])
print(f"{time.perf_counter() - t:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} {r.records}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    args = ap.parse_args()
    base = subprocess.run([sys.executable, "-c", "import resource, prov4torch.audit.merge; "
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"baseline RSS of a process that imported prov4torch.audit.merge: {base} MB")
    print(f"{'ranks':>6} {'input MB':>9} {'seconds':>8} {'s/rank':>7} {'peak RSS MB':>12} {'records':>9} {'out MB':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            d = Path(tmp) / f"r{n}"
            subprocess.run([sys.executable, str(HERE / "gen_rank_files.py"), str(d), "--ranks", str(n)],
                           check=True, capture_output=True)
            size = sum(p.stat().st_size for p in d.iterdir()) / 1e6
            out = Path(tmp) / f"m{n}.json"
            res = subprocess.run([sys.executable, "-c", CHILD, str(d), str(out)], capture_output=True, text=True,
                                 check=True).stdout.split()
            secs, rss, records = float(res[0]), res[1], int(res[2])
            print(f"{n:>6} {size:>9.1f} {secs:>8.2f} {secs / n * 1e3:>6.1f}m {rss:>12} {records:>9,} "
                  f"{out.stat().st_size / 1e6:>7.1f}")


if __name__ == "__main__":
    main()
