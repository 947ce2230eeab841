"""Wall-time overhead of prov4torch on an MNIST-sized MLP training loop on the CPU.

    python benchmarks/bench_training_overhead.py [--rounds 6] [--steps 300] [--samplers]

Each round runs the same loop twice, plain and instrumented, in alternating order
(interleaved, so drift hits both); the instrumented loop logs two metrics per step.
The run is started before and ended after the timed steps, so the ratio is the
steady-state step-time overhead (target <= 1.01); start_run and end_run are timed
separately (a fixed cost per run, not per step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn

import prov4torch


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, opt


FIXED: dict[str, list[float]] = {"start_run": [], "end_run": []}


def loop(steps: int, data, instrumented: bool, out: str, samplers: bool) -> float:
    model, opt = make()
    loss_fn = nn.CrossEntropyLoss()
    x, y = data
    run = None
    if instrumented:
        t = time.perf_counter()
        run = prov4torch.start_run(out_dir=out, **({"system_metrics": True, "energy": True} if samplers else {}))
        FIXED["start_run"].append(time.perf_counter() - t)
    t0 = time.perf_counter()
    for step in range(steps):
        xb, yb = x[step % 16], y[step % 16]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        if instrumented:
            prov4torch.log_metric("loss", loss.detach(), step=step)
            prov4torch.log_metric("lr", 0.01, step=step)
    elapsed = time.perf_counter() - t0
    if run is not None:
        t = time.perf_counter()
        run.end_run()
        FIXED["end_run"].append(time.perf_counter() - t)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--samplers", action="store_true", help="also run the system/GPU/energy samplers")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = (torch.randn(16, 64, 1, 28, 28), torch.randint(0, 10, (16, 64)))
    ratios, plain_t, inst_t = [], [], []
    with tempfile.TemporaryDirectory() as out:
        loop(50, data, False, out, args.samplers)  # warm-up
        loop(50, data, True, out, args.samplers)
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            times = {inst: loop(args.steps, data, inst, out, args.samplers) for inst in order}
            plain_t.append(times[False])
            inst_t.append(times[True])
            ratios.append(times[True] / times[False])
    print(f"steps/round {args.steps}, rounds {args.rounds}, samplers {'on' if args.samplers else 'off'}")
    per_step = statistics.median(plain_t) / args.steps * 1e3
    print(f"plain        median {statistics.median(plain_t):.3f} s  ({per_step:.2f} ms/step)")
    print(f"instrumented median {statistics.median(inst_t):.3f} s")
    print(f"ratio        median {statistics.median(ratios):.4f}  (min {min(ratios):.4f}, max {max(ratios):.4f})")
    for name, ts in FIXED.items():
        print(f"{name:12} median {statistics.median(ts) * 1e3:.1f} ms (fixed, once per run)")


if __name__ == "__main__":
    main()
