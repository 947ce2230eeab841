"""Signing and verifying a run with a large checkpoint (issue 22): what signing adds beyond the digests the recorder
already computed, and what `verify` costs (it re-hashes every subject on disk).

    python benchmarks/bench_signing.py [--mb 300] [--rounds 5]

Makes a key in a temporary config dir, records one run that logs a checkpoint of --mb MB, then times (median of
--rounds) the run's own signing step (statement from the record + ed25519 + append) and `attest.verify` of the
run directory, and, for scale, one sha256 pass over the checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        os.environ.setdefault("PROV4TORCH_SYSTEM_METRICS", "0")
        os.environ.setdefault("PROV4TORCH_ENERGY", "0")
        import prov4torch
        from prov4torch.evidence import attest, keys
        from prov4torch.record.attestation import sign_rank

        keys.init_key()
        ckpt = Path(tmp) / "big.bin"
        with open(ckpt, "wb") as fh:
            for _ in range(args.mb):
                fh.write(os.urandom(1 << 20))
        with prov4torch.start_run(out_dir=Path(tmp) / "runs") as run:
            prov4torch.log_model(ckpt, name="big")
        signer, record = run.signer(), run.replay()
        sign_s, verify_s, hash_s = [], [], []
        trusted = keys.trusted_keys()
        for _ in range(args.rounds):
            t = time.perf_counter()
            sign_rank(record, run.dir, [run.prov_path], signer)
            sign_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            findings = attest.verify([run.dir], trusted)
            verify_s.append(time.perf_counter() - t)
            assert all(f.ok for f in findings), findings
            t = time.perf_counter()
            h = hashlib.sha256()
            with open(ckpt, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            hash_s.append(time.perf_counter() - t)
        print(f"checkpoint {args.mb} MB: sign {statistics.median(sign_s) * 1000:.1f} ms (target <= 50 ms beyond the "
              f"digests); verify {statistics.median(verify_s):.3f} s (re-hashing included; one sha256 pass alone "
              f"{statistics.median(hash_s):.3f} s; target <= 0.5 s)")


if __name__ == "__main__":
    main()
