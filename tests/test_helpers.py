"""Decisions reach the record from anywhere (issue 23, item 6): a use the policy blocks in a process the script
started -- a multiprocessing child (fork, spawn, forkserver), an os.fork(), a DataLoader worker -- ends the run
BLOCKED, exit 1, with the decision and the dataset in the rank's own record; an allowed use there is recorded
as the rank's. Under real ``prov4torch run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TAGS = ('jurisdiction="EU", personal_data=True, origin_country="DE", consent_scope=["training"], '
        'license="CC-BY-4.0"')

CHILD = f'''
import os, sys, multiprocessing as mp
import torch
from torch.utils.data import DataLoader, TensorDataset
import prov4torch

def child():
    data = TensorDataset(torch.arange(16.0).reshape(8, 2))
    for (x,) in prov4torch.track(DataLoader(data, batch_size=4), name="eu-personal", {TAGS}):
        print("child got a batch", flush=True)

if __name__ == "__main__":
    how = sys.argv[1]
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:
            try:
                child()
                os._exit(0)
            except BaseException:
                os._exit(1)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    else:
        p = mp.get_context(how).Process(target=child)
        p.start()
        p.join()
        code = p.exitcode
    print("child exit", code, flush=True)
'''

WORKER = f'''
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
import prov4torch

class Lazy(Dataset):
    """An index whose real data (EU personal) is opened inside the DataLoader worker."""
    def __len__(self):
        return 8
    def __getitem__(self, i):
        inner = TensorDataset(torch.zeros(8, 2))
        prov4torch.log_dataset(inner, name="eu-personal", {TAGS})
        return inner[i][0]

loader = DataLoader(Lazy(), batch_size=4, num_workers=2)
for x in prov4torch.track(loader, name="index", origin_country="US", jurisdiction="US", personal_data=False,
                          consent_scope=["training"], license="MIT"):
    print("got a batch", flush=True)
'''


def _run(tmp_path: Path, script: str, *args: str, region: str = "us-east-1") -> tuple[subprocess.CompletedProcess[str],
                                                                                       Path]:
    (tmp_path / "s.py").write_text(script)
    env = {**os.environ, "PROV4TORCH_ENERGY": "0", "PROV4TORCH_SYSTEM_METRICS": "0"}
    r = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "run", "--out", "out", "--policy", "default",
                        "--region", region, "--purpose", "training", "s.py", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    (run_dir,) = (tmp_path / "out").glob("*/*")
    return r, run_dir


def _rank(run_dir: Path) -> dict:
    return json.loads((run_dir / "rank-0.prov.json").read_text())


def _denials(doc: dict) -> list[dict]:
    return [e for e in doc["entity"].values() if "p4t:verdict" in e and e["p4t:verdict"] == "deny"]


@pytest.mark.parametrize(("script", "how"), [(CHILD, "fork"), (CHILD, "spawn"), (CHILD, "forkserver"),
                                             (CHILD, "os.fork"), (WORKER, "")],
                         ids=["mp-fork", "mp-spawn", "mp-forkserver", "os.fork", "dataloader-worker"])
def test_a_block_in_a_process_the_script_started_ends_the_run_blocked_in_its_own_record(tmp_path, script, how):
    r, run_dir = _run(tmp_path, script, *([how] if how else []))
    assert r.returncode == 1, (r.stdout[-1000:], r.stderr[-2000:])
    assert "child got a batch" not in r.stdout and "got a batch" not in r.stdout.replace("child exit", "")
    doc = _rank(run_dir)
    (act,) = [a for a in doc["activity"].values() if a.get("p4t:runId")]
    assert act["p4t:status"] == "BLOCKED"
    denials = _denials(doc)
    assert denials and all(d["p4t:mode"] == "enforce" for d in denials)
    rules = {r for d in denials for r in (d["p4t:rule"] if isinstance(d["p4t:rule"], list) else [d["p4t:rule"]])}
    assert "eu-personal-data-stays-in-eu" in rules
    blocked = {x["$"] if isinstance(x, dict) else x for d in denials
               for x in (d["p4t:checkedDataset"] if isinstance(d["p4t:checkedDataset"], list) else
                         [d["p4t:checkedDataset"]])}
    eu = [k for k, e in doc["entity"].items() if e.get("p4t:personalData") is True]
    assert eu and set(eu) <= blocked  # the decision names the dataset, and the dataset is in the rank's record
    assert not any(u["prov:entity"] in eu for u in doc.get("used", {}).values())  # never recorded as used
    check = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "check", str(run_dir), "--policy", "default"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "prevented at runtime" in check.stdout, check.stdout


FILE_CHILD = """
import sys, multiprocessing as mp
import numpy as np

def child():
    tokens = np.memmap("data/eu.bin", dtype=np.uint16, mode="r")  # a file read as data, in the child
    print("child read", int(tokens[:4].sum()), flush=True)

if __name__ == "__main__":
    p = mp.get_context(sys.argv[1]).Process(target=child)
    p.start()
    p.join()
    print("child exit", p.exitcode, flush=True)
"""


@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_a_file_read_as_data_in_a_child_process_is_gated_and_reaches_the_record(tmp_path, how):
    """`--data` files the script's child process maps (not a DataLoader worker): judged there, and the deny and
    the file's dataset are in the rank's record (before, a forked child's reads were not recorded at all)."""
    import numpy as np

    (tmp_path / "data").mkdir()
    np.arange(64, dtype=np.uint16).tofile(tmp_path / "data" / "eu.bin")
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "data"\njurisdiction = "EU"\npersonal_data = true\n'
                                        'origin_country = "DE"\nconsent_scope = ["training"]\nlicense = "CC-BY-4.0"\n')
    (tmp_path / "s.py").write_text(FILE_CHILD)
    env = {**os.environ, "PROV4TORCH_ENERGY": "0", "PROV4TORCH_SYSTEM_METRICS": "0"}
    r = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "run", "--out", "out", "--policy", "default",
                        "--region", "us-east-1", "--purpose", "training", "--data", "data", "--data-tags",
                        "tags.toml", "s.py", how], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "child read" not in r.stdout, (r.stdout[-1000:], r.stderr[-2000:])
    (run_dir,) = (tmp_path / "out").glob("*/*")
    doc = _rank(run_dir)
    (act,) = [a for a in doc["activity"].values() if a.get("p4t:runId")]
    assert act["p4t:status"] == "BLOCKED"
    eu = [k for k, e in doc["entity"].items() if e.get("p4t:personalData") is True]
    assert eu and any(set(eu) & set(json.dumps(d["p4t:checkedDataset"]).split('"')) for d in _denials(doc))
    assert not any(u["prov:entity"] in eu for u in doc.get("used", {}).values())


def test_an_allowed_use_in_a_spawned_process_is_the_rank_s_use(tmp_path):
    r, run_dir = _run(tmp_path, CHILD, "spawn", region="eu-west-1")
    assert r.returncode == 0 and r.stdout.count("child got a batch") == 2, r.stderr[-2000:]
    doc = _rank(run_dir)
    (act,) = [a for a in doc["activity"].values() if a.get("p4t:runId")]
    assert act["p4t:status"] == "FINISHED"
    (eu,) = [k for k, e in doc["entity"].items() if e.get("p4t:personalData") is True]
    (use,) = [u for u in doc["used"].values() if u["prov:entity"] == eu]
    assert use["prov:role"]["$"] == "p4t:training" and int(use["p4t:batches"]["$"] if isinstance(
        use["p4t:batches"], dict) else use["p4t:batches"]) == 2


def test_recover_reads_the_helpers_of_a_rank_that_died(tmp_path):
    r, run_dir = _run(tmp_path, CHILD, "fork")
    assert r.returncode == 1
    journal = run_dir / "rank-0.journal.jsonl"
    lines = [ln for ln in journal.read_text().splitlines()
             if json.loads(ln)["t"] not in ("end", "dataset", "decision", "usage")]  # as if it died at once
    journal.write_text("\n".join(lines) + "\n")
    for f in run_dir.glob("*.prov.json"):
        f.unlink()
    helper = next(run_dir.glob("helper-*.of-rank-0.journal.jsonl"))
    with helper.open("a") as fh:
        fh.write('{"t": "decision", "attrs": "not an object"}\n')
    rec = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "recover", str(run_dir)], capture_output=True,
                         text=True, timeout=120)
    assert rec.returncode == 0, rec.stderr
    doc = _rank(run_dir)
    assert _denials(doc)
    (act,) = [a for a in doc["activity"].values() if a.get("p4t:runId")]
    skipped = act["p4t:journalSkippedLines"]
    assert int(skipped["$"] if isinstance(skipped, dict) else skipped) >= 1
