"""Statuses that tell the truth, in real subprocesses: exceptions, exits, signals, atexit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load, only_run_dir, rank_activity, run_script

PRELUDE = """
import os, signal, sys, time
import prov4torch
"""


def status_of(tmp_path: Path) -> dict:
    return rank_activity(load(only_run_dir(tmp_path) / "rank-0.prov.json"))


def test_uncaught_exception_without_with_block_ends_failed(tmp_path: Path):
    proc = run_script(tmp_path, PRELUDE + """
prov4torch.start_run()
prov4torch.log_metric("loss", 1.0)
raise RuntimeError("diverged at step 7")
""")
    assert proc.returncode == 1
    assert "RuntimeError: diverged at step 7" in proc.stderr  # the user's traceback still prints
    act = status_of(tmp_path)
    assert act["p4t:status"] == "FAILED"
    assert act["p4t:exceptionType"] == "builtins.RuntimeError"
    assert act["p4t:exceptionMessage"] == "diverged at step 7"


def test_script_that_forgets_end_run_finishes_at_exit(tmp_path: Path):
    proc = run_script(tmp_path, PRELUDE + """
prov4torch.start_run()
prov4torch.log_metric("loss", 1.0)
""")
    assert proc.returncode == 0, proc.stderr
    act = status_of(tmp_path)
    assert act["p4t:status"] == "FINISHED"
    assert load(only_run_dir(tmp_path) / "rank-0.prov.json")["entity"]


def test_sys_exit_inside_with_block_records_the_exit_code(tmp_path: Path):
    proc = run_script(tmp_path, PRELUDE + """
with prov4torch.start_run():
    sys.exit(3)
""")
    assert proc.returncode == 3
    act = status_of(tmp_path)
    assert act["p4t:status"] == "FAILED" and act["p4t:exitCode"]["$"] == "3"


LOOP = PRELUDE + """
prov4torch.start_run()
print("ready", flush=True)
for i in range(100000):
    prov4torch.log_metric("loss", 1.0 / (i + 1), step=i)
    time.sleep(0.01)
"""


def start_and_wait_ready(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    script = tmp_path / "script.py"
    script.write_text(body)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_signal_ends_killed_and_exits_as_the_signal_would(tmp_path: Path, sig: int, name: str):
    proc = start_and_wait_ready(tmp_path, LOOP)
    time.sleep(0.3)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # default action preserved
    else:
        assert proc.returncode in (-signal.SIGINT, 130, 1)  # KeyboardInterrupt
    act = status_of(tmp_path)
    assert act["p4t:status"] == "KILLED"
    assert act["p4t:signal"] == name
    assert act["p4t:exitCode"]["$"] == str(128 + sig)


def test_user_sigterm_handler_is_chained(tmp_path: Path):
    body = PRELUDE + """
def graceful(signum, frame):
    print("user handler ran", flush=True)
    prov4torch.log_metric("saved", 1.0)   # the run is still open inside the user's handler
    sys.exit(0)

signal.signal(signal.SIGTERM, graceful)
""" + LOOP.split("\n", 3)[3]
    proc = start_and_wait_ready(tmp_path, body)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=30)
    assert "user handler ran" in out
    assert proc.returncode == 0
    act = status_of(tmp_path)
    assert act["p4t:status"] == "KILLED" and act["p4t:signal"] == "SIGTERM"
    csv = (only_run_dir(tmp_path) / "rank-0.metrics.csv").read_text()
    assert "\nsaved,training,0," in csv


def test_forked_dataloader_workers_do_not_write_the_parents_files(tmp_path: Path):
    proc = run_script(tmp_path, PRELUDE + """
import torch
from torch.utils.data import DataLoader, Dataset

class Logs(Dataset):
    def __len__(self): return 8
    def __getitem__(self, i):
        prov4torch.log_metric("from_worker", float(i))   # a no-op in the worker
        return torch.tensor([float(i)])

with prov4torch.start_run() as run:
    total = sum(float(b.sum()) for b in DataLoader(Logs(), batch_size=2, num_workers=2))
    prov4torch.log_metric("total", total)
print(run.status)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("FINISHED")
    run_dir = only_run_dir(tmp_path)
    csv = (run_dir / "rank-0.metrics.csv").read_text()
    assert "total,training,0,", "from_worker" not in csv
    assert "from_worker" not in csv
    assert status_of(tmp_path)["p4t:status"] == "FINISHED"


def test_an_exception_a_signal_handler_raises_inside_recording_code_reaches_the_script(
        recwarn: pytest.WarningsRecorder):
    """Python runs a signal handler wherever the main thread is -- inside prov4torch's own hooks too. What the
    handler raises (PyTorch's SIGCHLD handler when a DataLoader worker dies) is the script's, never swallowed
    as a recording failure; a failure of the recording itself still only warns."""
    from prov4torch.autolog.scope import record_inside

    class WorkerDied(RuntimeError):
        pass

    def handler(signum, frame):
        raise WorkerDied("DataLoader worker (pid 1) is killed by signal")

    def recording_interrupted():
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler runs here, inside the recording

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(WorkerDied):
            record_inside(recording_interrupted, "a checkpoint")
    finally:
        signal.signal(signal.SIGUSR1, previous)

    def recording_fails():
        raise RuntimeError("disk full")

    record_inside(recording_fails, "a checkpoint")  # warns, returns
    assert any("could not record a checkpoint: RuntimeError: disk full" in str(w.message) for w in recwarn)
