"""A job on several nodes writing to one shared output root (issue 29, item 4): two real ``torchrun`` agents
with a localhost rendezvous (``--nnodes 2``), one rank each, the second finishing later; ``merge --wait`` started
before it finishes waits for every rank of the job (the world size from the ranks' journals) and merges both;
with a rank that never comes it says which, after the timeout, and merges what there is."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "prov4torch_cli.app"]
SCRIPT = """
import sys, time
import torch, torch.distributed as dist
import prov4torch
dist.init_process_group("gloo")
rank = dist.get_rank()
with prov4torch.start_run(out_dir=sys.argv[1]) as run:
    x = torch.ones(2) * (rank + 1)
    dist.all_reduce(x)
    prov4torch.log_metric("sum", float(x[0]), step=0)
    if rank == 1:
        time.sleep(float(sys.argv[2]))  # the second node finishes last
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_merge_waits_for_every_node_of_a_two_node_job(tmp_path: Path):
    (tmp_path / "s.py").write_text(SCRIPT)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n),
                               "--master-addr", "127.0.0.1", "--master-port", port, "s.py", "shared", "4"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "shared").glob("*/*/rank-0.prov.json")) and time.monotonic() < deadline:
            time.sleep(0.2)  # node 0 is done; node 1 is still sleeping
        (run_dir,) = (tmp_path / "shared").glob("*/*")
        assert not (run_dir / "rank-1.prov.json").exists()
        merged = subprocess.run([*CLI, "merge", str(run_dir), "-o", "merged.prov.json", "--wait", "120"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert merged.returncode == 0 and "merged 2 file(s)" in merged.stdout, (merged.stdout, merged.stderr)
        assert "missing" not in merged.stderr and "not finished" not in merged.stderr, merged.stderr
    finally:
        outs = [n.communicate(timeout=120)[0] for n in nodes]
    assert all(n.returncode == 0 for n in nodes), outs
    doc = json.loads((tmp_path / "merged.prov.json").read_text())
    ranks = {e.get("p4t:rank", {}).get("$") if isinstance(e.get("p4t:rank"), dict) else e.get("p4t:rank")
             for b in doc["bundle"].values() for e in b.get("activity", {}).values() if "p4t:rank" in e}
    assert {str(r) for r in ranks} == {"0", "1"}, ranks

    # a third rank the job never had: said after the timeout, by rank number, and the merge still made
    late = subprocess.run([*CLI, "merge", str(run_dir), "-o", "again.prov.json", "--wait", "1", "--world-size",
                           "3"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert late.returncode == 0 and "rank(s) [2] have not finished after 1 s" in late.stderr, late.stderr
    assert "merged 2 file(s)" in late.stdout


BUCKET_SCRIPT = """
import sys, time
import torch, torch.distributed as dist
import prov4torch
dist.init_process_group("gloo")
rank = dist.get_rank()
with prov4torch.start_run(out_dir=sys.argv[1], region="eu-west-1", purpose="training", policy="default") as run:
    data = torch.arange(8.0).reshape(4, 2) + rank
    prov4torch.log_dataset(data, name=f"shard-{rank}", origin_country="FR", jurisdiction="EU", license="CC-BY-4.0",
                           consent_scope=["training"])
    model = torch.nn.Linear(2, 1)
    model(data).sum().backward()
    prov4torch.log_model(model, name=f"model-{rank}")
    if rank == 1:
        time.sleep(float(sys.argv[2]))
dist.destroy_process_group()
"""


def test_a_two_node_job_on_one_bucket_is_merged_checked_and_traced_from_it(tmp_path: Path, s3_bucket: str,
                                                                            postgres_url: str):
    """Each node spools locally and publishes its rank's files to one bucket; the lineage cards go to a shared
    PostgreSQL index; `merge --wait` from the bucket waits for the late node; `check` and `lineage` read the
    bucket; `index upstream` answers from PostgreSQL."""
    (tmp_path / "s.py").write_text(BUCKET_SCRIPT)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    port = str(free_port())
    url = f"{s3_bucket}/jobs"
    nodes = []
    for n in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PROV4TORCH_SPOOL": str(tmp_path / f"spool-node{n}"),
               "PROV4TORCH_INDEX": postgres_url}
        nodes.append(subprocess.Popen(
            [torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n), "--master-addr",
             "127.0.0.1", "--master-port", port, "s.py", url, "4"], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            fs.invalidate_cache()
            first = [k for k in fs.find(url.removeprefix("s3://")) if k.endswith("/rank-0.prov.json")]
            if first:
                break
            time.sleep(0.3)
        run_url = "s3://" + first[0].rsplit("/", 1)[0]
        merged = subprocess.run([*CLI, "merge", run_url, "-o", "merged.prov.json", "--wait", "120"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=180)
        assert merged.returncode == 0 and "merged 2 file(s)" in merged.stdout, (merged.stdout, merged.stderr)
    finally:
        outs = [n.communicate(timeout=120)[0] for n in nodes]
    assert all(n.returncode == 0 for n in nodes), outs
    for n in (0, 1):  # each node's spool emptied by its verified upload
        assert not [p for p in (tmp_path / f"spool-node{n}").rglob("rank-*") if p.is_file()]
    checked = subprocess.run([*CLI, "check", run_url, "--policy", "default"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0 and "ALLOW" in checked.stdout, checked.stdout + checked.stderr
    doc = json.loads((tmp_path / "merged.prov.json").read_text())
    models = sorted({k for b in doc["bundle"].values() for k in b.get("entity", {}) if k.startswith("p4t:model/")}
                    | {k for k in doc.get("entity", {}) if k.startswith("p4t:model/")})
    assert len(models) == 2, models
    for model in models:
        traced = subprocess.run([*CLI, "lineage", run_url, model], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert traced.returncode == 0 and "shard-" in traced.stdout, traced.stdout + traced.stderr
        up = subprocess.run([*CLI, "index", "upstream", model, "--index", postgres_url, "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
        assert up.returncode == 0 and any(u.startswith("p4t:dataset/") for u in json.loads(up.stdout)["upstream"])
