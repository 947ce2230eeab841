"""Run files on object storage (issue 29, item 3), against a real S3-compatible server (moto in server mode,
started once per test run, in its own virtual environment) through s3fs: ``--out s3://...`` writes to a local
spool and publishes each file verified by sha256 (never a half-written object under a final name), the local
copy dropped; the audit commands read the bucket; a dead server keeps the local copy, the run's status and
exit code unchanged, and ``prov4torch upload`` publishes it later."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

import prov4torch

CLI = [sys.executable, "-m", "prov4torch_cli.app"]
TRAIN = """
import sys, torch
from torch.utils.data import DataLoader, TensorDataset
import prov4torch
data = TensorDataset(torch.arange(32.0).reshape(16, 2), torch.ones(16, 1))
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
loader = prov4torch.track(DataLoader(data, batch_size=4, shuffle=True), name="rows", origin_country="FR",
                          jurisdiction="EU", license="CC-BY-4.0", consent_scope=["training"])
for x, y in loader:
    opt.zero_grad(); loss = ((model(x) - y) ** 2).mean(); loss.backward(); opt.step()
    prov4torch.log_metric("loss", float(loss))
torch.save(model.state_dict(), "model.pt")
print("trained", flush=True)
"""


def keys(bucket: str) -> list[str]:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    return sorted(fs.find(bucket.removeprefix("s3://")))


def cli(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PROV4TORCH_SPOOL": str(tmp_path / "spool")})


def test_a_run_published_to_s3_is_audited_from_the_bucket(tmp_path: Path, s3_bucket: str):
    (tmp_path / "train.py").write_text(TRAIN)
    r = cli(tmp_path, "run", "--out", f"{s3_bucket}/runs", "--policy", "default", "--region", "eu-west-1",
            "--purpose", "training", "train.py")
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-2000:]
    assert "published" in r.stderr and "verified by sha256" in r.stderr, r.stderr
    assert f"provenance in {s3_bucket}/runs/default/" in r.stderr and str(tmp_path / "spool") not in r.stderr
    found = keys(s3_bucket)
    (run_key,) = {k.rsplit("/", 1)[0] for k in found if k.endswith("/run.prov.json")}
    names = {k.rsplit("/", 1)[1] for k in found if k.startswith(run_key + "/")}
    assert {"run.prov.json", "rank-0.prov.json", "rank-0.metrics.csv", "rank-0.journal.jsonl"} <= names, names
    assert not any(".p4t-upload-" in k for k in found)  # no temporary key left behind
    assert not any("/.children/" in k for k in found)  # prov4torch's own helper files are not the run's
    assert not [p for p in (tmp_path / "spool").rglob("*") if p.is_file() and p.parent.name != ".lineage"]
    run_url = f"s3://{run_key}"
    checked = cli(tmp_path, "check", run_url, "--policy", "default")
    assert checked.returncode == 0 and "ALLOW" in checked.stdout, (checked.stdout, checked.stderr)
    valid = cli(tmp_path, "validate", f"{run_url}/run.prov.json")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    shown = cli(tmp_path, "show", run_url, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout), shown.stderr
    with fsspec.open(f"{run_url}/rank-0.prov.json") as fh:
        doc = json.load(fh)
    (model,) = [g["prov:entity"] for g in doc["wasGeneratedBy"].values() if g["prov:entity"].startswith("p4t:model/")]
    traced = cli(tmp_path, "lineage", f"{run_url}/run.prov.json", model)
    assert traced.returncode == 0 and "p4t:dataset/" in traced.stdout, traced.stdout + traced.stderr
    merged = cli(tmp_path, "merge", run_url, "-o", "merged.prov.json")
    assert merged.returncode == 0 and "merged 1 file(s)" in merged.stdout, merged.stderr


def test_the_library_publishes_each_rank_s_own_files(tmp_path: Path, s3_bucket: str,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROV4TORCH_SPOOL", str(tmp_path / "spool"))
    with prov4torch.start_run(out_dir=f"{s3_bucket}/lib", experiment="e") as run:
        prov4torch.log_metric("loss", 0.5, step=1)
    assert run.dir.is_relative_to(tmp_path / "spool")
    found = keys(s3_bucket)
    assert f"{s3_bucket.removeprefix('s3://')}/lib/e/{run.run_id}/rank-0.prov.json" in found, found
    assert not list(run.dir.glob("rank-0.*"))  # published: the local copies dropped


DIES = """
import prov4torch
for step in range(3):
    prov4torch.log_metric("loss", 1.0 / (step + 1), step=step)
print("trained", flush=True)
"""


def test_a_dead_s3_server_keeps_the_local_copy_and_upload_publishes_it_later(tmp_path: Path, s3_bucket: str,
                                                                             s3_server: str):
    """The server is killed mid-upload (as soon as the first object of the run appears in the bucket): the run
    still ends FINISHED, exit 0; the files not published stay in the spool, the summary says where and how to
    publish them, no temporary key is left under a final name; `prov4torch upload` finishes the job once a
    server is back (the session's)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from conftest import MOTO

    server = subprocess.Popen([os.environ.get("PROV4TORCH_TEST_MOTO") or str(MOTO), "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        doomed = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                fsspec.filesystem("s3", endpoint_url=doomed, skip_instance_cache=True).mkdir("doomed")
                break
            except Exception:  # not up yet
                assert time.monotonic() < deadline
                time.sleep(0.3)
        (tmp_path / "dies.py").write_text(DIES)
        env = {**os.environ, "PROV4TORCH_SPOOL": str(tmp_path / "spool"),
               "FSSPEC_S3": json.dumps({"endpoint_url": doomed, "retries": 1,
                                        "config_kwargs": {"connect_timeout": 2, "read_timeout": 2,
                                                          "retries": {"max_attempts": 1}}})}
        env.pop("FSSPEC_S3_ENDPOINT_URL")
        watcher = fsspec.filesystem("s3", endpoint_url=doomed, skip_instance_cache=True)
        t = time.monotonic()
        proc = subprocess.Popen([*CLI, "run", "--out", "s3://doomed/runs", "dies.py"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:  # the first object of the run in the bucket: the upload has begun
            watcher.invalidate_cache()
            if watcher.find("doomed/runs"):
                server.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=300)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        took = time.monotonic() - t
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-2000:]
    assert "could not publish" in r.stderr and "prov4torch upload" in r.stderr, r.stderr
    assert took < 120, took
    (kept,) = {p.parent for p in (tmp_path / "spool").rglob("*") if p.is_file()
               and not any(part.startswith(".") for part in p.relative_to(tmp_path / "spool").parts)}
    assert server.poll() is not None  # it was killed during the upload, not after
    if (kept / "rank-0.prov.json").exists():
        doc = json.loads((kept / "rank-0.prov.json").read_text())
        assert [a["p4t:status"] for a in doc["activity"].values() if "p4t:status" in a] == ["FINISHED"]
    target = f"{s3_bucket}/later/{kept.name}"
    up = cli(tmp_path, "upload", str(kept), target)
    assert up.returncode == 0 and "published" in up.stdout, up.stdout + up.stderr
    assert not kept.exists()
    assert any(k.endswith(".journal.jsonl") or k.endswith(".prov.json") for k in keys(s3_bucket))
    assert not any(".p4t-upload-" in k for k in keys(s3_bucket))


@pytest.mark.parametrize("args", [["check", "foo://bucket/run", "--policy", "default"],
                                  ["run", "--out", "foo://bucket/runs", "train.py"],
                                  ["show", "s3://no-such-bucket-here/run"],
                                  ["merge", "s3://no-such-bucket-here/run", "-o", "m.prov.json"],
                                  ["merge", "runs", "-o", "s3://bucket/merged.prov.json"],
                                  ["render", "runs", "--out=s3://bucket/graph.svg"]])
def test_a_bad_or_unreadable_storage_url_is_one_line_and_exit_2(tmp_path: Path, s3_bucket: str, args: list[str]):
    (tmp_path / "train.py").write_text("print('ran')\n")
    (tmp_path / "runs").mkdir()
    r = cli(tmp_path, *args, timeout=120)
    assert r.returncode == 2 and "ran" not in r.stdout, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert not list((tmp_path).glob("prov4torch-fetch-*")) and not (tmp_path / "s3:").exists()


def test_with_start_run_an_unknown_scheme_is_an_error_before_the_run(tmp_path: Path):
    with pytest.raises(prov4torch.Prov4TorchError, match="foo://x: not a storage URL"):
        prov4torch.start_run(out_dir="foo://x")


DDP = """
import torch, torch.distributed as dist
import prov4torch
dist.init_process_group("gloo")
prov4torch.log_metric("rank", float(dist.get_rank()), step=0)
dist.destroy_process_group()
print("rank done", flush=True)
"""


def test_a_job_of_several_ranks_is_merged_then_published(tmp_path: Path, s3_bucket: str):
    (tmp_path / "ddp.py").write_text(DDP)
    r = cli(tmp_path, "run", "--nproc-per-node", "2", "--out", f"{s3_bucket}/jobs", "ddp.py")
    assert r.returncode == 0 and r.stdout.count("rank done") == 2, r.stderr[-2000:]
    names = {k.rsplit("/", 1)[1] for k in keys(s3_bucket)}
    assert {"rank-0.prov.json", "rank-1.prov.json", "run.prov.json"} <= names, names
    (run_key,) = {k.rsplit("/", 1)[0] for k in keys(s3_bucket) if k.endswith("/run.prov.json")}
    with fsspec.open(f"s3://{run_key}/run.prov.json") as fh:
        merged = json.load(fh)
    assert len(merged["bundle"]) == 2
    assert not [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]
