"""Fidelity on code in the styles nobody here wrote (issue 25): data held in plain Python, token files read with
np.memmap, loops that never exhaust their loader, models whose training data went unrecorded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import load

CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def run(tmp_path: Path, script: str, *args: str, out: str = "runs") -> subprocess.CompletedProcess[str]:
    (tmp_path / "train.py").write_text(textwrap.dedent(script))
    return subprocess.run([*CLI, "run", "--out", out, "train.py", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=180)


def run_with(tmp_path: Path, script: str, *options: str) -> subprocess.CompletedProcess[str]:
    """``prov4torch run --out runs OPTIONS train.py``."""
    (tmp_path / "train.py").write_text(textwrap.dedent(script))
    return subprocess.run([*CLI, "run", "--out", "runs", *options, "train.py"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def datasets(doc: dict) -> dict[str, dict]:
    return {k: e for k, e in doc["entity"].items() if k.startswith("p4t:dataset/") or "/dataset/" in k}


CHAR = """
import torch
from torch.utils.data import DataLoader, Dataset

class CharDataset(Dataset):  # the char-level GPT pattern: the corpus is one str
    def __init__(self, text, block):
        chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.data = text
        self.block = block
    def __len__(self):
        return len(self.data) - self.block - 1
    def __getitem__(self, i):
        ix = torch.tensor([self.stoi[c] for c in self.data[i:i + self.block + 1]], dtype=torch.float32)
        return ix[:-1], ix[1:]

class Obj:
    def __init__(self, i):
        self.i = i

class Objects(Dataset):  # a dataset of plain Python objects
    def __init__(self):
        self.items = [Obj(i) for i in range(100)]
    def __len__(self):
        return len(self.items)
    def __getitem__(self, i):
        return torch.tensor([float(self.items[i].i)])

text = "to be or not to be, that is the question\\n" * 20
model = torch.nn.Linear(8, 8)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in DataLoader(CharDataset(text, 8), batch_size=16, shuffle=True):
    opt.zero_grad(); ((model(x) - y) ** 2).mean().backward(); opt.step()
for v in DataLoader(Objects(), batch_size=10, shuffle=True):
    opt.zero_grad(); model(v.repeat(1, 8)).sum().backward(); opt.step()
torch.save(model.state_dict(), "model.pt")
"""


def test_plain_python_data_is_identified_by_content_the_same_in_every_process(tmp_path: Path):
    ids = []
    for out in ("a", "b"):
        r = run(tmp_path, CHAR, out=out)
        assert r.returncode == 0, r.stderr
        (prov,) = (tmp_path / out).glob("*/*/rank-0.prov.json")
        found = {e.get("p4t:name") or k: (k, e) for k, e in datasets(load(prov)).items()}
        ids.append(sorted(k for k, _ in found.values()))
        assert all(e["p4t:identity"] == "content" for _, e in found.values()), found
    assert ids[0] == ids[1] and len(ids[0]) == 2
    up = subprocess.run([*CLI, "lineage", "b", "model.pt", "--type", "dataset"], capture_output=True, text=True,
                        cwd=tmp_path)
    assert up.returncode == 0 and ids[0][0] in up.stdout and ids[0][1] in up.stdout, up.stdout


MEMMAP = """
import numpy as np, torch
block, batch = 8, 4
def get_batch(split):  # the nanoGPT pattern: a token file mapped every step
    data = np.memmap(f"{split}.bin", dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block, (batch,))
    x = torch.stack([torch.from_numpy(data[i:i + block].astype(np.int64)) for i in ix]).float()
    return x, x.sum(1, keepdim=True)
model = torch.nn.Linear(block, 1)
opt = torch.optim.SGD(model.parameters(), lr=1e-9)
@torch.no_grad()
def estimate():
    x, y = get_batch("val")
    return ((model(x) - y) ** 2).mean()
for it in range(30):
    if it % 10 == 0:
        estimate()
    x, y = get_batch("train")
    opt.zero_grad(); ((model(x) - y) ** 2).mean().backward(); opt.step()
torch.save(model.state_dict(), "ckpt.pt")
"""


def test_memmap_token_files_are_data_with_roles_from_their_use(tmp_path: Path):
    np.arange(5000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "val.bin")
    r = run(tmp_path, MEMMAP)
    assert r.returncode == 0, r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    doc = load(prov)
    roles, reads = [], {}
    for u in doc["used"].values():
        ent = doc["entity"].get(u["prov:entity"], {})
        if "dataset/" in u["prov:entity"]:
            roles.append((u.get("p4t:name"), u["prov:role"]["$"]))
            reads[u.get("p4t:name")] = u["p4t:reads"]["$"]
            assert ent["p4t:identity"] == "content"
    # the token file an optimizer stepped after is training data (read first with gradients on: `input` until
    # the step, then counted under training, and `input` is not written); the one read under no_grad between
    # training steps steers the loop (nanoGPT's estimate_loss picks the best checkpoint): validation, and
    # `evaluation` is not written either
    assert sorted(roles) == [("train.bin", "p4t:training"), ("val.bin", "p4t:validation")], roles
    assert reads == {"train.bin": "30", "val.bin": "3"}
    (model,) = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    derived = {d["prov:usedEntity"] for d in doc["wasDerivedFrom"].values() if d["prov:generatedEntity"] == model}
    names = {doc["entity"][d].get("p4t:name") or d for d in derived}
    assert any("train.bin" in json.dumps(doc["entity"][d]) or d for d in derived) and len(derived) == 1, names


BREAK = """
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
ds = TensorDataset(torch.randn(64, 3), torch.randn(64, 1))
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(ds, batch_size=4, sampler=RandomSampler(ds, replacement=True, num_samples=10**9))
for step, (x, y) in enumerate(loader):  # an infinite sampler: the loop breaks, the loader never ends
    opt.zero_grad(); ((model(x) - y) ** 2).mean().backward(); opt.step()
    if step == 29:
        break
"""


def test_usage_counts_are_exact_for_a_loader_that_is_never_exhausted(tmp_path: Path):
    r = run(tmp_path, BREAK)
    assert r.returncode == 0, r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    (used,) = [u for u in load(prov)["used"].values() if "dataset/" in u["prov:entity"]]
    assert (used["p4t:batches"]["$"], used["p4t:samples"]["$"]) == ("30", "120")


GAP = """
import torch
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x in (torch.randn(4, 2) for _ in range(5)):  # data from a generator: nothing to identify
    opt.zero_grad(); model(x).sum().backward(); opt.step()
torch.save(model.state_dict(), "model.pt")
"""


def test_a_model_with_no_recorded_training_data_is_a_lineage_gap_said_out_loud(tmp_path: Path):
    r = run(tmp_path, GAP)
    assert r.returncode == 0, r.stderr
    assert "has no recorded training data" in r.stderr and "--data" in r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    (model,) = [e for k, e in load(prov)["entity"].items() if k.startswith("p4t:model/")]
    assert model["p4t:lineageGap"] is True
    up = subprocess.run([*CLI, "lineage", "runs", "model.pt"], capture_output=True, text=True, cwd=tmp_path)
    assert "lineage gap" in up.stdout
    # fine-tuning it later under the default policy: its lineage is unknown, which fails closed
    fine = run(tmp_path, """
        import torch
        torch.load("model.pt")
    """, out="later")
    assert fine.returncode == 0
    denied = subprocess.run([*CLI, "run", "--out", "third", "--policy", "default", "--region", "eu-west-1",
                             "--purpose", "research", "train.py"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert denied.returncode == 1 and "checkpoint-lineage-known" in denied.stderr, denied.stderr


@pytest.mark.parametrize("n", [1])
def test_hashing_budget_says_why_a_dataset_is_unidentified(tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch):
    import torch

    import prov4torch
    from prov4torch.record import identity

    monkeypatch.setattr(identity, "MAX_OBJECTS", 10)

    class Obj:
        def __init__(self, i: int) -> None:
            self.i = i

    class Many(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.items = [Obj(i) for i in range(50)]

        def __len__(self) -> int:
            return 50

    with prov4torch.start_run() as r:
        did = prov4torch.log_dataset(Many(), name="many")
    ent = load(r.prov_path)["entity"][did]
    assert ent["p4t:identity"] == "unidentified" and "budget" in ent["p4t:unidentifiedReason"]


CONFIGURATOR = """
import sys, torch
learning_rate = 6e-4  # the configurator pattern: module-level literals, overridden from the command line
warmup_iters = 4
max_iters = 12
batch_size = 8
for arg in sys.argv[1:]:
    key, val = arg.removeprefix("--").split("=")
    globals()[key] = type(globals()[key])(val)
model = torch.nn.Linear(4, 1)
opt = torch.optim.AdamW(model.parameters(), lr=learning_rate)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: min(1.0, (it + 1) / warmup_iters))
x = torch.randn(batch_size, 4)
for it in range(max_iters):
    opt.zero_grad(); model(x).pow(2).mean().backward(); opt.step(); sched.step()
"""


def test_configurator_settings_and_the_scheduled_learning_rate_are_recorded(tmp_path: Path):
    r = run(tmp_path, CONFIGURATOR, "--learning_rate=0.001", "--max_iters=10")
    assert r.returncode == 0, r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    doc = load(prov)
    params = next(e for k, e in doc["entity"].items() if k.endswith("/params"))
    assert params["param:config.learning_rate"] == {"$": "0.001", "type": "xsd:double"}
    assert params["param:config.max_iters"] == {"$": "10", "type": "xsd:int"}
    assert params["param:config.warmup_iters"] == {"$": "4", "type": "xsd:int"}
    act = next(a for a in doc["activity"].values() if "p4t:status" in a)
    assert sorted(act["p4t:configOverridden"]) == ["learning_rate", "max_iters"]
    (lr,) = [e for e in doc["entity"].values() if e.get("p4t:name") == "optimizer.lr"]
    assert lr["p4t:count"]["$"] == "4"  # warm-up: 0.25, 0.5, 0.75, 1.0 of 0.001, then unchanged: 4 points, not 10
    assert float(lr["p4t:max"]["$"]) == pytest.approx(0.001) and float(lr["p4t:first"]["$"]) == pytest.approx(0.00025)


OPEN_FILES = """
import sys, torch
def load(name):
    with open(f"data/{name}") as fh:
        return torch.tensor([[float(v) for v in line.split(",")] for line in fh])
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
train = load("train.csv")  # read with gradients on, then stepped on: training
for _ in range(5):
    opt.zero_grad(); ((model(train[:, :2]) - train[:, 2:]) ** 2).mean().backward(); opt.step()
with torch.no_grad():
    val = load("val.csv")  # read under no_grad: evaluation
    model(val[:, :2])
torch.save(model.state_dict(), "model.pt")
extra = load("extra.csv")  # read with gradients on, no step after it: evaluated
model(extra[:, :2]).sum()
print("done")
"""


def files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name, n in (("train", 12), ("val", 4), ("extra", 3)):
        (tmp_path / "data" / f"{name}.csv").write_text("\n".join(f"{i},{i % 3},{n * i}" for i in range(n)))


def test_files_opened_under_data_each_get_the_role_their_use_shows(tmp_path: Path):
    files(tmp_path)
    r = run_with(tmp_path, OPEN_FILES, "--data", "data")
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    doc = load(prov)
    roles = sorted((u["p4t:sourceUri"].rsplit("/", 1)[-1], u["prov:role"]["$"]) for u in doc["used"].values()
                   if "dataset/" in u["prov:entity"])
    assert roles == [("extra.csv", "p4t:evaluation"), ("train.csv", "p4t:training"), ("val.csv", "p4t:evaluation")]
    (model,) = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    derived = [d["prov:usedEntity"] for d in doc["wasDerivedFrom"].values() if d["prov:generatedEntity"] == model]
    train_id = next(u["prov:entity"] for u in doc["used"].values() if u.get("p4t:sourceUri", "").endswith("train.csv"))
    assert derived == [train_id]  # the model derives from what it was trained on, not what it was evaluated on


def test_a_testing_only_file_read_with_gradients_on_is_blocked_before_the_script_gets_it(tmp_path: Path):
    files(tmp_path)
    (tmp_path / "tags.toml").write_text(textwrap.dedent("""
        [[dataset]]
        path = "data"
        origin_country = "FR"
        jurisdiction = "EU"
        license = "CC-BY-4.0"
        consent_scope = ["testing"]
    """))
    r = run_with(tmp_path, OPEN_FILES, "--data", "data", "--data-tags", "tags.toml", "--policy", "default",
                 "--region", "eu-west-1", "--purpose", "training")
    assert r.returncode == 1 and "done" not in r.stdout and not (tmp_path / "model.pt").exists(), r.stderr
    # read with gradients on it may be trained on (`input` is judged as training): open() refuses it
    assert "used as input (training)" in r.stderr and "not within the consent scope" in r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    assert rank_activity_status(load(prov)) == "BLOCKED"


def rank_activity_status(doc: dict) -> str:
    (act,) = [a for a in doc["activity"].values() if a.get("p4t:status")]
    return act["p4t:status"]


def test_a_data_folder_of_many_files_is_recorded_whole_past_the_limit(tmp_path: Path):
    from prov4torch.autolog.reads import MAX_FILES_PER_DIR

    (tmp_path / "data").mkdir()
    n = MAX_FILES_PER_DIR + 20
    for i in range(n):
        (tmp_path / "data" / f"{i:04d}.txt").write_text(str(i))
    script = f"""
import torch
model = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for i in range({n}):
    x = torch.tensor([[float(open(f"data/{{i:04d}}.txt").read())]])
    opt.zero_grad(); model(x).sum().backward(); opt.step()
"""
    r = run_with(tmp_path, script, "--data", "data")
    assert r.returncode == 0, r.stderr
    assert f"more than {MAX_FILES_PER_DIR} files read" in r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    uses = [u for u in load(prov)["used"].values() if "dataset/" in u["prov:entity"]]
    assert len(uses) == MAX_FILES_PER_DIR + 1  # each file up to the limit, then the folder
    folder = [u for u in uses if u["p4t:sourceUri"].endswith("/data")]
    assert len(folder) == 1 and folder[0]["p4t:reads"]["$"] == "20" and folder[0]["prov:role"]["$"] == "p4t:training"


IMAGES = """
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

class Folder(Dataset):  # opens its images in __getitem__: the dataset stands for them
    def __init__(self, root):
        self.root = root
        self.names = ["a.png", "b.png"]
    def __len__(self):
        return 2
    def __getitem__(self, i):
        with Image.open(f"{self.root}/{self.names[i]}") as im:
            return torch.tensor(list(im.getdata()), dtype=torch.float32).mean().reshape(1)

model = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
with Image.open("direct/train.png") as im:  # an image the script opens itself, then trains on
    x = torch.tensor(list(im.getdata()), dtype=torch.float32).mean().reshape(1, 1)
opt.zero_grad(); model(x).sum().backward(); opt.step()
for b in DataLoader(Folder("folder"), batch_size=2):
    opt.zero_grad(); model(b).sum().backward(); opt.step()
print("done")
"""


def test_images_opened_with_pil_are_data_and_a_datasets_own_images_are_not_counted_twice(tmp_path: Path):
    from PIL import Image

    for d, names in (("direct", ["train.png"]), ("folder", ["a.png", "b.png"])):
        (tmp_path / d).mkdir()
        for i, n in enumerate(names):
            Image.new("L", (4, 4), color=40 * (i + 1)).save(tmp_path / d / n)
    r = run_with(tmp_path, IMAGES)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    doc = load(prov)
    uses = [(u.get("p4t:sourceUri", "").rsplit("/", 2)[-2:], u["prov:role"]["$"]) for u in doc["used"].values()
            if "dataset/" in u["prov:entity"]]
    files = [tuple(p) for p, _ in uses if len(p) == 2 and p[1].endswith(".png")]
    assert files == [("direct", "train.png")], uses  # the folder dataset's images are not separate datasets
    assert (["direct", "train.png"], "p4t:training") in uses


BY_HAND = """
import torch
from torch.utils.data import DataLoader, TensorDataset
train = TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
test = TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
model = torch.nn.Linear(3, 1)
for x, y in DataLoader(train, batch_size=4):  # unshuffled, no optimizer: weights updated by hand
    model.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p.grad
for x, y in DataLoader(test, batch_size=4):  # read with gradients on, never backpropagated: evaluated
    ((model(x) - y) ** 2).mean()
torch.save(model.state_dict(), "model.pt")
"""


def test_a_loop_that_updates_weights_by_hand_is_training_its_backward_passes_are_the_steps(tmp_path: Path):
    r = run(tmp_path, BY_HAND)
    assert r.returncode == 0, r.stderr
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    roles = sorted(u["prov:role"]["$"] for u in doc["used"].values() if "dataset/" in u["prov:entity"])
    assert roles == ["p4t:evaluation", "p4t:training"], roles
    (model,) = [g["prov:entity"] for g in doc["wasGeneratedBy"].values() if g["prov:entity"].startswith("p4t:model/")]
    (trained,) = [u["prov:entity"] for u in doc["used"].values() if u["prov:role"]["$"] == "p4t:training"]
    derived = {d["prov:usedEntity"] for d in doc["wasDerivedFrom"].values() if d["prov:generatedEntity"] == model}
    assert derived == {trained}
