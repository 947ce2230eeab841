"""Nothing documented can rot (issue 21): every fenced block in the README, docs/ and the MNIST example's README
is run here (placeholders bound to a real run), checked against what the code writes, or says why it is not run.

A new or changed block fails ``test_every_documented_block_is_run_or_says_why_not`` until it is given a plan.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

import prov4torch
from prov4torch.events import STATUSES

DOCUMENTS = ["README.md", "docs/cli.md", "docs/design-notes.md", "docs/vocabulary.md", "docs/openlineage.md",
             "examples/mnist/README.md"]
BIN = Path(sys.executable).parent  # the environment's own `prov4torch` console script


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        first = next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")
        return self.doc, first[:60]


def blocks() -> list[Block]:
    out = []
    for doc in DOCUMENTS:
        lines = (ROOT / doc).read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^```(\w*)\s*$", lines[i])
            if m:
                j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
                out.append(Block(doc, i + 1, m.group(1), "\n".join(lines[i + 1:j])))
                i = j
            i += 1
    return out


def _by_key(doc: str, first: str) -> Block:
    (b,) = [b for b in blocks() if b.doc == doc and b.key[1].startswith(first[:60])]
    return b


# (document, first line of the block) -> what runs it, or why it is not run
PLAN: dict[tuple[str, str], str] = {
    ("README.md", "bash scripts/bootstrap.sh && .venv/bin/prov4torch run --out runs --experiment"):
        "not run here: it builds a fresh .venv; .ci/run runs it verbatim (test_docs checks CI runs both commands)",
    ("README.md", "bash scripts/bootstrap.sh && .venv/bin/python -m pytest"):
        "not run here: it is this test suite; .ci/run runs it verbatim",
    ("README.md", "import prov4torch"): "run: test_the_readme_api_example_runs",
    ("README.md", "prov4torch check run-dir/rank-0.prov.json --policy default   # was"):
        "run: test_the_readme_commands_run_on_a_real_run",
    ("README.md", '"p4t:run/01a2054d-.../rank/0": {"prov:startTime": "2026-11-2'):
        "checked: test_the_readme_excerpt_names_what_a_run_writes",
    ("README.md", "<out_dir>/<experiment>/<run_id>/"): "checked: test_the_readme_layout_is_what_a_run_leaves",
    ("README.md", 'with prov4torch.start_run(policy="default", region="us-east-1", p'):
        "run: test_the_readme_policy_example_blocks_before_the_first_batch",
    ("docs/openlineage.md", "{"): "checked: test_docs.py::test_the_openlineage_facet_schemas_in_the_docs_are_the_ones"
                                  "_the_package_checks_with",
    ("examples/mnist/README.md", "# one process, the policy enforced, the audit graph drawn"):
        "run: test_the_mnist_readme_commands_run (the first command, on tiny IDX data); the two-rank and blocked "
        "variants: test_example_mnist.py::test_two_gloo_ranks, ::test_blocked_variant_never_trains",
    ("examples/mnist/README.md", "RUN=runs/mnist/<run_id>"): "run: test_the_mnist_readme_commands_run",
}
PLAN = {(doc, first[:60]): why for (doc, first), why in PLAN.items()}
SYNOPSES = "docs/cli.md"  # every block there is a command's synopsis: test_cli_synopses_name_only_real_options


def test_every_documented_block_is_run_or_says_why_not():
    found = blocks()
    unplanned = [f"{b.doc}:{b.line}: {b.key[1]!r}" for b in found if b.doc != SYNOPSES and b.key not in PLAN]
    assert unplanned == [], "give each new documented block a plan in PLAN"
    stale = [k for k in PLAN if k not in {b.key for b in found}]
    assert stale == [], "PLAN names blocks that are no longer in the docs"
    assert len([b for b in found if b.doc == "docs/openlineage.md"]) == 2


# -- the README's API examples ------------------------------------------------------------------------------------

PRELUDE = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
train_set = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
loader = DataLoader(train_set, batch_size=8)
calls = []
class Counting(nn.Linear):
    def forward(self, x):
        calls.append(x)
        return super().forward(x)
model = Counting(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
def train_step(x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()
'''


@pytest.fixture
def quiet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "runs"
    for name, value in (("PROV4TORCH_DIR", str(root)), ("PROV4TORCH_ENERGY", "0"),
                        ("PROV4TORCH_SYSTEM_METRICS", "0")):
        monkeypatch.setenv(name, value)
    return root


def _example(first_line: str) -> str:
    return _by_key("README.md", first_line).text


def test_the_readme_api_example_runs(quiet_env: Path):
    scope: dict[str, object] = {}
    exec(PRELUDE + _example("import prov4torch"), scope)
    run = scope["run"]
    assert run.status == "FINISHED"  # type: ignore[attr-defined]
    doc = json.loads(Path(run.prov_path).read_text())  # type: ignore[attr-defined]
    datasets = [e for k, e in doc["entity"].items() if k.startswith("p4t:dataset/sha256-")]
    assert datasets and datasets[0]["p4t:originCountry"] == "DE"
    assert any(k.startswith("p4t:model/") for k in doc["entity"])
    assert "loss" in {e.get("p4t:name") for e in doc["entity"].values()}


def test_the_readme_layout_is_what_a_run_leaves(quiet_env: Path):
    scope: dict[str, object] = {}
    exec(PRELUDE + _example("import prov4torch"), scope)
    run_dir = Path(scope["run"].dir)  # type: ignore[attr-defined]
    layout = _by_key("README.md", "<out_dir>/<experiment>/<run_id>/").text.splitlines()
    assert run_dir.parent.parent == quiet_env and run_dir.parent.name == "mnist"
    names = [ln.split()[0] for ln in layout[1:]]
    assert names == ["rank-0.journal.jsonl", "rank-0.metrics.csv", "rank-0.packages.txt", "rank-0.prov.json",
                     "models/"]
    for name in names:
        assert (run_dir / name.rstrip("/")).exists(), name
    assert any((run_dir / "models").iterdir())


def test_the_readme_policy_example_blocks_before_the_first_batch(quiet_env: Path):
    scope: dict[str, object] = {}
    with pytest.raises(prov4torch.PolicyViolation):
        exec(PRELUDE + "import prov4torch\n" + _example('with prov4torch.start_run(policy="default", region'),
             scope)
    assert scope["calls"] == []  # "never reached"
    (prov,) = quiet_env.glob("*/*/rank-0.prov.json")
    (act,) = [a for a in json.loads(prov.read_text())["activity"].values() if a.get("p4t:runId")]
    assert act["p4t:status"] == "BLOCKED"


def test_the_readme_statuses_are_the_ones_the_code_writes():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Run statuses"):text.index("## Configuration")]
    assert re.findall(r"^\| ([A-Z]+) \|", table, re.M) == list(STATUSES)


# -- the README's commands, verbatim, on a real run -----------------------------------------------------------------

SCRIPT = '''
import torch, safetensors.torch
from pathlib import Path
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import prov4torch
torch.manual_seed(0)
data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
net = nn.Linear(4, 2)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
loader = prov4torch.track(DataLoader(data, batch_size=8, shuffle=True), name="tiny", dataset_id="tiny",
                          origin_country="DE", jurisdiction="EU", personal_data=False,
                          consent_scope=["training"], license="CC0-1.0")
for x, y in loader:
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
Path("out").mkdir(exist_ok=True)
safetensors.torch.save_file(net.state_dict(), "out/model.safetensors")
'''


def _cli_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "XDG_CONFIG_HOME": str(tmp / "cfg"),
            "PROV4TORCH_ENERGY": "0", "PROV4TORCH_SYSTEM_METRICS": "0"}


def _record(tmp: Path, env: dict[str, str]) -> Path:
    (tmp / "train.py").write_text(SCRIPT)
    before = set((tmp / "runs").glob("e/*"))
    r = subprocess.run(["prov4torch", "run", "--out", "runs", "--experiment", "e", "--region", "eu-west-1",
                        "--purpose", "training", "train.py"], cwd=tmp, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = set((tmp / "runs").glob("e/*")) - before
    return run_dir


def _sh(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_readme_commands_run_on_a_real_run(tmp_path: Path):
    pytest.importorskip("safetensors")
    env = _cli_env(tmp_path)
    run_dir = _record(tmp_path, env)
    (tmp_path / "run-dir").symlink_to(run_dir)
    lines = _by_key("README.md", "prov4torch check run-dir/rank-0.prov.json --policy default   # was").text
    got = {}
    for line in lines.splitlines():
        got[line.split()[1]] = r = _sh(line, tmp_path, env)  # verbatim: comments and all
        assert "Traceback" not in r.stderr, line
    assert got["check"].returncode == 0 and "ALLOW" in got["check"].stdout, got["check"]
    assert got["lineage"].returncode == 0 and "tiny" in got["lineage"].stdout, got["lineage"]
    assert got["recover"].returncode == 0, got["recover"]
    # `keys init` made the key; the run above was recorded before it, so verify says it is not signed (1)...
    assert (tmp_path / "cfg" / "prov4torch").is_dir() and got["keys"].returncode == 1, got["keys"]
    assert "sign" in (got["keys"].stdout + got["keys"].stderr).lower()
    # ... and a run recorded from now on is signed and verifies
    signed = _record(tmp_path, env)
    assert _sh(f"prov4torch verify {signed}", tmp_path, env).returncode == 0
    assert got["export"].returncode == 0 and json.loads((tmp_path / "bom.json").read_text())["bomFormat"] == "CycloneDX"
    assert got["report"].returncode == 0 and (tmp_path / "report.html").stat().st_size > 1000


def test_the_readme_excerpt_names_what_a_run_writes(tmp_path: Path):
    env = _cli_env(tmp_path)
    (tmp_path / "train.py").write_text(SCRIPT.replace("import torch, safetensors.torch", "import torch")
                                       .replace('safetensors.torch.save_file(net.state_dict(), "out/model.safetensors")',
                                                ""))
    run_dir = _record(tmp_path, env)
    written = (run_dir / "rank-0.prov.json").read_text()
    excerpt = _by_key("README.md", '"p4t:run/01a2054d-.../rank/0": {"prov:startTime": "2026-11-2').text
    terms = set(re.findall(r'"((?:p4t|prov|mls):[A-Za-z]+)"', excerpt))
    assert {"p4t:status", "p4t:computeRegion", "p4t:originCountry", "mls:Run", "mls:Dataset"} <= terms
    assert [t for t in terms if f'"{t}"' not in written] == []


# -- the MNIST example's README ---------------------------------------------------------------------------------------

def test_the_mnist_readme_commands_run(tmp_path: Path):
    import torch
    from test_example_mnist import write_idx

    data = tmp_path / "idx"
    data.mkdir()
    for split, n in (("train", 200), ("t10k", 60)):
        write_idx(data / f"{split}-images-idx3-ubyte.gz", torch.randint(0, 255, (n, 28, 28)))
        write_idx(data / f"{split}-labels-idx1-ubyte.gz", torch.randint(0, 10, (n,)))
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "prov4torch").symlink_to(BIN / "prov4torch")
    env = _cli_env(tmp_path)
    run_cmd = _by_key("examples/mnist/README.md", "# one process, the policy enforced, the audit graph drawn").text
    first = run_cmd.split("\n\n")[0].replace("\\\n", " ")  # the first documented command, on tiny data
    r = _sh(first + f" --data-dir {data} --epochs 1", tmp_path, env)
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs" / "mnist").iterdir()
    doc = json.loads((run_dir / "rank-0.prov.json").read_text())
    model = next(k for k in doc["entity"] if k.startswith("p4t:model/weights-sha256-"))  # as the README writes it
    dataset = next(k for k, e in doc["entity"].items() if k.startswith("p4t:dataset/") and
                   "training" in json.dumps([u for u in doc["used"].values() if u["prov:entity"] == k]))
    audit = _by_key("examples/mnist/README.md", "RUN=runs/mnist/<run_id>").text
    audit = (audit.replace("<run_id>", run_dir.name).replace("p4t:model/weights-sha256-<digest>", model)
             .replace("<dataset digest>", dataset))
    for line in audit.splitlines()[1:]:
        r = _sh(audit.splitlines()[0] + "; " + line, tmp_path, env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (line, r.stdout[-500:], r.stderr[-1000:])
        if " lineage " in line and "--down" in line:
            assert model in r.stdout or "mnist" in r.stdout, r.stdout
        elif " lineage " in line:
            assert "record(s)" in r.stdout and "dataset" in r.stdout, r.stdout
    assert (tmp_path / "run.svg").stat().st_size > 1000
    assert list((tmp_path / "checkpoints").glob("mnist-epoch*.pt.lineage.json"))  # "their lineage cards go beside them"
    assert (tmp_path / "runs" / ".lineage" / "index.sqlite").is_file()


# -- docs/cli.md: each synopsis names only options its command has --------------------------------------------------

def test_cli_synopses_name_only_real_options():
    synopses = [b for b in blocks() if b.doc == SYNOPSES]
    assert len(synopses) >= 14
    env = _cli_env(Path("/nonexistent"))
    for b in synopses:
        for line in b.text.splitlines():
            m = re.match(r"\s*prov4torch ((?:index |keys )?[a-z-]+)", line)
            if not m:
                continue
            help_text = subprocess.run(["prov4torch", *m.group(1).split(), "--help"], env=env, capture_output=True,
                                       text=True, timeout=60, check=True).stdout
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", line.split("#")[0]):
                assert option in help_text, f"{b.doc}:{b.line}: {m.group(1)} has no {option}"
