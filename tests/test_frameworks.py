"""Zero-code capture of real training stacks (issue 12): Lightning, the Hugging Face Trainer, accelerate,
safetensors, torch.save to file objects, data read without a DataLoader, argparse, secrets. Each test runs a
real tiny training on synthetic data under `prov4torch run` and checks the record as an auditor would: the
final checkpoint's sha256 is in it, and `prov4torch lineage DIR <digest> --up` reaches the training data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import load, rank_activity, role, types

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def run_cli(tmp_path: Path, script: str, *script_args: str, options: tuple[str, ...] = (), timeout: float = 400,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "script.py").write_text(textwrap.dedent(script))
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PL_DISABLE_FORK": "1", **(env or {})}
    return subprocess.run([*CLI, "run", "--out", "runs", *options, "script.py", *script_args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=timeout, env=full_env)


def plain(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "plain.py").write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, "plain.py", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=400, env={**os.environ, "HF_HUB_OFFLINE": "1", "PL_DISABLE_FORK": "1"})


def the_run(tmp_path: Path) -> tuple[Path, dict]:
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    return prov.parent, load(prov)


def lineage_up(run_dir: Path, digest: str) -> dict:
    proc = subprocess.run([*CLI, "lineage", str(run_dir), digest, "--up", "--type", "dataset", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_dataset(doc: dict) -> str:
    (used,) = {u["prov:entity"] for u in doc["used"].values() if role(u) == "p4t:training"}
    return used


LIGHTNING = """
import sys, torch, pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
class Net(pl.LightningModule):
    def __init__(self, lr=0.05, hidden=8):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    def training_step(self, batch, i):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss
    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=8, shuffle=True)
val = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=8)
ckpt = pl.callbacks.ModelCheckpoint(dirpath="ckpts", save_last=True)
trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, callbacks=[ckpt],
                     enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=0.25)
trainer.fit(Net(), train, val, ckpt_path=sys.argv[1] if len(sys.argv) > 1 else None)
print("BEST", ckpt.best_model_path)
"""


def test_lightning_checkpoints_hparams_and_stages(tmp_path: Path):
    proc = run_cli(tmp_path, LIGHTNING)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = Path(proc.stdout.split("BEST ")[1].split()[0])
    run_dir, doc = the_run(tmp_path)
    act = rank_activity(doc)
    assert act["p4t:status"] == "FINISHED" and act["p4t:globalSteps"]["$"] == "12"
    params = next(e for k, e in doc["entity"].items() if k.endswith("/params"))
    assert params["param:hparams.lr"] == {"$": "0.05", "type": "xsd:double"} and "param:lightning.max_epochs" in params
    # every Trainer argument, defaults included, not a curated subset (issue 25)
    assert params["param:lightning.trainer.gradient_clip_val"] == {"$": "0.25", "type": "xsd:double"}
    assert params["param:lightning.trainer.check_val_every_n_epoch"] == {"$": "1", "type": "xsd:int"}
    assert params["param:lightning.trainer.callbacks"] == "['ModelCheckpoint']"  # the script's own, as it gave them
    roles = {role(u) for u in doc["used"].values() if u["prov:entity"].startswith("p4t:dataset/")}
    assert roles == {"p4t:training", "p4t:validation"}
    # the final checkpoint: its bytes are in the record, and its lineage reaches the training data
    assert sha256(best) in json.dumps(doc)
    found = lineage_up(run_dir, sha256(best))
    assert training_dataset(doc) in {r["id"] for r in found["results"]}
    models = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    assert models and not [k for k in doc["entity"] if "optimizer" in k and "/metric/" not in k]
    # resuming from the checkpoint links the new run to the first: it used that checkpoint, lineage known
    resume = tmp_path / "resume"
    resume.mkdir()
    proc = run_cli(resume, LIGHTNING, str(best))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, second = the_run(resume)
    (base,) = [u for u in second["used"].values() if role(u) == "p4t:baseModel"]
    assert base["p4t:sha256"] == sha256(best) and base["p4t:lineageKnown"] is True


HF = """
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
torch.manual_seed(0)
config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=16, max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config)
class Toy(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 25).long()
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}
args = TrainingArguments(output_dir="out", num_train_epochs=2, per_device_train_batch_size=8, save_strategy="epoch",
                         eval_strategy="epoch", logging_steps=2, report_to=[], use_cpu=True, seed=0, save_total_limit=1,
                         hub_token="hf_abcdefghijklmnopqrstuvwxyz0123456789")
trainer = Trainer(model=model, args=args, train_dataset=Toy(32, 1), eval_dataset=Toy(16, 2))
trainer.train()
trainer.save_model("final")
print("DONE")
"""


def test_hf_trainer_records_the_final_model_and_its_training_data(tmp_path: Path):
    proc = run_cli(tmp_path, HF)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    run_dir, doc = the_run(tmp_path)
    final = tmp_path / "final" / "model.safetensors"
    assert sha256(final) in json.dumps(doc)
    found = lineage_up(run_dir, sha256(final))
    assert training_dataset(doc) in {r["id"] for r in found["results"]}
    roles = {role(u) for u in doc["used"].values() if u["prov:entity"].startswith("p4t:dataset/")}
    assert {"p4t:training", "p4t:validation"} <= roles
    params = next(e for k, e in doc["entity"].items() if k.endswith("/params"))
    assert params["param:hf.num_train_epochs"]["$"] == "2" and params["param:hf.hub_token"] == "<redacted>"
    assert "hf_abcdefghij" not in "".join(p.read_text(errors="replace") for p in run_dir.iterdir() if p.is_file())
    kinds = {e["prov:type"]["$"] for k, e in doc["entity"].items() if k.startswith("p4t:artifact/")}
    assert kinds <= {"p4t:RunState"} and kinds  # optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin
    assert all(v == 1 for v in _generations(doc).values())
    # checkpoint-4 was rotated away: its sidecar went with it; the final save (checkpoint-8's weights) has one
    sidecars = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.lineage.json"))
    assert sidecars == ["final.lineage.json", "out/checkpoint-8.lineage.json"]
    by_path = subprocess.run([*CLI, "lineage", str(run_dir), str(tmp_path / "final"), "--type", "dataset", "--json"],
                             capture_output=True, text=True)
    assert by_path.returncode == 0, by_path.stderr
    assert training_dataset(doc) in {r["id"] for r in json.loads(by_path.stdout)["results"]}


def _generations(doc: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in doc.get("wasGeneratedBy", {}).values():
        out[g["prov:entity"]] = out.get(g["prov:entity"], 0) + 1
    return out


EXPORTS = """
import sys, torch
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
x = torch.randn(32, 3); y = x.sum(1, keepdim=True)
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
opt = torch.optim.Adam(model.parameters(), 0.01)
for xb, yb in DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True):
    opt.zero_grad(); torch.nn.functional.mse_loss(model(xb), yb).backward(); opt.step()
torch.save(model, "whole.pt")                                     # the pickled module
torch.jit.save(torch.jit.script(model), "scripted.pt")            # TorchScript, for serving
torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()},
           "checkpoint.tar")                                      # the tutorial's training checkpoint
print("DONE")
"""

SERVE = """
import torch
served = torch.jit.load("scripted.pt")
print("SERVED", served(torch.ones(1, 3)).shape)
"""


def test_a_scripted_export_and_a_full_checkpoint_of_the_same_weights_are_one_model_found_by_path(tmp_path: Path):
    proc = run_cli(tmp_path, EXPORTS)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    run_dir, doc = the_run(tmp_path)
    (model,) = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    data = training_dataset(doc)
    for name in ("whole.pt", "scripted.pt", "checkpoint.tar"):
        assert (tmp_path / f"{name}.lineage.json").is_file(), name
        by_path = subprocess.run([*CLI, "lineage", str(run_dir), str(tmp_path / name), "--type", "dataset", "--json"],
                                 capture_output=True, text=True)
        assert by_path.returncode == 0, by_path.stderr
        found = json.loads(by_path.stdout)
        assert found["focus"]["iri"].endswith(model.split(":", 1)[1]) and data in {r["id"] for r in found["results"]}
    (gen,) = [g for g in doc["wasGeneratedBy"].values() if g["prov:entity"] == model]
    assert sorted(gen["p4t:savedAgainSha256"]) == sorted([sha256(tmp_path / "scripted.pt"),
                                                         sha256(tmp_path / "checkpoint.tar")])
    # a later run that serves the TorchScript file uses that model
    (tmp_path / "runs").rename(tmp_path / "first")
    proc = run_cli(tmp_path, SERVE)
    assert proc.returncode == 0 and "SERVED" in proc.stdout, proc.stderr[-3000:]
    _, served = the_run(tmp_path)
    assert (model, "p4t:baseModel") in {(u["prov:entity"], role(u)) for u in served["used"].values()}


ACCELERATE = """
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
acc = Accelerator(cpu=True)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(40, 4); y = (x[:, 0] > 0).long()
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
model, opt, loader = acc.prepare(model, opt, loader)
for epoch in range(2):
    for xb, yb in loader:
        opt.zero_grad(); loss = torch.nn.functional.cross_entropy(model(xb), yb); acc.backward(loss); opt.step()
acc.save_state("state")
acc.save_model(model, "final")
print("DONE")
"""


def test_accelerate_loop_save_state_and_save_model(tmp_path: Path):
    proc = run_cli(tmp_path, ACCELERATE)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    run_dir, doc = the_run(tmp_path)
    final = next((tmp_path / "final").glob("*.safetensors"))
    found = lineage_up(run_dir, sha256(final))
    assert training_dataset(doc) in {r["id"] for r in found["results"]}  # prepared loader: still training data


FILES = """
import argparse, io, torch
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--api-token", default="none")
args = p.parse_args()
torch.save({"x": torch.randn(20, 4), "y": torch.zeros(20)}, "traindata.pt")
data = torch.load("traindata.pt")
model = torch.nn.Linear(4, 1)
with open("opened.pt", "wb") as f:
    torch.save(model.state_dict(), f)
buf = io.BytesIO()
torch.save(model.state_dict(), buf)
with open("from-buffer.pt", "wb") as f:
    f.write(buf.getvalue())
torch.save(torch.optim.SGD(model.parameters(), lr=args.lr).state_dict(), "optimizer.pt")
print("DONE")
"""


def test_file_objects_data_files_argparse_defaults_and_secrets(tmp_path: Path):
    secret = "sk-THISISNOTAREALKEY1234567890"
    proc = run_cli(tmp_path, FILES, "--api-token", secret)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    run_dir, doc = the_run(tmp_path)
    params = next(e for k, e in doc["entity"].items() if k.endswith("/params"))
    assert params["param:args.epochs"]["$"] == "3" and params["param:args.lr"]["$"] == "0.1"  # defaults
    assert params["param:args.api_token"] == "<redacted>" and params["param:argv.api-token"] == "<redacted>"
    everything = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())
    assert secret not in everything
    text = json.dumps(doc)
    assert sha256(tmp_path / "opened.pt") in text  # torch.save to an open file
    data_id = f"p4t:dataset/sha256-{sha256(tmp_path / 'traindata.pt')}"
    assert doc["entity"][data_id]["prov:type"]["$"] == "mls:Dataset"  # data, not a model
    assert data_id in {u["prov:entity"] for u in doc["used"].values()}
    (opt,) = [e for k, e in doc["entity"].items() if k.startswith("p4t:artifact/")
              and e["prov:type"]["$"] == "p4t:RunState"]
    assert opt["p4t:sha256"] == sha256(tmp_path / "optimizer.pt")


def test_a_script_that_only_prints_help_leaves_no_run(tmp_path: Path):
    proc = run_cli(tmp_path, FILES, "--help")
    assert proc.returncode == 0 and "--epochs" in proc.stdout
    assert not list((tmp_path / "runs").glob("*/*/")) if (tmp_path / "runs").exists() else True


def test_the_seeded_result_is_the_same_with_and_without_recording(tmp_path: Path):
    p1 = plain(tmp_path, HF)
    assert p1.returncode == 0, p1.stderr[-2000:]
    weights_plain = sha256(tmp_path / "final" / "model.safetensors")
    p2 = run_cli(tmp_path, HF)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert sha256(tmp_path / "final" / "model.safetensors") == weights_plain


SPAWN = """
import os, torch, torch.distributed as dist, torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset, DistributedSampler
def worker(rank, world):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    x = torch.randn(32, 4); y = (x[:, 0] > 0).long()
    ds = TensorDataset(x, y)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for xb, yb in DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds)):
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(xb), yb).backward(); opt.step()
    if rank == 0:
        torch.save(model.module.state_dict(), "spawned.pt")
    dist.barrier(); dist.destroy_process_group()
if __name__ == "__main__":
    mp.spawn(worker, args=(2,), nprocs=2)
    print("DONE")
"""


def test_torch_multiprocessing_spawn_records_each_rank_and_a_launcher(tmp_path: Path):
    proc = run_cli(tmp_path, SPAWN)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    (run_dir,) = {p.parent for p in (tmp_path / "runs").glob("*/*/launcher.prov.json")}
    ranks = [load(run_dir / f"rank-{k}.prov.json") for k in (0, 1)]
    for k, doc in enumerate(ranks):
        act = rank_activity(doc)
        assert (act["p4t:rank"]["$"], act["p4t:worldSize"]["$"], act["p4t:status"]) == (str(k), "2", "FINISHED")
        assert training_dataset(doc)
    launcher = load(run_dir / "launcher.prov.json")
    assert [a for a in launcher["activity"].values() if a.get("prov:type", {}).get("$") == "p4t:Launcher"]
    found = lineage_up(run_dir, sha256(tmp_path / "spawned.pt"))
    assert training_dataset(ranks[0]) in {r["id"] for r in found["results"]}


LIGHTNING_DDP = LIGHTNING.replace('devices=1', 'devices=2, strategy="ddp"')


def test_lightning_ddp_on_two_cpu_processes_records_both_ranks(tmp_path: Path):
    proc = run_cli(tmp_path, LIGHTNING_DDP, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = {p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.prov.json")}
    ranks = [load(run_dir / f"rank-{k}.prov.json") for k in (0, 1)]
    for k, doc in enumerate(ranks):
        act = rank_activity(doc)
        assert (act["p4t:rank"]["$"], act["p4t:worldSize"]["$"]) == (str(k), "2"), act
        assert training_dataset(doc)
    merged = load(run_dir / "run.prov.json")
    assert len(merged["bundle"]) == 2


LIGHTNING_DDP_SPAWN = """
import torch, pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

class M(pl.LightningModule):
    def __init__(self):
        super().__init__(); self.l = torch.nn.Linear(2, 2)
    def training_step(self, b, i):
        x, y = b; loss = torch.nn.functional.cross_entropy(self.l(x), y); self.log("loss", loss); return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

if __name__ == "__main__":
    X, y = torch.load("data/train.pt")
    loader = DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(M(), loader)
    print("fitted")
"""


@pytest.mark.parametrize("consent", ["training", "testing"])
def test_lightning_ddp_spawn_trains_tagged_data_under_a_policy(tmp_path: Path, consent: str):
    """strategy="ddp_spawn" pickles the trainer (with the callback prov4torch adds) to each process, and rank 0
    sends its weights back in a temporary checkpoint. It failed at once ("cannot pickle '_thread._local'": the
    callback held the run); then the spawned ranks' data arrived untagged, and the parent refused the weights as
    a checkpoint of unknown lineage (rank 0's save went to the discarded helper run's hooks)."""
    (tmp_path / "data").mkdir()
    torch.save((torch.randn(32, 2), torch.randint(0, 2, (32,))), tmp_path / "data" / "train.pt")
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "data/*"\norigin_country = "FR"\njurisdiction = "EU"\n'
                                        f'license = "CC-BY-4.0"\nconsent_scope = ["{consent}"]\n')
    proc = run_cli(tmp_path, LIGHTNING_DDP_SPAWN, options=("--policy", "default", "--region", "eu-west-1",
                                                           "--purpose", "research", "--data-tags", "tags.toml"))
    if consent == "testing":
        assert proc.returncode == 1 and "fitted" not in proc.stdout and "purpose-within-consent" in proc.stderr
        return
    assert proc.returncode == 0 and "fitted" in proc.stdout, proc.stderr[-3000:]
    (run_dir,) = {p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.prov.json")}
    assert all(training_dataset(load(run_dir / f"rank-{k}.prov.json")) for k in (0, 1))
    check = subprocess.run([*CLI, "check", str(run_dir / "run.prov.json"), "--policy", "default"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("ALLOW"), check.stdout + check.stderr


PLAIN_FILES = """
import csv, pathlib, torch
rows = []
for f in sorted(pathlib.Path("data").glob("*.csv")):
    with f.open() as fh:
        rows += [[float(v) for v in r] for r in csv.reader(fh)]
t = torch.tensor(rows)
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(5):
    opt.zero_grad(); loss = ((model(t[:, :2]) - t[:, 2:]) ** 2).mean(); loss.backward(); opt.step()
torch.save(model.state_dict(), "model.pt")
print("DONE")
"""


def test_data_read_with_plain_open_is_recorded_through_data(tmp_path: Path):
    (tmp_path / "data").mkdir()
    for k in range(3):
        (tmp_path / "data" / f"part{k}.csv").write_text("\n".join(f"{i},{i + k},{i % 2}" for i in range(8)))
    proc = run_cli(tmp_path, PLAIN_FILES, options=("--data", "data"))
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    run_dir, doc = the_run(tmp_path)
    datasets = {k: e for k, e in doc["entity"].items() if "mls:Dataset" in types(e)}
    assert len(datasets) == 3  # each file opened, by its content
    assert all(e["p4t:identity"] == "content" and e["p4t:sha256"] == sha256(tmp_path / "data" / f"part{k}.csv")
               for k, e in enumerate(sorted(datasets.values(), key=lambda e: str(e.get("p4t:sourceUri")))))
    uses = [u for u in doc["used"].values() if u["prov:entity"] in datasets]
    assert sorted(role(u) for u in uses) == ["p4t:training"] * 3  # an optimizer stepped after they were read
    assert {u["p4t:sourceUri"] for u in uses} == {(tmp_path / "data" / f"part{k}.csv").resolve().as_uri()
                                                   for k in range(3)}
    found = json.dumps(lineage_up(run_dir, sha256(tmp_path / "model.pt")))
    assert all(d in found for d in datasets)
    # the same files, a byte changed: that file is another dataset, the others are the same
    (tmp_path / "data" / "part1.csv").write_text("0,0,1")
    assert run_cli(tmp_path, PLAIN_FILES, options=("--data", "data")).returncode == 0
    ids = set()
    for prov in (tmp_path / "runs").glob("*/*/rank-0.prov.json"):
        ids |= {k for k, e in load(prov)["entity"].items() if "mls:Dataset" in types(e)}
    assert len(ids) == 4


def test_data_option_refuses_a_missing_directory(tmp_path: Path):
    proc = run_cli(tmp_path, PLAIN_FILES, options=("--data", "nowhere"))
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "model.pt").exists()


BUFFERS = """
import io, torch
torch.manual_seed(0)
model = torch.nn.Linear(3, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
model(torch.randn(4, 3)).sum().backward(); opt.step()
for name, obj in (("weights.pt", model.state_dict()), ("optim.pt", opt.state_dict())):
    buf = io.BytesIO()
    torch.save(obj, buf)                      # into memory first, as Lightning and many scripts do
    with open(name, "wb") as fh:
        fh.write(buf.getvalue())
with open("weights.pt", "rb") as fh:          # and back through memory
    state = torch.load(io.BytesIO(fh.read()))
model.load_state_dict(state)
print("DONE")
"""


def test_checkpoints_that_travel_through_a_bytesio_are_followed_to_their_file(tmp_path: Path):
    proc = run_cli(tmp_path, BUFFERS)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    _run_dir, doc = the_run(tmp_path)
    weights, optim = sha256(tmp_path / "weights.pt"), sha256(tmp_path / "optim.pt")
    (model_id,) = [k for k, e in doc["entity"].items() if "mls:Model" in types(e)]  # the optimizer is no model
    (state,) = [e for e in doc["entity"].values() if "p4t:RunState" in types(e)]
    assert state["p4t:sha256"] == optim
    (gen,) = [g for g in doc["wasGeneratedBy"].values() if g["prov:entity"] == model_id]
    assert gen["p4t:sha256"] == weights and gen["p4t:path"] == str(tmp_path / "weights.pt")
    (used,) = [u for u in doc["used"].values() if u["prov:entity"] == model_id]  # read back through a buffer
    assert used["p4t:sha256"] == weights


HF_DATASETS = """
import torch, datasets
from torch.utils.data import DataLoader
splits = datasets.load_from_disk("hfdata")
train, test = splits["train"].with_format("torch"), splits["test"].with_format("torch")
extra = datasets.Dataset.from_dict({"x": [[float(i), 1.0] for i in range(8)], "y": [i % 2 for i in range(8)]})
model = torch.nn.Linear(2, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for batch in DataLoader(train, batch_size=4, shuffle=True):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"]).backward(); opt.step()
for batch in DataLoader(extra.with_format("torch"), batch_size=4, shuffle=True):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"]).backward(); opt.step()
torch.save(model.state_dict(), "model.pt")
print("DONE")
"""


def test_hugging_face_datasets_are_identified_by_their_arrow_content(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    full = datasets.Dataset.from_dict({"x": [[float(i), float(-i)] for i in range(40)], "y": [i % 2 for i in range(40)]})
    full.train_test_split(test_size=0.25, seed=0).save_to_disk(str(tmp_path / "hfdata"))
    proc = run_cli(tmp_path, HF_DATASETS, env={"HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    run_dir, doc = the_run(tmp_path)
    data = {k: e for k, e in doc["entity"].items() if "mls:Dataset" in types(e)}
    assert all(e["p4t:identity"] == "content" for e in data.values())
    roles = {(u["prov:entity"], role(u)) for u in doc["used"].values() if u["prov:entity"] in data}
    train_file = next((tmp_path / "hfdata" / "train").glob("*.arrow"))
    (train_id,) = [k for k, e in data.items() if sha256(train_file) in json.dumps(e)]
    assert (train_id, "p4t:training") in roles  # the split and the shuffled loader: one dataset, its content
    (test_id,) = [k for k, e in data.items() if k != train_id and e.get("p4t:fileCount")]
    assert (test_id, "p4t:testing") in roles
    (in_memory,) = [k for k in data if k not in (train_id, test_id)]  # built in the script: its Arrow buffers
    assert (in_memory, "p4t:training") in roles
    found = json.dumps(lineage_up(run_dir, sha256(tmp_path / "model.pt")))
    assert train_id in found and in_memory in found
    (model_id,) = [k for k, e in doc["entity"].items() if "mls:Model" in types(e)]
    sources = {d["prov:usedEntity"] for d in doc["wasDerivedFrom"].values() if d["prov:generatedEntity"] == model_id}
    assert {train_id, in_memory} <= sources and test_id not in sources  # derived from what trained it, not the test


HF_TOKENIZED = """
import sys, torch, datasets
raw = datasets.load_dataset("csv", data_files={"train": sys.argv[1]}, split="train")
tokenized = raw.map(lambda b: {"x": [[float(len(t)), 1.0] for t in b["text"]]}, batched=True)
kept = tokenized.filter(lambda r: r["x"][0] > 0).remove_columns(["text"])
more = datasets.concatenate_datasets([kept, kept.select(range(4))])
model = torch.nn.Linear(2, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for batch in torch.utils.data.DataLoader(more.with_format("torch"), batch_size=4, shuffle=True):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(batch["x"]), batch["label"]).backward(); opt.step()
print("DONE")
"""


@pytest.mark.parametrize("consent", ["training", "testing"])
def test_tags_of_files_follow_them_through_hugging_face_loading_and_transformations(tmp_path: Path, consent: str):
    """A tagged CSV read by load_dataset, tokenized with map, filtered, trimmed and concatenated: each step is new
    Arrow content, and carries the file's tags -- allowed when the consent covers training, blocked when not
    (before: the result had no tags at all, and the default policy refused correctly consented data)."""
    pytest.importorskip("datasets")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.csv").write_text("text,label\n" + "".join(f"line {i},{i % 2}\n" for i in range(24)))
    (tmp_path / "tags.toml").write_text(textwrap.dedent(f"""
        [[dataset]]
        path = "corpus"
        origin_country = "FR"
        jurisdiction = "EU"
        license = "CC-BY-4.0"
        consent_scope = ["{consent}"]
    """))
    files = "corpus/train.csv" if consent == "training" else "corpus/*.csv"  # a path, and a pattern
    proc = run_cli(tmp_path, HF_TOKENIZED, files, options=("--policy", "default", "--region", "eu-west-1", "--purpose",
                                                           "training", "--data-tags", "tags.toml"),
                   env={"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    if consent == "testing":
        assert proc.returncode == 1 and "DONE" not in proc.stdout, proc.stderr[-3000:]
        assert "purpose-within-consent" in proc.stderr and "used as training" in proc.stderr
        return
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    _run_dir, doc = the_run(tmp_path)
    trained = [u["prov:entity"] for u in doc["used"].values() if role(u) == "p4t:training"]
    assert trained and all(doc["entity"][d]["p4t:consentScope"] == "training" for d in trained)
    sources = json.dumps([u.get("p4t:tagsFrom") for u in doc["used"].values() if u["prov:entity"] in trained])
    assert "derived from" in sources
    # the trained dataset derives, through the unattached steps between, from the one load_dataset made
    (loaded,) = {u["prov:entity"] for u in doc["used"].values() if u.get("p4t:name") == "csv:train"}
    edges = {(d["prov:generatedEntity"], d["prov:usedEntity"]) for d in doc["wasDerivedFrom"].values()}
    derived = set(trained) - {loaded}
    assert derived and all((t, loaded) in edges for t in derived)
