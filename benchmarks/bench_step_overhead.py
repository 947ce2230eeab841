"""Per-step overhead of prov4torch measured so that 1% is resolvable on a noisy machine.

    python benchmarks/bench_step_overhead.py [--blocks 200] [--steps 20] [--samplers] [--device cuda]
        [--log metric|float|clone|none] [--threads]

(a) Hot path: one process, one active run (writer and samplers running throughout), and
    many short blocks of training steps alternating between "logs two metrics per step"
    and "logs nothing". The median over block pairs of (instrumented / plain) isolates
    what the calls cost, free of between-run drift.
(b) Background threads: the process's CPU time minus the main thread's (torch runs on the
    main thread here: set_num_threads(1)) over the run — the writer, samplers, codecarbon
    and context capture, including threads that have already exited — as a share of the
    run's wall time: what they can take from training at most. On CUDA torch runs threads of its own
    (autograd's device thread, the intra-op pool): those are measured and subtracted.
--log: what a logging block adds per step (log_metric of the loss tensor, of a float, nothing, or
    only the copy a CUDA metric costs: the floor of a tensor metric in place).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import nn

import prov4torch


def main_thread_cpu_seconds() -> float:
    """CPU seconds of the main thread (utime + stime from /proc, Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{os.getpid()}/task/{threading.main_thread().native_id}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def thread_cpu() -> dict[int, tuple[float, str, bool]]:
    """Thread id -> (CPU seconds, name, is a Python thread) for each live thread of this process: Python's name
    where it has one, else the OS name (torch's autograd and intra-op threads, CUDA's)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    rows = {}
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/stat") as fh:
            head, tail = fh.read().rsplit(")", 1)
        fields = tail.split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        rows[int(task)] = (cpu, names.get(int(task), head.split("(", 1)[1]), int(task) in names)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--samplers", action="store_true", help="system, GPU and energy samplers on (5 s interval)")
    ap.add_argument("--metrics", type=int, choices=(1, 2), default=1,
                    help="metrics logged per step: 1 (the loss tensor, as in the issue) or 2 (loss and lr)")
    ap.add_argument("--log", default="metric",
                    choices=("metric", "detached", "float", "floor", "clone", "item", "none"),
                    help="what a logging block does per step: log_metric of the loss tensor (default; 'detached': of "
                         "loss.detach()), log_metric of "
                         "a Python float, only the tensor copy a CUDA metric costs (its floor), or only "
                         "loss.item() (what reading the loss costs the script itself, without prov4torch), or "
                         "'floor': a function appending a (name, value, step, time_ns()) tuple (issue 15's floor)")
    ap.add_argument("--threads", action="store_true", help="print each thread's CPU seconds before end_run")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each block ends with a synchronize on cuda)")
    ap.add_argument("--model", choices=("mlp", "mnist"), default="mlp",
                    help="mlp: a 1 ms-class CPU step (784-256-10, batch 64); mnist: the MNIST example's own Net "
                         "(examples/mnist/train.py), at its default batch size")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.model == "mnist":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "mnist"))
        from train import Net  # the example's model, unchanged

        model: nn.Module = Net().to(dev)
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(16, 64, 1, 28, 28).to(dev), torch.randint(0, 10, (16, 64)).to(dev)
    step = 0
    sink: list[tuple[str, float, int, int]] = []

    def record(name: str, value: float, at: int) -> None:
        sink.append((name, value, at, time.time_ns()))
        if len(sink) > 100_000:
            sink.clear()

    def block(log: bool) -> float:
        nonlocal step
        t0 = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad()
            loss = loss_fn(model(x[step % 16]), y[step % 16])
            loss.backward()
            opt.step()
            if log and args.log == "none":
                pass
            elif log and args.log == "clone":
                loss.detach().clone()
            elif log and args.log == "item":
                loss.item()
            elif log and args.log == "floor":
                record("loss", 0.5, step)
            elif log and args.log == "detached":
                prov4torch.log_metric("loss", loss.detach(), step=step)
            elif log and args.log == "float":
                prov4torch.log_metric("loss", 0.5, step=step)
            elif log:
                prov4torch.log_metric("loss", loss, step=step)
                if args.metrics == 2:
                    prov4torch.log_metric("lr", 0.01, step=step)
            step += 1
        sync()
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        cpu0, main0, threads0 = process_cpu_seconds(), main_thread_cpu_seconds(), thread_cpu()
        run = prov4torch.start_run(out_dir=tmp, system_metrics=args.samplers, energy=args.samplers)
        t_start = time.perf_counter()
        for _ in range(10):
            block(True), block(False)  # warm-up
        ratios, on, off = [], [], []
        for i in range(args.blocks):
            pair = (block(True), block(False)) if i % 2 == 0 else tuple(reversed((block(False), block(True))))
            on.append(pair[0])
            off.append(pair[1])
            ratios.append(pair[0] / pair[1])
        before_end = thread_cpu()
        run.end_run()
        wall = time.perf_counter() - t_start
        background = (process_cpu_seconds() - cpu0) - (main_thread_cpu_seconds() - main0)
        # torch's own threads (autograd's device thread, the intra-op pool: not Python threads) run with or
        # without prov4torch; the Python threads besides the main one are prov4torch's (writer, samplers,
        # codecarbon's scheduler). Threads that ended before end_run are in `background` only.
        used = {tid: (cpu - threads0.get(tid, (0.0,))[0], name, is_py)
                for tid, (cpu, name, is_py) in before_end.items()}
        others = sum(cpu for cpu, _, is_py in used.values() if not is_py)
    step_ms = statistics.median(off) / args.steps * 1e3
    diffs_us = sorted((a - b) / args.steps * 1e6 for a, b in zip(on, off, strict=True))
    q1, med, q3 = statistics.quantiles(diffs_us, n=4)
    print(f"{dev.type}; log {args.log}; samplers {'on' if args.samplers else 'off'}; "
          f"{args.metrics} metric(s) per step; {args.blocks} block pairs of {args.steps} steps; "
          f"plain step {step_ms:.3f} ms")
    print(f"(a) hot path: extra time per step, median over pairs {med:+.1f} us (quartiles {q1:+.1f}..{q3:+.1f} us) "
          f"= {100 * med / (step_ms * 1e3):+.2f}% of a step; median pair ratio {statistics.median(ratios):.4f}")
    print(f"(b) background threads: {background:.3f} CPU s over {wall:.1f} s wall = "
          f"{100 * background / wall:.2f}% of one core (start_run to end_run); torch's own threads took "
          f"{others:.3f} s of it, so prov4torch's threads {100 * max(background - others, 0) / wall:.2f}%")
    if args.threads:
        print("threads:", ", ".join(f"{name} {cpu:.2f}s" for cpu, name, _ in sorted(used.values(), reverse=True)
                                    if cpu >= 0.02))

if __name__ == "__main__":
    main()
