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
