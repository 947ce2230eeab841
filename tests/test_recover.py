"""kill -9 leaves a journal and a metrics file; recover turns them into valid PROV-JSON."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load, rank_activity, read_prov
from prov4torch_cli.app import app
from typer.testing import CliRunner

import prov4torch

KILLED_SCRIPT = """
import sys, time
import prov4torch
run = prov4torch.start_run(experiment="crash", run_id="crash1")
prov4torch.log_params({"lr": 0.1})
prov4torch.log_dataset(__file__, name="script-as-data")
step = 0
while True:
    prov4torch.log_metric("loss", 1.0 / (step + 1), step=step)
    # tell the parent which step was logged, and when
    print(step, time.time(), flush=True)
    step += 1
    time.sleep(0.005)
"""


def killed_run(tmp_path: Path, seconds: float = 3.5) -> tuple[Path, list[tuple[int, float]], float]:
    script = tmp_path / "train.py"
    script.write_text(KILLED_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**__import__("os").environ, "PROV4TORCH_FLUSH_INTERVAL": "1"})
    assert proc.stdout is not None
    logged: list[tuple[int, float]] = []
    start = time.time()
    for line in proc.stdout:
        step, ts = line.split()
        logged.append((int(step), float(ts)))
        if time.time() - start > seconds:
            break
    kill_time = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    return tmp_path / "runs" / "crash" / "crash1", logged, kill_time


def test_sigkill_then_recover_keeps_every_metric_older_than_two_seconds(tmp_path: Path):
    run_dir, logged, kill_time = killed_run(tmp_path)
    assert not (run_dir / "rank-0.prov.json").exists()  # the process never reached end_run
    results = prov4torch.recover(run_dir)
    assert [(r.action, r.status) for r in results] == [("rebuilt", "INCOMPLETE")]

    with open(run_dir / "rank-0.metrics.csv") as fh:
        recovered_steps = {int(r["step"]) for r in csv.DictReader(fh)}
    old_enough = {s for s, ts in logged if ts < kill_time - 2.0}
    assert len(old_enough) > 50
    assert old_enough <= recovered_steps

    doc = read_prov(run_dir / "rank-0.prov.json")  # valid PROV that prov reads
    raw = load(run_dir / "rank-0.prov.json")
    act = rank_activity(raw)
    assert act["p4t:status"] == "INCOMPLETE" and act["p4t:recovered"] is True
    assert "prov:endTime" in act
    loss = raw["entity"]["p4t:run/crash1/rank/0/metric/training/loss"]
    assert int(loss["p4t:count"]["$"]) == len(recovered_steps)
    assert raw["entity"]["p4t:run/crash1/rank/0/params"]["param:lr"] == {"$": "0.1", "type": "xsd:double"}
    assert any(k.startswith("p4t:dataset/sha256-") for k in raw["entity"])
    assert doc.get_records()


LOADER_SCRIPT = """
import time, torch
from torch.utils.data import DataLoader, TensorDataset
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for i, (x,) in enumerate(DataLoader(TensorDataset(torch.randn(100000, 2)), batch_size=4, shuffle=True)):
    opt.zero_grad(); model(x).sum().backward(); opt.step()
    print(i + 1, time.time(), flush=True)  # batches delivered so far, and when
    time.sleep(0.005)
"""


def test_a_killed_run_records_the_batches_read_up_to_a_second_before(tmp_path: Path):
    """The usage of a loader still being read goes to the journal about once a second, not only when its epoch
    ends: kill -9 in the middle of an epoch, and the recovered record names what went by."""
    (tmp_path / "train.py").write_text(LOADER_SCRIPT)
    proc = subprocess.Popen([sys.executable, "-m", "prov4torch_cli.app", "run", "--out", "runs", "--experiment", "k",
                             "--run-id", "killed", "train.py"], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    delivered: list[tuple[int, float]] = []
    for line in proc.stdout:
        if line[:1].isdigit():
            n, ts = line.split()
            delivered.append((int(n), float(ts)))
            if time.time() - delivered[0][1] > 4:  # four seconds into the epoch
                break
    kill_time = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    run_dir = tmp_path / "runs" / "k" / "killed"
    prov4torch.recover(run_dir)
    (used,) = [u for u in load(run_dir / "rank-0.prov.json")["used"].values() if "dataset" in u["prov:entity"]]
    older = max(n for n, ts in delivered if ts < kill_time - 1.5)
    assert used["prov:role"]["$"] == "p4t:training" and older > 20
    assert int(used["p4t:batches"]["$"]) >= older, (used["p4t:batches"], older, delivered[-1])


def test_recover_is_idempotent(tmp_path: Path):
    run_dir, _, _ = killed_run(tmp_path, seconds=1.5)
    prov4torch.recover(run_dir)
    first = (run_dir / "rank-0.prov.json").read_bytes()
    prov4torch.recover(run_dir)
    assert (run_dir / "rank-0.prov.json").read_bytes() == first


def test_recover_leaves_a_finished_run_alone():
    with prov4torch.start_run(run_id="fine") as run:
        prov4torch.log_metric("x", 1.0)
    before = run.prov_path.read_bytes()
    (result,) = prov4torch.recover(run.dir)
    assert (result.action, result.status) == ("complete", "FINISHED")
    assert run.prov_path.read_bytes() == before


def test_recover_rebuilds_a_finished_run_whose_prov_file_was_lost():
    with prov4torch.start_run(run_id="lost") as run:
        prov4torch.log_metric("x", 1.0)
    run.prov_path.unlink()
    (result,) = prov4torch.recover(run.dir)
    assert (result.action, result.status) == ("rebuilt", "FINISHED")
    assert rank_activity(load(run.prov_path))["p4t:status"] == "FINISHED"


def test_torn_and_garbage_journal_lines_are_skipped_and_counted():
    with prov4torch.start_run(run_id="torn") as run:
        prov4torch.log_metric("x", 1.0)
    run.prov_path.unlink()
    lines = run.journal_path.read_text().splitlines()
    end = lines.pop()  # drop the end record: the process "died"
    assert json.loads(end)["t"] == "end"
    run.journal_path.write_text("\n".join([*lines, "not json", '{"t": "param", "key": "half'] ) + "")
    with open(run.metrics_path, "a") as fh:
        fh.write("x,training,1,17000")  # torn metric row
    (result,) = prov4torch.recover(run.dir)
    assert (result.status, result.skipped_lines, result.points) == ("INCOMPLETE", 2, 1)
    act = rank_activity(load(run.prov_path))
    assert act["p4t:journalSkippedLines"]["$"] == "2"


def test_recover_refuses_a_directory_that_is_not_a_run(tmp_path: Path):
    with pytest.raises(prov4torch.JournalError, match="not a prov4torch run directory"):
        prov4torch.recover(tmp_path)
    with pytest.raises(prov4torch.JournalError, match="is not a directory"):
        prov4torch.recover(tmp_path / "nope")
    (tmp_path / "rank-0.journal.jsonl").write_text("garbage\n")
    with pytest.raises(prov4torch.JournalError, match="no start record"):
        prov4torch.recover(tmp_path)


def test_cli_recover(tmp_path: Path):
    run_dir, _, _ = killed_run(tmp_path, seconds=1.0)
    runner = CliRunner()
    result = runner.invoke(app, ["recover", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "rebuilt, status INCOMPLETE" in result.output
    again = runner.invoke(app, ["recover", str(run_dir)])
    assert again.exit_code == 0 and "rebuilt" in again.output

    bad = runner.invoke(app, ["recover", str(tmp_path)])
    assert bad.exit_code == 2
    assert bad.output.startswith("Error: ") and "not a prov4torch run directory" in bad.output
    assert "Traceback" not in bad.output
