"""Cost of one reading per sampler, in microseconds (the work a sampler thread does per interval).

    python benchmarks/bench_samplers.py [--n 200]

The GPU reader runs against the real NVML when a GPU is present, else it is skipped.
codecarbon measures on its own scheduler: its start/stop costs are reported instead.
"""

from __future__ import annotations

import argparse
import statistics
import time

from prov4torch.samplers.energy import EnergyTracker
from prov4torch.samplers.gpu import GpuReader
from prov4torch.samplers.system import SystemReader


def per_call_us(fn, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    sysr = SystemReader()
    med, worst = per_call_us(sysr, args.n)
    print(f"system (psutil) reading: median {med:.0f} us, max {worst:.0f} us, {len(sysr())} values")
    gpu = GpuReader()
    try:
        gpu.setup()
    except Exception as exc:  # noqa: BLE001
        print(f"gpu (NVML) reading: skipped ({exc})")
    else:
        med, worst = per_call_us(gpu, args.n)
        print(f"gpu (NVML) reading: median {med:.0f} us, max {worst:.0f} us, {len(gpu())} values, "
              f"{len(gpu.devices)} device(s)")
        gpu.close()
    tracker = EnergyTracker(interval_s=5)
    t0 = time.perf_counter()
    tracker._start()
    t_start = time.perf_counter() - t0
    time.sleep(2)
    t0 = time.perf_counter()
    attrs = tracker.stop()
    t_stop = time.perf_counter() - t0
    print(f"codecarbon offline: start {t_start:.2f} s (on its own thread), stop {t_stop:.2f} s, "
          f"method {attrs.get('p4t:energyMethod')}, fallback {attrs.get('p4t:energyFallbackReason')}")


if __name__ == "__main__":
    main()
