"""prov4torch run: unmodified scripts, exit codes and statuses, autolog, torchrun with 2 gloo ranks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import load, rank_activity, read_prov, role

TRAIN = """
import argparse, sys, torch
from torch.utils.data import DataLoader, TensorDataset
import helper   # a module next to the script: its folder must be on sys.path
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--out", default="ckpt.pt")
a = p.parse_args()
torch.manual_seed(0)
ds = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
m = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.9)
for _ in range(a.epochs):
    for x, y in DataLoader(ds, batch_size=16, shuffle=True):
        opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
result = torch.save(m.state_dict(), a.out)
assert result is None
print("trained", helper.VALUE, __name__, sys.argv[1:])
"""

FINETUNE = """
import sys, torch
state = torch.load(sys.argv[1])
m = torch.nn.Linear(4, 2)
m.load_state_dict(state)
with torch.no_grad():
    m.weight += 1  # fine-tuned: new weights
torch.save(m.state_dict(), sys.argv[2])
"""


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "prov4torch_cli.app", *args], capture_output=True, text=True,
                          env=full_env, cwd=tmp_path, timeout=timeout)


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def run_dirs(tmp_path: Path, experiment: str = "default") -> list[Path]:
    return sorted(p for p in (tmp_path / "runs" / experiment).iterdir() if p.is_dir())


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    write(tmp_path, "helper.py", "VALUE = 42\n")
    write(tmp_path, "train.py", TRAIN)
    write(tmp_path, "finetune.py", FINETUNE)
    return tmp_path


def test_unmodified_script_is_captured(scripts: Path):
    proc = cli(scripts, "run", "train.py", "--lr", "0.05", "--epochs", "2", "--out", "model.pt")
    assert proc.returncode == 0, proc.stderr
    assert "trained 42 __main__ ['--lr', '0.05', '--epochs', '2', '--out', 'model.pt']" in proc.stdout
    (run_dir,) = run_dirs(scripts)
    doc = load(run_dir / "rank-0.prov.json")
    act = rank_activity(doc)
    assert act["p4t:status"] == "FINISHED" and act["p4t:exitCode"]["$"] == "0"
    assert act["p4t:optimizerSteps"]["$"] == "8"
    params = next(e for k, e in doc["entity"].items() if k.endswith("/params"))
    assert params["param:argv.lr"] == {"$": "0.05", "type": "xsd:double"}
    assert params["param:argv.out"] == "model.pt"
    assert params["param:optimizer"] == "SGD" and params["param:optimizer.momentum"]["$"] == "0.9"
    (code,) = [u for u in doc["used"].values() if role(u) == "p4t:code"]
    assert code["p4t:script"] == str(scripts / "train.py") and len(code["p4t:scriptSha256"]) == 64
    (used,) = [u for u in doc["used"].values() if role(u) == "p4t:training"]
    assert (used["p4t:samples"]["$"], used["p4t:batches"]["$"], used["p4t:epochs"]["$"]) == ("128", "8", "2")
    models = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    (gen,) = [g for g in doc["wasGeneratedBy"].values() if g["prov:entity"] == models[0]]
    assert len(models) == 1 and gen["p4t:path"] == str(scripts / "model.pt")
    read_prov(run_dir / "run.prov.json")


def test_script_options_reach_the_script_untouched(scripts: Path):
    write(scripts, "opts.py", "import sys; print(sys.argv[1:])\n")
    proc = cli(scripts, "run", "opts.py", "--help", "--out", "x", "--policy", "nope")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['--help', '--out', 'x', '--policy', 'nope']"


@pytest.mark.parametrize(("argv", "seen"), [
    (["opts.py", "--", "--seconds", "2"], ["--seconds", "2"]),  # the documented form: `--` only separates
    (["opts.py", "--", "--", "x"], ["--", "x"]),  # a literal `--` for the script
    (["opts.py", "--epochs", "1", "--", "y"], ["--epochs", "1", "--", "y"]),  # the script's own `--`
    (["--experiment", "e", "opts.py", "--", "--help"], ["--help"]),  # typer's parser, not the fast one
    (["--", "opts.py", "--lr", "1"], ["--lr", "1"]),  # `--` before SCRIPT ends prov4torch's options
])
def test_a_separator_right_after_the_script_is_not_passed_on(scripts: Path, argv: list[str], seen: list[str]):
    write(scripts, "opts.py", "import sys; print(sys.argv[1:])\n")
    proc = cli(scripts, "run", *argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(seen)


def test_module_mode(scripts: Path):
    pkg = scripts / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("import sys\nprint('module ran', __name__, sys.argv[1:])\n")
    proc = cli(scripts, "run", "-m", "mypkg.job", "--x", "1")
    assert proc.returncode == 0, proc.stderr
    assert "module ran __main__ ['--x', '1']" in proc.stdout


@pytest.mark.parametrize(("body", "code", "status"), [
    ("import sys\nsys.exit(3)\n", 3, "FAILED"),
    ("raise ValueError('bad batch')\n", 1, "FAILED"),
    ("print('ok')\n", 0, "FINISHED"),
])
def test_exit_codes_and_statuses(scripts: Path, body: str, code: int, status: str):
    write(scripts, "job.py", body)
    proc = cli(scripts, "run", "job.py")
    assert proc.returncode == code, proc.stderr
    act = rank_activity(load(run_dirs(scripts)[0] / "rank-0.prov.json"))
    assert act["p4t:status"] == status and act["p4t:exitCode"]["$"] == str(code)
    if "raise" in body:
        assert 'File "' + str(scripts / "job.py") + '", line 1, in <module>' in proc.stderr
        lines = proc.stderr.rstrip().splitlines()
        assert lines[-1].startswith("prov4torch: exit code 1; provenance in ")  # our one summary line
        assert lines[-2] == "ValueError: bad batch"
        assert "runpy" not in proc.stderr  # the traceback starts at the script, as with python
        assert act["p4t:exceptionType"] == "builtins.ValueError"


@pytest.mark.parametrize(("body", "code", "status"), [
    ("import os\nprint('done')\nos._exit(0)\n", 0, "FINISHED"),  # a distributed job skipping a hanging teardown
    ("import os\nos._exit(3)\n", 3, "FAILED"),
    ("import os, threading\nt = threading.Thread(target=os._exit, args=(4,))\nt.start()\nt.join()\n", 4, "FAILED"),
    # a forked child's os._exit is its own: the parent's run goes on, and is concluded once, by the parent
    ("import os\npid = os.fork()\nif pid == 0:\n    os._exit(9)\nos.waitpid(pid, 0)\nos._exit(0)\n", 0, "FINISHED"),
])
def test_a_script_that_ends_its_process_with_os_exit_is_recorded_and_merged(scripts: Path, body: str, code: int,
                                                                            status: str):
    write(scripts, "job.py", body)
    plain = subprocess.run([sys.executable, "job.py"], cwd=scripts, capture_output=True, text=True, timeout=60)
    proc = cli(scripts, "run", "job.py")
    assert proc.returncode == plain.returncode == code, proc.stderr
    assert proc.stdout == plain.stdout  # os._exit drops what stdout buffered, under prov4torch as without it
    (run_dir,) = run_dirs(scripts)
    assert (run_dir / "run.prov.json").is_file()  # concluded and merged inside the os._exit call
    act = rank_activity(load(run_dir / "rank-0.prov.json"))
    assert act["p4t:status"] == status and act["p4t:exitCode"]["$"] == str(code)
    assert proc.stderr.count("prov4torch: exit code") == 1, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith(f"prov4torch: exit code {code}; provenance in ")


def test_a_keyboard_interrupt_prints_its_traceback_and_ends_by_the_signal_as_python_does(scripts: Path):
    write(scripts, "job.py", "print('start')\nraise KeyboardInterrupt\n")
    plain = subprocess.run([sys.executable, "job.py"], cwd=scripts, capture_output=True, text=True, timeout=60)
    proc = cli(scripts, "run", "job.py")
    assert proc.returncode == plain.returncode and proc.stdout == plain.stdout
    lines = proc.stderr.rstrip().splitlines()
    assert 'File "' + str(scripts / "job.py") + '", line 2, in <module>' in proc.stderr
    assert lines[-2] == "KeyboardInterrupt" == plain.stderr.rstrip().splitlines()[-1]
    act = rank_activity(load(run_dirs(scripts)[0] / "rank-0.prov.json"))
    assert act["p4t:status"] == "KILLED"


def test_sigterm_ends_killed_with_the_signal_exit_status(scripts: Path):
    write(scripts, "loop.py", "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, "-m", "prov4torch_cli.app", "run", "loop.py"], cwd=scripts,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    act = rank_activity(load(run_dirs(scripts)[0] / "rank-0.prov.json"))
    assert act["p4t:status"] == "KILLED" and act["p4t:signal"] == "SIGTERM"


def test_second_unmodified_script_links_to_the_first_runs_data(scripts: Path):
    assert cli(scripts, "run", "train.py", "--out", "base.pt").returncode == 0
    proc = cli(scripts, "run", "finetune.py", "base.pt", "tuned.pt")
    assert proc.returncode == 0, proc.stderr
    first, second = run_dirs(scripts)
    d1 = load(first / "rank-0.prov.json")
    d2 = load(second / "rank-0.prov.json")
    (dataset,) = [k for k in d1["entity"] if k.startswith("p4t:dataset/")]
    (base,) = [k for k in d1["entity"] if k.startswith("p4t:model/")]
    assert ("p4t:baseModel", base) in {(role(u), u["prov:entity"]) for u in d2["used"].values()}
    # the fine-tune's model reaches the first run's dataset, from the fine-tune's file alone
    from prov4torch.audit.load import load_graph

    g = load_graph([second / "rank-0.prov.json"])
    (tuned,) = {e.down for e in g.edges if e.relation == "wasGeneratedBy"
                and e.attrs.get("https://w3id.org/prov4torch/ns#path") == [str(scripts / "tuned.pt")]}
    upstream = {g.short(n) for n in g.walk(tuned, ["wasDerivedFrom", "wasGeneratedBy", "used"])}
    assert dataset in upstream and base in upstream


def test_patches_are_removed_and_behave_like_the_originals(tmp_path: Path):
    import torch
    from torch.utils.data import dataloader as dl

    from prov4torch.autolog.runner import run_script

    originals = (torch.save, torch.load, dl._BaseDataLoaderIter.__next__, dl._BaseDataLoaderIter.__init__)
    write(tmp_path, "probe.py", """
        import torch
        try:
            torch.save({"a": 1}, "/nonexistent-dir/x.pt")
        except Exception as exc:
            print("save raised", type(exc).__name__)
        try:
            torch.load("/nonexistent-dir/x.pt")
        except Exception as exc:
            print("load raised", type(exc).__name__)
    """)
    outcome = run_script(str(tmp_path / "probe.py"), [])
    assert outcome.exit_code == 0 and outcome.run_dir is not None and outcome.status == "FINISHED"
    assert (torch.save, torch.load, dl._BaseDataLoaderIter.__next__, dl._BaseDataLoaderIter.__init__) == originals
    try:
        torch.save({"a": 1}, "/nonexistent-dir/x.pt")
    except Exception as exc:  # the same exception type as under the patch
        expected = type(exc).__name__
    assert expected in ("RuntimeError", "FileNotFoundError")


def test_bad_script_is_a_clean_error(tmp_path: Path):
    proc = cli(tmp_path, "run", "missing.py")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: missing.py: no such script") and "Traceback" not in proc.stderr
    proc = cli(tmp_path, "run", "-m", "no.such.module")
    assert proc.returncode == 2 and "no module named 'no.such.module'" in proc.stderr


def test_policy_blocks_an_unmodified_script_before_its_first_batch(scripts: Path):
    write(scripts, "eu.py", """
        import torch, prov4torch
        from torch.utils.data import DataLoader, TensorDataset
        calls = 0
        ds = TensorDataset(torch.randn(8, 2))
        prov4torch.log_dataset(ds, origin_country="FR", jurisdiction="EU", personal_data=True, license="MIT")
        for (x,) in DataLoader(ds, batch_size=4):
            calls += 1
        print("batches seen", calls)
    """)
    proc = cli(scripts, "run", "--policy", "default", "--region", "us-east-1", "--purpose", "training", "eu.py")
    assert proc.returncode == 1
    assert "PolicyViolation" in proc.stderr and "batches seen" not in proc.stdout
    act = rank_activity(load(run_dirs(scripts)[0] / "rank-0.prov.json"))
    assert act["p4t:status"] == "BLOCKED"


def ddp_worker(checkpoint: str) -> str:
    """A small DDP training script on gloo (two ranks share 64 samples); rank 0 saves ``checkpoint``."""
    return """
        import torch, torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
        from torch.utils.data import DataLoader, TensorDataset, DistributedSampler
        dist.init_process_group("gloo")
        torch.manual_seed(0)
        ds = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
        model = DDP(torch.nn.Linear(4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in DataLoader(ds, batch_size=8, sampler=DistributedSampler(ds)):
            opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), """ + repr(checkpoint) + """)
        dist.barrier()
        dist.destroy_process_group()
    """


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_with_ddp(tmp_path: Path):
    write(tmp_path, "ddp.py", ddp_worker("ddp.pt"))
    proc = cli(tmp_path, "run", "--nproc-per-node", "2", "--experiment", "ddp", "ddp.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path, "ddp")
    ranks = [load(run_dir / f"rank-{k}.prov.json") for k in (0, 1)]
    acts = [rank_activity(d) for d in ranks]
    assert {a["p4t:runId"] for a in acts} == {run_dir.name}
    assert [a["p4t:rank"]["$"] for a in acts] == ["0", "1"] and all(a["p4t:worldSize"]["$"] == "2" for a in acts)
    assert all(a["p4t:status"] == "FINISHED" for a in acts)
    merged = read_prov(run_dir / "run.prov.json")
    assert len(list(merged.bundles)) == 2
    raw = load(run_dir / "run.prov.json")
    collection = raw["entity"][f"p4t:run/{run_dir.name}"]
    assert collection["p4t:ranksPresent"]["$"] == "2" and "p4t:ranksMissing" not in collection
    assert sorted(m["prov:entity"] for m in raw["hadMember"].values()) == [
        f"p4t:run/{run_dir.name}/rank/{k}/bundle" for k in (0, 1)]
    # each rank's shard: 32 samples
    for d in ranks:
        (used,) = [u for u in d["used"].values() if role(u) == "p4t:training"]
        assert used["p4t:samples"]["$"] == "32"
    json.dumps(raw)



BLEND = """
    import torch, torch.distributed as dist, prov4torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("gloo")
    r = dist.get_rank()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(r))
    tags = [dict(origin_country="DE", jurisdiction="EU"), dict(origin_country="US", jurisdiction="US")][r]
    model = DDP(torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for (xb,) in prov4torch.track(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8),
                                  license="CC-BY-4.0", consent_scope=["training", "research"], **tags):
        opt.zero_grad(); model(xb).sum().backward(); opt.step()
    if r == 0:
        torch.save(model.module.state_dict(), "blend.pt")
    dist.destroy_process_group()
    print("rank", r, "done")
"""


@pytest.mark.slow
def test_a_job_whose_ranks_each_pass_their_gate_is_judged_as_a_whole_and_said(tmp_path: Path):
    """Each rank's gate sees its own data: EU data on rank 0 and US data on rank 1, all-reduced into one model,
    pass both. The merged job is judged at the end and the finding said (after the fact: the exit code stays the
    script's, and check denies the job)."""
    write(tmp_path, "blend.py", BLEND)
    proc = cli(tmp_path, "run", "--out", "runs", "--nproc-per-node", "2", "--policy", "default", "--region",
               "us-east-1", "--purpose", "research", "blend.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert "policy finding on the job as a whole" in said and "no-eu-us-blend" in said
    (merged,) = (tmp_path / "runs").glob("*/*/run.prov.json")
    denied = cli(tmp_path, "check", str(merged), "--policy", "default")
    assert denied.returncode == 1 and "no-eu-us-blend" in denied.stdout


def test_a_torchrun_job_started_inside_a_recorded_script_records_its_ranks(tmp_path: Path):
    write(tmp_path, "worker.py", ddp_worker("inner.pt"))
    write(tmp_path, "launch.py", """
        import subprocess, sys
        subprocess.run([sys.executable, "-c", "print('a helper, not a rank')"], check=True)
        code = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               "worker.py"]).returncode
        sys.exit(code)
    """)
    proc = cli(tmp_path, "run", "--out", "runs", "--experiment", "outer", "launch.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (outer,) = [p.parent for p in (tmp_path / "runs" / "outer").glob("*/rank-0.prov.json")
                if "launch.py" in json.dumps(load(p))]
    parent = rank_activity(load(outer / "rank-0.prov.json"))
    inner = [p.parent for p in (tmp_path / "runs" / "outer").glob("*/rank-1.prov.json")]
    assert len(inner) == 1 and inner[0] != outer, "the inner job has a run directory of its own"
    ranks = [load(inner[0] / f"rank-{k}.prov.json") for k in (0, 1)]
    parent_id = f"p4t:run/{parent['p4t:runId']}/rank/0"
    for k, doc in enumerate(ranks):
        act = rank_activity(doc)
        assert (act["p4t:rank"]["$"], act["p4t:worldSize"]["$"]) == (str(k), "2")
        assert any(i["prov:informant"] == parent_id for i in doc.get("wasInformedBy", {}).values())
        (used,) = [u for u in doc["used"].values() if role(u) == "p4t:training"]
        assert used["p4t:samples"]["$"] == "32"
    assert hashlib.sha256((tmp_path / "inner.pt").read_bytes()).hexdigest() in json.dumps(ranks[0])
    assert len(list((tmp_path / "runs" / "outer").glob("*/rank-0.prov.json"))) == 2  # no helper run
    merged = load(inner[0] / "run.prov.json")  # merged by prov4torch run, as its own job
    assert merged["entity"][f"p4t:run/{inner[0].name}"]["p4t:ranksPresent"]["$"] == "2"


def test_kill_switch_runs_the_script_plainly(scripts: Path):
    proc = cli(scripts, "run", "train.py", "--out", "m.pt", env={"PROV4TORCH_DISABLED": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "trained 42 __main__" in proc.stdout and (scripts / "m.pt").is_file()
    assert not (scripts / "runs").exists() and "prov4torch:" not in proc.stderr


def test_a_traceback_through_a_patch_shows_the_users_line_and_no_patch_frame(tmp_path: Path):
    write(tmp_path, "boom.py", """
        import torch, warnings
        torch.load("no-such-checkpoint.pt")
    """)
    proc = cli(tmp_path, "run", "--out", "runs", "boom.py")
    assert proc.returncode == 1 and "FileNotFoundError" in proc.stderr, proc.stderr
    assert 'boom.py", line 3' in proc.stderr and "prov4torch" + os.sep + "autolog" not in proc.stderr, proc.stderr


def test_a_warning_raised_under_a_patch_is_attributed_to_its_caller():
    import types
    import warnings

    from prov4torch.autolog.scope import Patcher

    def noisy() -> int:
        warnings.warn("careful", UserWarning, stacklevel=2)
        return 7

    ns = types.SimpleNamespace(noisy=noisy)
    seen: list[int] = []
    p = Patcher()
    p.after(ns, "noisy", lambda result, *a, **k: seen.append(result), "noisy")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = sys._getframe().f_lineno + 1
            assert ns.noisy() == 7
        assert [(w.filename, w.lineno, str(w.message)) for w in caught] == [(__file__, line, "careful")]
        assert seen == [7]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(UserWarning, match="careful"):  # filters apply as without the patch
                ns.noisy()
    finally:
        for undo in reversed(p.undo):
            undo()
    assert ns.noisy is noisy


def test_the_fast_run_parser_reads_runs_own_signature_and_defers_anything_unusual():
    from prov4torch_cli.app import run
    from prov4torch_cli.fastpath import parse

    kwargs, script, rest = parse(run, ["--out", "o", "--policy=default", "--nproc-per-node", "2", "-m", "--data",
                                       "a", "--data", "b", "--render", "train", "--lr", "0.1", "--help"])
    assert script == "train" and rest == ["--lr", "0.1", "--help"]  # the script's own options untouched
    assert kwargs["out"] == Path("o") and kwargs["policy"] == "default" and kwargs["nproc_per_node"] == 2
    assert kwargs["module"] is True and kwargs["render_svg"] is True and kwargs["data"] == [Path("a"), Path("b")]
    assert kwargs["experiment"] is None and kwargs["data_tags"] is None  # defaults as typer gives them
    for argv in (["--help", "t.py"], ["--bogus", "t.py"], ["--nproc-per-node", "x", "t.py"],
                 ["--nproc-per-node", "0", "t.py"], ["--out"], ["--render=yes", "t.py"], ["--", "t.py"], []):
        assert parse(run, argv) is None, argv  # typer parses these, with its own messages
