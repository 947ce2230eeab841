"""The MNIST example with and without `prov4torch run` (all samplers on): wall-time ratio, interleaved.

    python benchmarks/bench_mnist_example.py [--rounds 5] [--epochs 3]

Each round runs `python train.py` and `prov4torch run train.py` (alternating which goes
first) as whole processes and times them end to end, so interpreter and torch start-up,
codecarbon's start and the final merge are all counted. Target (issue 7): ratio <= 1.01.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "mnist" / "train.py"


def timed(cmd: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "PROV4TORCH_SYSTEM_METRICS": "1", "PROV4TORCH_ENERGY": "1"}
    script_args = [str(TRAIN), "--epochs", str(args.epochs), "--out", "ckpt"]
    plain_cmd = [sys.executable, *script_args]
    prov_cmd = [sys.executable, "-m", "prov4torch_cli.app", "run", "--out", "runs", *script_args]
    plain, prov, ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        timed(plain_cmd, tmp, env)  # warm the file cache
        for r in range(args.rounds):
            order = [("plain", plain_cmd), ("prov", prov_cmd)]
            if r % 2:
                order.reverse()
            t = {name: timed(cmd, tmp, env) for name, cmd in order}
            plain.append(t["plain"])
            prov.append(t["prov"])
            ratios.append(t["prov"] / t["plain"])
            print(f"round {r}: plain {t['plain']:.2f} s, prov4torch run {t['prov']:.2f} s, ratio {ratios[-1]:.3f}")
    print(f"median: plain {statistics.median(plain):.2f} s, prov4torch run {statistics.median(prov):.2f} s, "
          f"ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
