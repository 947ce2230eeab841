"""Generate N realistic rank files of one job with prov4torch's own document builder.

    python benchmarks/gen_rank_files.py OUT_DIR --ranks 512 [--series 40] [--datasets 4]

Each rank: the full start record (code, environment, 60 packages), 12 parameters,
`--series` metric series, `--datasets` shared datasets with governance tags, two
checkpoints (rank 0 only), a policy decision. Same shape as a real rank-K.prov.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prov4torch import provjson
from prov4torch.events import decode
from prov4torch.record.document import build
from prov4torch.record.journal import SeriesStats
from prov4torch.record.replay import RunRecord, Sidecar


def rank_doc(run_id: str, rank: int, world: int, series: int, datasets: int) -> dict:
    t0 = 1_763_000_000.0
    events = [{
        "t": "start", "time": t0, "run_id": run_id, "run_name": "bench", "experiment": "bench", "rank": rank,
        "world_size": world, "local_rank": rank % 8, "host": f"node{rank // 8:03d}", "pid": 1000 + rank,
        "user": "alice", "command_line": "python train.py --lr 0.1", "region": "eu-west-1", "purpose": "training",
        "prov4torch": "0.1.0",
        "code": {"script": "/work/train.py", "script_sha256": "ab" * 32, "git_commit": "cd" * 20,
                 "git_branch": "main", "git_dirty": False},
        "environment": {"python": "3.11.7", "torch": "2.13.0", "cuda": "12.8", "hostname": f"node{rank // 8:03d}",
                        "cpu_model": "AMD EPYC", "cpu_count": 128, "gpu_count": 8, "gpu_models": ["NVIDIA H100"]},
        "packages": {"path": f"rank-{rank}.packages.txt", "sha256": "ef" * 32, "count": 60},
    }]
    events += [{"t": "param", "key": f"p{i}", "value": provjson.value(0.1 * i)} for i in range(12)]
    for d in range(datasets):
        events.append({"t": "dataset", "id": f"p4t:dataset/sha256-{d:064x}", "name": f"shard-{d}",
                       "roles": ["training"], "sha256": f"{d:064x}", "size": 10**9, "digest_method": "sha256-file",
                       "tags": provjson.attributes({"p4t:jurisdiction": "EU", "p4t:originCountry": "DE",
                                                    "p4t:license": "CC-BY-4.0", "p4t:consentScope": ["training"]}),
                       "time": t0 + 1})
        events.append({"t": "usage", "id": f"p4t:dataset/sha256-{d:064x}",
                       "usage": {"training": {"samples": 50000, "batches": 782, "epochs": 1}}})
    if rank == 0:
        for v in (1, 2):
            events.append({"t": "model", "id": f"p4t:model/sha256-{v:064x}", "name": "net", "version": v,
                           "path": f"/ckpt/net-{v}.pt", "sha256": f"{v:064x}", "size": 10**8, "time": t0 + 100 * v,
                           "derived_from": [f"p4t:dataset/sha256-{d:064x}" for d in range(datasets)],
                           "revision_of": f"p4t:model/sha256-{v - 1:064x}" if v > 1 else None})
    events.append({"t": "end", "time": t0 + 3600, "status": "FINISHED", "exit_code": 0})
    stats = []
    for s in range(series):
        st = SeriesStats(f"metric_{s}", "training" if s < series - 10 else "system")
        st.add_many(list(range(1000)), [t0, t0 + 3600], [0.5 + 0.001 * i for i in range(1000)])
        stats.append(st)
    sidecars = {"metrics": Sidecar(f"rank-{rank}.metrics.csv", "12" * 32, {"points": 1000 * series})}
    return build(RunRecord.replay(decode(e) for e in events), stats, sidecars)


def write_rank_files(out: Path, ranks: int, run_id: str = "bench-job", series: int = 40, datasets: int = 4) -> int:
    """Write ``ranks`` rank files of one job into ``out``; the bytes written."""
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for r in range(ranks):
        text = provjson.dumps(rank_doc(run_id, r, ranks, series, datasets))
        (out / f"rank-{r}.prov.json").write_text(text)
        total += len(text)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--ranks", type=int, default=512)
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--datasets", type=int, default=4)
    args = ap.parse_args()
    t = time.perf_counter()
    total = write_rank_files(args.out, args.ranks, series=args.series, datasets=args.datasets)
    print(f"{args.ranks} rank files, {total / 1e6:.1f} MB, {total / args.ranks / 1e3:.0f} KB each, "
          f"in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
