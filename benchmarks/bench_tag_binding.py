"""Binding a tags file's path rules to content (issue 23): load time of a tags file whose rule names a folder of
N files (each hashed once, so a copy of a file elsewhere carries its tags), and the lookup cost per dataset after.

    python benchmarks/bench_tag_binding.py [--files 10000] [--size 4096]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    import prov4torch
    from prov4torch.governance import declared

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        for i in range(args.files):
            (data / f"{i:06d}.bin").write_bytes(os.urandom(args.size))
        (root / "tags.toml").write_text('[[dataset]]\npath = "data"\norigin_country = "FR"\njurisdiction = "EU"\n'
                                        'license = "CC-BY-4.0"\nconsent_scope = ["training"]\n')
        t = time.perf_counter()
        prov4torch.load_tags(root / "tags.toml")
        load_s = time.perf_counter() - t
        (rule,) = declared.DECLARED.rules
        copy = root / "elsewhere.bin"
        copy.write_bytes((data / "000123.bin").read_bytes())
        digest = next(iter(rule.content)) if rule.content else ""
        t = time.perf_counter()
        n = 10_000
        for _ in range(n):
            declared.DECLARED.for_dataset(paths=[str(copy)], name=None, ids=[], digests=[digest])
        lookup_us = (time.perf_counter() - t) / n * 1e6
        mb = args.files * args.size / 1e6
        print(f"{args.files:,} files ({mb:.0f} MB): bound {len(rule.content):,} digests in {load_s:.2f} s "
              f"({mb / load_s:.0f} MB/s); a dataset's rule lookup {lookup_us:.1f} us")


if __name__ == "__main__":
    main()
