"""Energy for free (issue 28): the wall time of pytorch/examples' word_language_model, plain and under
``prov4torch run`` with energy on (the default) and off, interleaved rounds in one invocation.

    python benchmarks/bench_energy.py --example PATH/TO/word_language_model [--rounds 3] [--words 120000]

PATH is the example's directory from a checkout of pytorch/examples (not vendored here); the corpus is generated
(``--words`` words of a 2,000-word vocabulary split 80/10/10), so nothing is downloaded. A second part times an
empty script the same way: energy's fixed cost for a run of any length.
Targets: energy on <= 1.03x the plain run; energy on minus energy off <= +0.3 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def corpus(root: Path, words: int) -> Path:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    data = root / "corpus"
    data.mkdir()
    for name, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        n = int(words * share)
        lines = (" ".join(rng.choices(vocab, k=12)) for _ in range(n // 12))
        (data / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return data


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--example", type=Path, required=True, help="pytorch/examples' word_language_model directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--words", type=int, default=120_000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    example = args.example.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = corpus(root, args.words)
        script = [str(example / "main.py"), "--data", str(data), "--epochs", str(args.epochs), "--emsize", "64",
                  "--nhid", "64", "--bptt", "20", "--save", str(root / "model.pt"), "--log-interval", "100000"]
        (root / "empty.py").write_text("pass\n")
        env = {**os.environ, "PROV4TORCH_DIR": str(root / "runs")}
        off = {**env, "PROV4TORCH_ENERGY": "0"}
        cli = [sys.executable, "-m", "prov4torch_cli.app", "run"]
        variants = {
            "plain": ([sys.executable, *script], env),
            "prov4torch run, energy on": ([*cli, *script], env),
            "prov4torch run, energy off": ([*cli, *script], off),
        }
        empty = {
            "empty, energy on": ([*cli, str(root / "empty.py")], env),
            "empty, energy off": ([*cli, str(root / "empty.py")], off),
        }
        times: dict[str, list[float]] = {k: [] for k in [*variants, *empty]}
        for cmd, e in (variants["plain"], variants["prov4torch run, energy on"]):  # warm the caches, untimed
            timed(cmd, example, e)
        for _ in range(args.rounds):
            for name, (cmd, e) in {**variants, **empty}.items():
                times[name].append(timed(cmd, example, e))
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, ts in times.items():
        print(f"{name:30} {' '.join(f'{t:6.2f}' for t in ts)}  median {med[name]:6.2f} s")
    print(f"energy on / plain: {med['prov4torch run, energy on'] / med['plain']:.3f}x (target <= 1.03x); "
          f"energy off / plain: {med['prov4torch run, energy off'] / med['plain']:.3f}x")
    cost = med["prov4torch run, energy on"] - med["prov4torch run, energy off"]
    print(f"energy's cost on the example: {cost:+.2f} s; "
          f"on an empty script: {med['empty, energy on'] - med['empty, energy off']:+.2f} s (target <= +0.3 s)")


if __name__ == "__main__":
    main()
