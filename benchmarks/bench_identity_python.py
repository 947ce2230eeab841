"""Content identity of data held in plain Python (issue 25): MB/s for a 100 MB ``str`` (the char-level corpus
pattern) and for 1M small objects, and what the budget does past its limit.

    python benchmarks/bench_identity_python.py [--mb 100] [--objects 1000000]
"""

from __future__ import annotations

import argparse
import time

from prov4torch.record import identity


class Text:
    def __init__(self, text: str) -> None:
        self.data = text


class Obj:
    def __init__(self, i: int) -> None:
        self.i = i
        self.label = i % 10


class Objects:
    def __init__(self, n: int) -> None:
        self.items = [Obj(i) for i in range(n)]


def timed(obj: object) -> tuple[float, object]:
    t = time.perf_counter()
    try:
        d: object = identity.dataset_digest(obj)
    except identity.OverBudget as exc:
        d = f"over budget: {exc}"
    return time.perf_counter() - t, d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--objects", type=int, default=1_000_000)
    args = ap.parse_args()
    text = Text("abcdefghij" * (args.mb * 100_000))
    s, d = timed(text)
    print(f"{args.mb} MB str: {s:.2f} s, {args.mb / s:.0f} MB/s ({type(d).__name__})")
    objects = Objects(args.objects)
    s, d = timed(objects)
    print(f"{args.objects:,} objects: {s:.2f} s, {args.objects / s / 1e6:.2f} M objects/s ({type(d).__name__})")
    identity.MAX_OBJECTS = args.objects // 2
    s, d = timed(objects)
    print(f"past the object budget ({identity.MAX_OBJECTS:,}): {s * 1000:.1f} ms, {d}")


if __name__ == "__main__":
    main()
