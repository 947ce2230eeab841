"""log_metric with a CUDA tensor: microseconds per call against the floor (the copy kernel alone), with the
writer draining every 0.2 s; run on a GPU machine (benchmarks/gpu_check.sh).

    python benchmarks/cuda_hot_path.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import prov4torch


def per_call_us(fn, calls: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(calls):
        fn(i)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    x = torch.tensor(1.0, device="cuda")
    with tempfile.TemporaryDirectory() as tmp, prov4torch.start_run(out_dir=tmp, system_metrics=False, energy=False,
                                                                   interval_s=0.2):
        per_call_us(lambda i: prov4torch.log_metric("warm", x, step=i), 2000)
        floor, cuda, num = [], [], []
        for _ in range(5):
            floor.append(per_call_us(lambda i: x.detach().clone(), args.calls))
            cuda.append(per_call_us(lambda i: prov4torch.log_metric("loss", x, step=i), args.calls))
            num.append(per_call_us(lambda i: prov4torch.log_metric("lr", 0.5, step=i), args.calls))
    f, c, n = (statistics.median(v) for v in (floor, cuda, num))
    print(f"floor (detach().clone()) {f:.2f} us; log_metric(CUDA tensor) {c:.2f} us = {c / f:.2f}x the floor; "
          f"log_metric(float) {n:.2f} us")


if __name__ == "__main__":
    main()
