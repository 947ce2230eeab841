"""Content identity costs (issue 11): dataset hashing throughput, the cached second run, and the
weights digest of a checkpoint against its file's SHA-256.

    python benchmarks/bench_identity.py [--mb 100]

All on one core, in one process; figures are MB/s and seconds measured in this invocation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from prov4torch.record.checkpoints import checkpoint_digest
from prov4torch.record.identity import DigestCache, dataset_digest, digest_path, weights_digest
from prov4torch.safefs import file_sha256


class Arrays(Dataset):
    def __init__(self, data: np.ndarray, targets: list[int]) -> None:
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.data[i], self.targets[i]


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.mb << 20
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        # in-memory data: uint8 images + int labels (like MNIST/CIFAR held in attributes)
        images = rng.integers(0, 255, size=(n // 3072, 3, 32, 32), dtype=np.uint8)
        ds = Arrays(images, rng.integers(0, 10, size=len(images)).tolist())
        t = timed(lambda: dataset_digest(ds))
        print(f"in-memory dataset ({images.nbytes / 1e6:.0f} MB arrays + {len(ds)} labels): {t:.2f} s, "
              f"{images.nbytes / 1e6 / t:.0f} MB/s")
        # file-backed data: a directory of files, first run and cached second run
        root = tmpd / "files"
        root.mkdir()
        per = n // 100
        for i in range(100):
            (root / f"part-{i:03d}.bin").write_bytes(rng.bytes(per))
        cache = DigestCache(tmpd / "store" / ".cache" / "digests.sqlite", tmpd / "store")
        t0 = time.perf_counter()
        digest_path(root, cache)
        first = time.perf_counter() - t0
        second = timed(lambda: digest_path(root, cache))
        print(f"directory of 100 files ({n / 1e6:.0f} MB): first run {first:.2f} s ({n / 1e6 / first:.0f} MB/s), "
              f"cached second run {second * 1000:.1f} ms ({first / second:.0f}x faster)")
        # a checkpoint: weights digest vs the file's SHA-256
        model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(max(1, n // (4 * 1024 * 1025)))])
        ckpt = tmpd / "model.pt"
        torch.save(model.state_dict(), ckpt)
        size = ckpt.stat().st_size / 1e6
        t_file = timed(lambda: file_sha256(ckpt))
        t_mem = timed(lambda: weights_digest(model))
        t_load = timed(lambda: checkpoint_digest(ckpt))
        print(f"checkpoint {size:.0f} MB: file sha256 {t_file:.2f} s; weights digest from memory {t_mem:.2f} s "
              f"({t_mem / t_file:.2f}x); file sha256 + weights digest from the file (mmap load) {t_load:.2f} s "
              f"({t_load / t_file:.2f}x)")


if __name__ == "__main__":
    main()
