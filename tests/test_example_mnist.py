"""examples/mnist end to end: real IDX reading, single process, 2 gloo ranks, the blocked variant."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load, rank_activity, read_prov, role

EXAMPLE = ROOT / "examples" / "mnist"
POLICY = EXAMPLE / "policy.toml"


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.dim()) + struct.pack(">" + "I" * array.dim(), *array.shape)
    data = header + array.to(torch.uint8).numpy().tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(data)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MNIST in the real IDX format: digits drawn as bright blocks at label-dependent places."""
    d = tmp_path_factory.mktemp("mnist")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 640), ("t10k", 160)):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, y in enumerate(labels.tolist()):
            r, c = divmod(y, 4)
            images[i, 3 + 8 * r: 8 + 8 * r, 2 + 6 * c: 7 + 6 * c] = 255
        write_idx(d / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", labels)
    return d


def prov4torch_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PROV4TORCH_ENERGY": "1"})


def test_idx_reader_reads_what_it_wrote(tmp_path: Path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        import train  # the example script as a module
    finally:
        sys.path.pop(0)
    arr = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    assert torch.equal(train.read_idx(tmp_path / "x.gz"), arr)


def test_single_process_run_leaves_the_full_record(tmp_path: Path, mnist_dir: Path):
    from prov4torch.evidence import keys

    keys.init_key()  # with a key, the main job signs its record and checkpoints (issue 22)
    proc = prov4torch_run(tmp_path, "--out", "runs", "--run-id", "one", "--experiment", "mnist",
                          "--policy", str(POLICY), "--region", "eu-west-1", "--purpose", "training", "--render",
                          str(EXAMPLE / "train.py"), "--data-dir", str(mnist_dir), "--epochs", "2", "--out", "ckpt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"data: MNIST (IDX files in {mnist_dir}): 576 train, 64 validation, 160 test" in proc.stdout
    run_dir = tmp_path / "runs" / "mnist" / "one"
    for name in ("rank-0.prov.json", "rank-0.metrics.csv", "run.prov.json", "run.svg"):
        assert (run_dir / name).is_file(), name
    read_prov(run_dir / "run.prov.json")
    ET.parse(run_dir / "run.svg")
    doc = load(run_dir / "rank-0.prov.json")
    act = rank_activity(doc)
    assert act["p4t:status"] == "FINISHED" and act["p4t:computeRegion"] == "eu-west-1"
    assert float(act["p4t:energyKWh"]["$"]) > 0
    datasets = {u["p4t:name"]: doc["entity"][u["prov:entity"]] for u in doc["used"].values()
                if u["prov:entity"].startswith("p4t:dataset/")}
    assert set(datasets) == {"digits-train", "digits-validation", "digits-test"}
    assert datasets["digits-train"]["p4t:license"] == "CC-BY-SA-3.0"
    models = [g for g in doc["wasGeneratedBy"].values() if g["prov:entity"].startswith("p4t:model/")]
    assert sorted(m["p4t:version"]["$"] for m in models) == ["1", "2"] and {m["p4t:name"] for m in models} == {"mnist"}
    revisions = [r for r in doc["wasDerivedFrom"].values() if r.get("prov:type", {}).get("$") == "prov:Revision"]
    assert len(revisions) == 1
    series = {(e["p4t:context"], e["p4t:name"]) for e in doc["entity"].values() if e.get("p4t:context")}
    assert {("training", "loss"), ("validation", "accuracy"), ("testing", "accuracy")} <= series
    check = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "check", str(run_dir), "--policy",
                            str(POLICY)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    checkpoints = [m["p4t:path"] for m in models]
    verify = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "verify", str(run_dir), *checkpoints],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "FAILED" not in verify.stdout, verify.stdout
    assert verify.stdout.count("subject") >= 4  # both checkpoints, the rank document, the merged document


def test_blocked_variant_never_trains(tmp_path: Path, mnist_dir: Path):
    proc = prov4torch_run(tmp_path, "--out", "runs", "--run-id", "blocked", "--experiment", "mnist",
                          "--policy", str(POLICY), "--region", "us-east-1", "--purpose", "training",
                          str(EXAMPLE / "train.py"), "--data-dir", str(mnist_dir), "--epochs", "1", "--out", "ckpt")
    assert proc.returncode == 1
    assert "rule 'approved-regions'" in proc.stderr and "us-east-1" in proc.stderr
    assert "epoch 1" not in proc.stdout and not list((tmp_path / "ckpt").glob("*.pt"))
    act = rank_activity(load(tmp_path / "runs" / "mnist" / "blocked" / "rank-0.prov.json"))
    assert act["p4t:status"] == "BLOCKED"


@pytest.mark.slow
def test_two_gloo_ranks(tmp_path: Path, mnist_dir: Path):
    proc = prov4torch_run(tmp_path, "--out", "runs", "--run-id", "ddp", "--experiment", "mnist",
                          "--nproc-per-node", "2", "--policy", str(POLICY), "--region", "eu-west-1",
                          "--purpose", "training", "--render", str(EXAMPLE / "train.py"),
                          "--data-dir", str(mnist_dir), "--epochs", "1", "--out", "ckpt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "mnist" / "ddp"
    ranks = [load(run_dir / f"rank-{k}.prov.json") for k in (0, 1)]
    for k, doc in enumerate(ranks):
        act = rank_activity(doc)
        assert (act["p4t:rank"]["$"], act["p4t:worldSize"]["$"], act["p4t:status"]) == (str(k), "2", "FINISHED")
        (used,) = [u for u in doc["used"].values() if role(u) == "p4t:training"]
        assert used["p4t:samples"]["$"] == "288"  # half of 576 each
    assert len(load(run_dir / "run.prov.json")["bundle"]) == 2 and (run_dir / "run.svg").is_file()


def test_uci_digits_fallback_says_so(tmp_path: Path):
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--data-dir", str(tmp_path / "none"),
                           "--epochs", "1", "--limit", "300", "--out", str(tmp_path / "ck")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "UCI handwritten digits from scikit-learn, upscaled to 28x28" in proc.stdout
    assert (tmp_path / "ck" / "mnist-epoch1.pt").is_file()
