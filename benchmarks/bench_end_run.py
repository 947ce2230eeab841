"""end_run cost after N logged points (default 1,000,000), and the sizes of the files written.

    python benchmarks/bench_end_run.py [--points 1000000] [--series 10]

Target (issue 2): end_run <= 1 s after 1M points. Two modes:
  --rate 0      a burst: points logged back to back, so the writer has had no time to
                drain them and end_run must format most of them (the worst case);
  --rate N      N points per second (e.g. 200000): the writer drains as training goes,
                as in a real run, and end_run only writes the last second's points.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import prov4torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--series", type=int, default=10)
    ap.add_argument("--rate", type=float, default=0.0, help="points per second (0: as fast as possible)")
    args = ap.parse_args()
    names = [f"metric_{i}" for i in range(args.series)]
    per = args.points // args.series
    with tempfile.TemporaryDirectory() as tmp:
        run = prov4torch.start_run(out_dir=tmp)
        log = run.log_metric
        t0 = time.perf_counter()
        for step in range(per):
            for name in names:
                log(name, step * 0.001, step)
            if args.rate and step % 100 == 0:
                ahead = (step * len(names)) / args.rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        t_log = time.perf_counter() - t0
        backlog = run._writer.backlog()
        t1 = time.perf_counter()
        run.end_run()
        t_end = time.perf_counter() - t1
        print(f"logged {per * len(names):,} points in {t_log:.2f} s ({t_log / (per * len(names)) * 1e9:.0f} ns/point)")
        print(f"backlog at end_run: {backlog:,} points")
        print(f"end_run: {t_end:.3f} s")
        for p in sorted(Path(run.dir).iterdir()):
            if p.is_file():
                print(f"  {p.name:24} {p.stat().st_size / 1e6:8.2f} MB")


if __name__ == "__main__":
    main()
