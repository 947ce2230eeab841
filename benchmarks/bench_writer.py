"""The metric writer at full logging speed: memory bound, end_run after a burst, loss on kill -9.

    python benchmarks/bench_writer.py [--seconds 10] [--burst 1000000]

1. **Memory**: a child logs two series as fast as it can for --seconds; its RSS growth (target <= 150 MiB),
   points logged, written and dropped, and how often the hot path waited for the writer.
2. **Burst**: the same child logs --burst points, then ends the run: end_run's time against the burst's
   (target: end_run no longer than logging the burst).
3. **kill -9**: a child logs at full speed and reports (time, step) every 50 ms; it is killed with SIGKILL
   after 3 s and recovered; the last point on disk against the point logged 1 s before the kill (target: no
   point logged more than 1 s before the kill is lost).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time, psutil, prov4torch
mode, seconds, burst, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
proc = psutil.Process()
run = prov4torch.start_run(out_dir=out, system_metrics=False, energy=False)
log = run.log_metric
rss0 = proc.memory_info().rss
if mode == "memory":
    peak, n, t0 = rss0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            log("loss", 0.5, step=n); log("acc", 0.25, step=n); n += 1
        peak = max(peak, proc.memory_info().rss)
    w = run._writer
    run.end_run()
    print(json.dumps({"steps": n, "points": 2 * n, "written": w.points, "dropped": w.dropped, "waits": w.waits,
                      "rss_growth_mib": (peak - rss0) / 2**20, "rate": 2 * n / seconds}))
elif mode == "burst":
    t0 = time.perf_counter()
    for n in range(burst // 2):
        log("loss", 0.5, step=n); log("acc", 0.25, step=n)
    t1 = time.perf_counter()
    w = run._writer
    run.end_run()
    t2 = time.perf_counter()
    print(json.dumps({"burst_s": t1 - t0, "end_run_s": t2 - t1, "dropped": w.dropped}))
else:
    n, last = 0, time.perf_counter()
    print(json.dumps({"dir": str(run.dir)}), flush=True)
    while True:
        for _ in range(500):
            log("loss", 0.5, step=n); n += 1
        now = time.perf_counter()
        if now - last > 0.05:
            print(json.dumps({"t": time.time(), "step": n - 1}), flush=True)
            last = now
"""


def child(mode: str, seconds: float, burst: int, out: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, str(seconds), str(burst), out],
                            stdout=subprocess.PIPE, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--burst", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        p = child("memory", args.seconds, 0, out)
        m = json.loads(p.communicate()[0].strip().splitlines()[-1])
        print(f"memory: {m['rate'] / 1e3:.0f}k points/s for {args.seconds:g} s, RSS +{m['rss_growth_mib']:.0f} MiB "
              f"(target <= 150), written {m['written']}, dropped {m['dropped']}, hot path waited {m['waits']}x")
        p = child("burst", 0, args.burst, out)
        b = json.loads(p.communicate()[0].strip().splitlines()[-1])
        print(f"burst: {args.burst} points logged in {b['burst_s']:.2f} s, end_run {b['end_run_s']:.2f} s "
              f"(ratio {b['end_run_s'] / b['burst_s']:.2f}, target <= 1), dropped {b['dropped']}")
        p = child("kill", 0, 0, out)
        assert p.stdout is not None
        run_dir = Path(json.loads(p.stdout.readline())["dir"])
        marks: list[tuple[float, int]] = []
        t_end = time.time() + 3.0
        while time.time() < t_end:
            line = p.stdout.readline()
            if line:
                mark = json.loads(line)
                marks.append((mark["t"], mark["step"]))
        killed_at = time.time()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "recover", str(run_dir)], capture_output=True)
        with open(run_dir / "rank-0.metrics.csv", encoding="utf-8") as fh:
            last_on_disk = max((int(r["step"]) for r in csv.DictReader(fh)), default=-1)
        before = max((s for t, s in marks if t <= killed_at - 1.0), default=-1)
        print(f"kill -9: last step on disk {last_on_disk}, step logged 1 s before the kill {before}: "
              f"{'none lost' if last_on_disk >= before else f'{before - last_on_disk} steps lost'}")


if __name__ == "__main__":
    main()
