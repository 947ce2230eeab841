"""Hostile input, round two (issue 24): special files never hang a reader, secrets at any depth never reach a
file, a signal at any moment of a slow flush never deadlocks, unreadable data never opens the gate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import load, rank_activity

import prov4torch

CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=timeout)


def special(path: Path, kind: str) -> None:
    """Make ``path`` a special entry of ``kind``."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "dangling":
        path.symlink_to("nowhere")
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        raise AssertionError(kind)


SPECIAL = ["fifo", "socket", "loop", "dangling", "zero"]

READS_DATA = """
import csv
rows = [r for r in csv.reader(open("data/a.csv"))]
print("read", len(rows))
"""


@pytest.mark.parametrize("kind", SPECIAL)
def test_an_unreadable_entry_in_a_tagged_data_folder_never_opens_the_gate(tmp_path: Path, kind: str):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1,2\n3,4\n")
    special(tmp_path / "data" / "x", kind)
    (tmp_path / "tags.toml").write_text(textwrap.dedent("""
        [[dataset]]
        path = "data"
        origin_country = "DE"
        jurisdiction = "EU"
        personal_data = true
        license = "CC-BY-4.0"
        consent_scope = ["training"]
    """))
    (tmp_path / "train.py").write_text(READS_DATA)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "us-east-1", "--purpose", "training",
            "--data", "data", "--data-tags", "tags.toml", "train.py", timeout=90)
    assert r.returncode == 1, r.stderr
    assert "read" not in r.stdout and "eu-personal-data-stays-in-eu" in r.stderr
    (rank0,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    doc = load(rank0)
    assert rank_activity(doc)["p4t:status"] == "BLOCKED"
    # the file the script opened is recorded by its own content (and carries the folder's tags)
    (ds,) = [e for e in doc["entity"].values() if e.get("p4t:originCountry") == "DE"]
    assert ds["p4t:identity"] == "content"
    # the folder as a whole (past the per-file limit, or given to the API) is unidentified, and still gated
    prov4torch.load_tags(tmp_path / "tags.toml")
    with pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        with prov4torch.start_run(out_dir=tmp_path / "api", region="us-east-1", purpose="training",
                                  policy="default") as run:
            prov4torch.log_dataset(tmp_path / "data")
    (folder,) = [e for e in load(run.prov_path)["entity"].values() if e.get("p4t:unidentifiedReason")]
    assert folder["p4t:identity"] == "unidentified" and "/data/x" in folder["p4t:unidentifiedReason"]


@pytest.mark.parametrize("kind", ["fifo", "socket", "zero"])
def test_special_files_given_to_readers_are_refused_at_once(tmp_path: Path, kind: str):
    target = tmp_path / "thing.prov.json"
    special(target, kind)
    exports = [["export", str(target), "--format", fmt, "-o", f"out.{fmt}"]
               for fmt in ("cyclonedx", "spdx", "openlineage", "prov-o", "prov-o-jsonld", "prov-o-turtle")]
    for args in (["check", str(target), "--policy", "default"], ["validate", str(target)], ["show", str(target)],
                 ["lineage", str(target), "p4t:x"], ["render", str(target), "-o", "g.svg"],
                 ["merge", str(target), "-o", "m.json"], ["report", str(target), "-o", "r.html"], *exports):
        r = cli(tmp_path, *args, timeout=30)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "not a regular file" in r.stderr or "cannot read" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    tags = tmp_path / "tags.toml"
    special(tags, kind)
    with pytest.raises(prov4torch.ConfigError, match="not a regular file|cannot read"):
        prov4torch.load_tags(tags)


def test_recover_refuses_a_journal_that_is_a_fifo(tmp_path: Path):
    run_dir = tmp_path / "runs" / "x" / "r1"
    run_dir.mkdir(parents=True)
    special(run_dir / "rank-0.journal.jsonl", "fifo")
    r = cli(tmp_path, "recover", str(run_dir), timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


# -- secrets at any depth ----------------------------------------------------------------------------------

PLANTED = ["wandb-key-7f3a9c1e5b", "hunter2-in-a-url", "s3cr3t-in-a-dataclass", "ns-token-value-42", "repr-pw-77"]

SECRETS_SCRIPT = """
import argparse, dataclasses, prov4torch

@dataclasses.dataclass
class Db:
    host: str
    password: str

class Opaque:
    def __repr__(self):
        return "Opaque(api_key=repr-pw-77, user=me)"

prov4torch.log_params({
    "config": {"wandb": {"api_key": "wandb-key-7f3a9c1e5b", "project": "demo"}, "layers": [1, 2]},
    "db": Db("localhost", "s3cr3t-in-a-dataclass"),
    "ns": argparse.Namespace(lr=0.1, hf_token="ns-token-value-42"),
    "opaque": Opaque(),
})
prov4torch.set_tag("deep", [{"auth": {"secret": "wandb-key-7f3a9c1e5b"}}])
raise RuntimeError("cannot reach https://alice:hunter2-in-a-url@db.example/x")
"""


def test_secrets_at_any_depth_never_reach_any_file_a_run_writes(tmp_path: Path):
    (tmp_path / "train.py").write_text(SECRETS_SCRIPT)
    r = cli(tmp_path, "run", "--out", "runs", "train.py")
    assert r.returncode == 1 and "RuntimeError" in r.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/*/")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"rank-0.journal.jsonl", "rank-0.prov.json", "run.prov.json"}
    for p in files:
        text = p.read_bytes().decode("utf-8", "replace")
        for secret in PLANTED:
            assert secret not in text, f"{secret} written in clear to {p.name}"
    act = rank_activity(load(run_dir / "rank-0.prov.json"))
    assert act["p4t:status"] == "FAILED" and "<redacted>@db.example" in act["p4t:exceptionMessage"]
    params = [e for e in load(run_dir / "rank-0.prov.json")["entity"].values() if "param:config" in e]
    assert params and "demo" in params[0]["param:config"] and "localhost" in params[0]["param:db"]  # what is not secret is kept


# -- a signal at any moment of a slow flush --------------------------------------------------------------

SLOW_FLUSH = """
import os, sys, threading, time, signal
import prov4torch
real_fsync = os.fsync
def slow_fsync(fd):  # a slow file system (the hardware boundary)
    time.sleep(0.3)
    real_fsync(fd)
os.fsync = slow_fsync
run = prov4torch.start_run(out_dir=sys.argv[2])
delay = float(sys.argv[1])
threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
for i in range(200):
    prov4torch.log_metric("loss", 1.0 / (i + 1), step=i)
    prov4torch.flush()
print("not killed")
"""


@pytest.mark.parametrize("delay", [0.05, 0.25, 0.45, 0.8])
def test_sigterm_inside_a_slow_flush_never_deadlocks_and_ends_killed(tmp_path: Path, delay: float):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_FLUSH)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(script), str(delay), str(out)], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == -signal.SIGTERM, (r.returncode, r.stderr)
    assert "not killed" not in r.stdout
    (prov,) = out.glob("*/*/rank-0.prov.json")
    act = rank_activity(load(prov))
    assert act["p4t:status"] == "KILLED" and act["p4t:exitSignal"] == "SIGTERM" if "p4t:exitSignal" in act \
        else act["p4t:status"] == "KILLED"


def test_a_yaml_alias_bomb_in_a_dataset_card_is_refused_at_once(tmp_path: Path):
    pytest.importorskip("yaml")
    bomb = "---\nlicense: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 12):
        bomb += f"l{i}: &{chr(97 + i)} [*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, " \
                f"*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}]\n"
    bomb += "source_datasets: *l\n---\n# card\n"
    (tmp_path / "README.md").write_text(bomb)
    with pytest.raises(prov4torch.ConfigError, match=r"README.md: .*alias"):
        prov4torch.load_tags(tmp_path / "README.md")
    (tmp_path / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    with pytest.raises(prov4torch.ConfigError, match=r"README.md: the front matter is not YAML \(line \d+") as info:
        prov4torch.load_tags(tmp_path / "README.md")
    assert "\n" not in str(info.value)


# -- index commands: one line naming the file, never "internal error" --------------------------------------------

def small_store(tmp_path: Path) -> Path:
    import torch

    store = tmp_path / "store"
    data = tmp_path / "d.bin"
    data.write_bytes(b"d" * 32)
    with prov4torch.start_run(out_dir=store):
        prov4torch.log_dataset(data, consent_scope=["training"])
        prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    return store


@pytest.mark.foreign_prov
def test_index_rebuild_errors_are_one_line_naming_the_file(tmp_path: Path):
    store = small_store(tmp_path)
    index = store / ".lineage" / "index.sqlite"
    (prov,) = store.glob("*/*/rank-0.prov.json")
    original = prov.read_text()
    for case in ("corrupt", "directory", "bad-expiry", "fifo"):
        prov.write_text(original)
        if index.is_dir():
            index.rmdir()
        elif os.path.lexists(index):
            index.unlink()
        if case == "corrupt":
            index.write_text("not a database")
        elif case == "directory":
            index.mkdir()
        elif case == "bad-expiry":
            doc = json.loads(original)
            for ent in doc["entity"].values():
                if "p4t:consentScope" in ent:
                    ent["p4t:consentExpires"] = "yesterday"
            prov.write_text(json.dumps(doc))
        else:
            os.mkfifo(store / "x.prov.json")
        r = cli(tmp_path, "index", "rebuild", str(store), timeout=30)
        assert r.returncode == 2, (case, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "internal error" not in r.stderr and "Traceback" not in r.stderr, (case, r.stderr)
        named = {"corrupt": "index.sqlite", "directory": "index.sqlite", "bad-expiry": "rank-0.prov.json",
                 "fifo": "x.prov.json"}[case]
        assert named in lines[0], (case, lines[0])


# -- the lineage index under concurrent writers (issue 29, item 1) ----------------------------------------------

WRITER = """
import sys
from pathlib import Path
from prov4torch.governance.lineage import LineageIndex
root, me, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
index = LineageIndex(root)
for i in range(n):
    digest = f"{me:032x}{i:032x}"
    index.put({"model": f"p4t:model/{me}-{i}", "sha256": digest, "keys": [digest], "governance": {},
               "upstream": {}, "derivations": []})
"""


def test_sixteen_concurrent_writers_lose_no_index_row(tmp_path: Path):
    (tmp_path / "writer.py").write_text(WRITER)
    store = tmp_path / "store"
    store.mkdir()
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(store), str(w), "100"],
                              stderr=subprocess.PIPE, text=True) for w in range(16)]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for e in errors if e]
    import sqlite3

    con = sqlite3.connect(store / ".lineage" / "index.sqlite")
    try:
        assert con.execute("SELECT COUNT(*) FROM cards").fetchone()[0] == 1600
    finally:
        con.close()


@pytest.mark.parametrize("name, text", [
    ("tags.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("card.jsonld", '{"@context": {}, "x": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    ("big.toml", "\n".join(f"k{i} = {i}" for i in range(400_000))),
])
def test_a_tags_file_nested_too_deeply_or_too_large_is_one_line_before_the_script(tmp_path: Path, name: str,
                                                                                  text: str):
    (tmp_path / name).write_text(text)
    (tmp_path / "train.py").write_text("print('ran')\n")
    r = cli(tmp_path, "run", "--out", "runs", "--data-tags", name, "train.py", timeout=60)
    assert r.returncode == 2 and "ran" not in r.stdout and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr


# -- a signal at many moments inside torch.save (and its recording) and inside the policy gate -----------------------

SIGNALLED = """
import os, sys, threading, signal
import torch
from torch.utils.data import DataLoader, TensorDataset
import prov4torch
where, delay = sys.argv[1], float(sys.argv[2])
threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
g = torch.Generator().manual_seed(0)
for i in range(400):
    if where == "save":  # the patched torch.save: the save, then hashing and recording the checkpoint
        torch.save({"w": torch.randn(256, 1024, generator=g)}, f"ckpt-{i % 3}.pt")
    else:  # a new dataset each time: identified, checked by the policy, gated before every batch
        data = TensorDataset(torch.randn(2048, 64, generator=g))
        for (x,) in prov4torch.track(DataLoader(data, batch_size=256), name=f"d{i}", origin_country="DE",
                                     jurisdiction="EU", personal_data=False, consent_scope=["training"],
                                     license="CC-BY-4.0"):
            pass
print("not killed", flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45, 0.8, 1.2])
@pytest.mark.parametrize("where", ["save", "gate"])
def test_sigterm_inside_torch_save_or_the_gate_never_deadlocks_and_ends_killed(tmp_path: Path, where: str,
                                                                              delay: float):
    (tmp_path / "sig.py").write_text(SIGNALLED)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "sig.py", where, str(delay), timeout=60)
    assert r.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), (r.returncode, r.stderr[-2000:])  # as the signal would
    assert "not killed" not in r.stdout and "Traceback" not in r.stderr
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    assert rank_activity(load(prov))["p4t:status"] == "KILLED"


# -- a signal at exact points inside the recorder: while the run starts, while it holds a lock -----------------------

FIRE = """
seen = [0]
def fire(frame, event, arg):  # the signal arrives at the k-th call made in (or into) the function named target
    if event in ("call", "c_call") and frame.f_code.co_name == target and "prov4torch" in frame.f_code.co_filename:
        seen[0] += 1
        if seen[0] == k:
            sys.setprofile(None)
            open("fired", "w").close()
            os.kill(os.getpid(), signal.SIGTERM)
sys.setprofile(fire)
"""

AT_POINT = """
import os, sys, signal
target, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import torch
from torch.utils.data import DataLoader, TensorDataset
import prov4torch
""" + FIRE + """run = prov4torch.start_run(out_dir=out, purpose="training", policy="default")
data = TensorDataset(torch.randn(64, 4))
prov4torch.log_dataset(data, name="d", origin_country="DE", jurisdiction="EU", consent_scope=["training"],
                       license="CC-BY-4.0")
for step, (x,) in enumerate(DataLoader(data, batch_size=16, shuffle=True)):
    for name in ("loss", "acc", "lr"):
        prov4torch.log_metric(name, float(x.sum()), step)
    prov4torch.flush()
sys.setprofile(None)
print("not killed", flush=True)
"""


@pytest.mark.parametrize(("target", "k"), [
    ("add_series", 1), ("add_series", 2),  # a new series: the writer's lock held (a sampler waits for it too)
    ("_open_files", 1), ("create", 1), ("_start", 1), ("_start", 3), ("attach", 2), ("install", 3),
    ("identify", 3), ("identify", 10), ("note", 1), ("_held", 1), ("_held", 30),  # a dataset noted; a flush
])
def test_a_signal_at_any_point_inside_the_recorder_ends_the_run_killed_with_its_record(tmp_path: Path, target: str,
                                                                                     k: int):
    (tmp_path / "at.py").write_text(AT_POINT)
    env = {**os.environ, "PROV4TORCH_SYSTEM_METRICS": "1", "PROV4TORCH_SAMPLE_INTERVAL": "0.05"}
    # (it waited 30 s or more on itself inside add_series; inside the start it died without a record)
    r = subprocess.run([sys.executable, "at.py", target, str(k), "out"], capture_output=True, text=True, timeout=25,
                       cwd=tmp_path, env=env)
    assert (tmp_path / "fired").exists(), f"no call {k} in {target}: the point moved; pick another"
    assert r.returncode == -signal.SIGTERM, (r.returncode, r.stderr[-2000:])
    assert "not killed" not in r.stdout
    (prov,) = (tmp_path / "out").glob("*/*/rank-0.prov.json")
    assert rank_activity(load(prov))["p4t:status"] == "KILLED"


AT_POINT_RUN = """
import os, sys, signal
target, k, sig = sys.argv[1], int(sys.argv[2]), sys.argv[3]
""" + FIRE.replace("signal.SIGTERM", "getattr(signal, sig)") + """from prov4torch_cli.app import main
sys.argv = ["prov4torch", "run", "--out", "runs", "script.py"]
main()
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(("target", "k"), [("_open_files", 1), ("_start", 3), ("started", 1)])
def test_a_signal_while_prov4torch_run_starts_the_run_ends_it_killed_before_the_script(tmp_path: Path, target: str,
                                                                                      k: int, sig: str):
    (tmp_path / "at.py").write_text(AT_POINT_RUN)
    (tmp_path / "script.py").write_text("print('the script ran')\n")
    r = subprocess.run([sys.executable, "at.py", target, str(k), sig], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert (tmp_path / "fired").exists(), f"no call {k} in {target}: the point moved; pick another"
    number = getattr(signal, sig)
    assert r.returncode in (-number, 128 + number) and "the script ran" not in r.stdout, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and f"exit code {128 + number}" in r.stderr, r.stderr  # (Ctrl-C: a bare
    # KeyboardInterrupt line, as python prints it; it showed prov4torch's frame)
    (prov,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    assert rank_activity(load(prov))["p4t:status"] == "KILLED"


class _Booby:
    """An object that raises whatever is asked of it (its class too)."""

    def __getattribute__(self, name: str):
        raise RuntimeError(f"boom {name}")


class _HoldsABooby(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.trap, self.x = _Booby(), torch.arange(6.0).reshape(3, 2)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        return self.x[i]


def test_a_dataset_holding_an_object_that_raises_when_looked_at_never_stops_training(tmp_path: Path):
    """Identity, parts and shared memory look at a dataset's members: one that raises is not content we can name
    (unidentified, said once), never an exception in the script -- and never a way round the policy."""
    with prov4torch.start_run(out_dir=tmp_path / "free") as run:
        prov4torch.log_dataset(torch.utils.data.TensorDataset(torch.zeros(4)), consent_scope=["training"],
                               origin_country="DE", jurisdiction="EU", license="MIT")
        data = _HoldsABooby()
        prov4torch.log_dataset(data, name="trap")
        model = torch.nn.Linear(2, 1)
        for batch in torch.utils.data.DataLoader(data, batch_size=2):
            model(batch).sum().backward()
    assert run.status == "FINISHED"
    (entity,) = [e for e in load(run.prov_path)["entity"].values() if e.get("p4t:identity") == "unidentified"]
    assert "boom" in entity["p4t:unidentifiedReason"]
    with pytest.raises(prov4torch.PolicyViolation, match="required-tags"):
        with prov4torch.start_run(out_dir=tmp_path / "gated", region="eu-west-1", purpose="training",
                                  policy="default"):
            for batch in torch.utils.data.DataLoader(_HoldsABooby(), batch_size=2):
                batch.sum()


@pytest.mark.parametrize("call", [
    lambda: prov4torch.log_params({"cfg": {"inner": _Booby()}}),
    lambda: prov4torch.log_param("x", _Booby()),
    lambda: prov4torch.log_metric("loss", _Booby()),
    lambda: prov4torch.log_model(_Booby()),
    lambda: prov4torch.log_dataset(torch.utils.data.TensorDataset(torch.zeros(2)), origin_country=_Booby()),
    lambda: prov4torch.set_tags({"team": _Booby()}),
], ids=["params", "param", "metric", "model", "tag", "run-tags"])
def test_an_api_value_that_raises_when_looked_at_is_a_clear_error_and_the_run_goes_on(tmp_path: Path, call):
    with prov4torch.start_run(out_dir=tmp_path) as run:
        with pytest.raises(prov4torch.InvalidValueError, match="could not be read .RuntimeError: boom"):
            call()
        prov4torch.log_metric("loss", 0.5, step=0)
    assert run.status == "FINISHED"


def test_the_walk_for_shared_memory_is_bounded_and_finds_what_sits_beside_a_huge_list():
    """4 million objects in a list of lists beside a tensor: the walk looks at a bounded number of objects, holds a
    bounded queue (not a reference to each of them), and still finds the tensor (breadth first)."""
    import tracemalloc

    from prov4torch.record.sharedmem import buffers

    class Holder:
        pass

    holder = Holder()
    holder.rows = [[object() for _ in range(2000)] for _ in range(2000)]
    holder.x = torch.zeros(3)
    tracemalloc.start()
    try:
        found = buffers(holder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [b.owner is holder.x for b in found] == [True]
    assert peak < 20 << 20, peak  # a reference per object would be hundreds of MB


LOOP_TAGS = """
[[dataset]]
path = "data/**"
origin_country = "DE"
jurisdiction = "EU"
license = "CC-BY-4.0"
"""

COPIES = """
import shutil, prov4torch
shutil.copy("data/sub/f0.csv", "elsewhere.csv")
prov4torch.log_dataset("elsewhere.csv")
print("done")
"""


def test_a_path_rule_over_a_tree_with_symlink_loops_loads_at_once(tmp_path: Path):
    """Binding a path rule's content followed symlinked folders (``glob('**')``): three loops in a data folder
    held ``prov4torch run`` for minutes before the script started. It walks the folder once now."""
    sub = tmp_path / "data" / "sub"
    sub.mkdir(parents=True)
    (sub / "f0.csv").write_text("1,2\n")
    for name in "abc":
        (tmp_path / "data" / name).symlink_to(".")
    (tmp_path / "tags.toml").write_text(LOOP_TAGS)
    (tmp_path / "train.py").write_text(COPIES)
    r = cli(tmp_path, "run", "--out", "runs", "--data-tags", "tags.toml", "train.py", timeout=60)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    (rank0,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    (ds,) = [e for e in load(rank0)["entity"].values() if e.get("p4t:originCountry")]
    assert ds["p4t:jurisdiction"] == "EU"  # the copy, under another name, carries the tags of its content


def test_a_path_rule_binds_at_most_its_bound_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from prov4torch.governance import declared

    monkeypatch.setattr(declared, "MAX_BOUND_FILES", 3)
    (tmp_path / "data").mkdir()
    for i in range(6):
        (tmp_path / "data" / f"f{i}.csv").write_text(f"{i},{i}\n")
    (tmp_path / "tags.toml").write_text(LOOP_TAGS)
    with pytest.warns(RuntimeWarning, match="names more data than is bound by content"):
        prov4torch.load_tags(tmp_path / "tags.toml")
    (rule,) = [r for r in declared.DECLARED.rules if r.source.file == str(tmp_path / "tags.toml")]
    import hashlib

    digest = {i: hashlib.sha256(f"{i},{i}\n".encode()).hexdigest() for i in range(6)}
    assert rule.content == {digest[0], digest[1], digest[2]}  # the first files in name order
    assert rule.matches(paths=[str(tmp_path / "data" / "f5.csv")], name=None, ids=[], digests=[])  # by path
