"""Metric points as columns (``record.metricbuf``): times from the writer's marks, the binary spool of a fast loop,
its recovery after kill -9, and a spool that is not ours."""

from __future__ import annotations

import csv
import functools
import marshal
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import prov4torch
from prov4torch.record import journal, metricbuf


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_point_logged_without_a_timestamp_is_dated_within_the_poll_interval(tmp_path: Path):
    calls: list[tuple[float, float]] = []
    with prov4torch.start_run(out_dir=tmp_path, system_metrics=False, energy=False) as run:
        for i in range(60):
            before = time.time()
            prov4torch.log_metric("loss", float(i), step=i)
            run.log_metric("acc", float(i))
            calls.append((before, time.time()))
            time.sleep(0.003 if i % 10 else 0.12)  # bursts and pauses longer than the poll interval
    got = rows(run.metrics_path)
    for name in ("loss", "acc"):
        series = [r for r in got if r["name"] == name]
        assert [int(r["step"]) for r in series] == list(range(60))
        stamps = [int(r["timestamp"]) / 1000.0 for r in series]
        assert stamps == sorted(stamps)  # a series' times never go backwards
        for (before, after), ts in zip(calls, stamps, strict=True):
            assert before - 0.001 <= ts <= after + metricbuf.POLL_S + 0.25, (before, ts, after)  # ms in the CSV


def test_explicit_timestamps_and_tensors_in_one_drain_keep_order_steps_and_times(tmp_path: Path):
    with prov4torch.start_run(out_dir=tmp_path, flush_interval_s=3600) as run:
        prov4torch.log_metric("m", 1.0)  # step 0, dated by the writer
        prov4torch.log_metric("m", torch.tensor(2.0), timestamp=1_700_000_000.25)  # step 1, its own time
        prov4torch.log_metric("m", 3.0, step=7)
        prov4torch.log_metric("m", torch.tensor([4.0]).sum())  # step 8
        prov4torch.log_metric("m", 5.0)  # step 9
    got = [(r["step"], r["value"]) for r in rows(run.metrics_path)]
    assert got == [("0", "1.0"), ("1", "2.0"), ("7", "3.0"), ("8", "4.0"), ("9", "5.0")]
    assert rows(run.metrics_path)[1]["timestamp"] == "1700000000250"


def test_a_fast_loop_is_spooled_and_every_point_written_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal, "QUIET_POINTS", 1000)
    with prov4torch.start_run(out_dir=tmp_path, flush_interval_s=3600, system_metrics=False, energy=False) as run:
        spool = journal.spool_path(run.metrics_path)
        w = run._writer
        for i in range(5000):
            prov4torch.log_metric("loss", i / 7, step=i)
            prov4torch.log_metric("auto", float(i))
        w.flush(rows=False)  # a drain of a fast loop: binary, not text
        assert spool.is_file() and w._spool.points == 10_000 and w.points == 0
        assert rows(run.metrics_path) == []
        for i in range(5000, 5010):
            prov4torch.log_metric("loss", i / 7, step=i)
        w.flush(rows=False)  # quiet: the spool's points and the new ones become rows, in order
        assert not spool.exists() and w.points == 10_010
    got = rows(run.metrics_path)
    loss = [r for r in got if r["name"] == "loss"]
    assert [int(r["step"]) for r in loss] == list(range(5010))
    assert [float(r["value"]) for r in loss] == [i / 7 for i in range(5010)]
    assert [int(r["step"]) for r in got if r["name"] == "auto"] == list(range(5000))
    assert not spool.exists()
    from conftest import load

    s = load(run.prov_path)["entity"][f"p4t:run/{run.run_id}/rank/0/metric/training/loss"]
    assert s["p4t:count"]["$"] == "5010" and s["p4t:lastStep"]["$"] == "5009"


def test_a_spool_cut_mid_conversion_is_recovered_without_a_row_twice(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """The state a crash can leave: the spool still there, some of its rows already in the CSV (or a torn
    line). ``finish_spool`` cuts the CSV back to the length the spool was begun at and writes every row once."""
    monkeypatch.setattr(journal, "QUIET_POINTS", 10)
    writer = journal.JournalWriter(tmp_path / "j.jsonl", tmp_path / "m.csv")
    append = writer.add_series("loss", "training")
    for i in range(3):
        append((i, float(i)))
    writer.flush()  # three rows in the CSV
    for i in range(3, 200):
        append((i, float(i)))
    writer.flush(rows=False)  # 197 points spooled
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(tmp_path / "m.csv", crashed / "m.csv")
    shutil.copy(journal.spool_path(tmp_path / "m.csv"), journal.spool_path(crashed / "m.csv"))
    writer.close()
    with open(crashed / "m.csv", "ab") as fh:  # rows of the spool written before the crash, the last one torn
        fh.write(b"loss,training,3,1700000000000,3.0\nloss,training,4,17000")
    assert journal.finish_spool(crashed / "m.csv") == 197
    assert (crashed / "m.csv").read_bytes() == (tmp_path / "m.csv").read_bytes()
    assert not journal.spool_path(crashed / "m.csv").exists()


SCRIPT = """
import sys, time, prov4torch
run = prov4torch.start_run(experiment="fast", run_id="k", system_metrics=False, energy=False)
i, t0, last = 0, time.time(), 0.0
while True:
    for _ in range(1000):
        prov4torch.log_metric("loss", i * 0.5, step=i)
        i += 1
    time.sleep(0.005)  # ~150,000 points a second: too fast for CSV text, not for the spool
    if time.time() - last > 0.05:
        last = time.time()
        print(i, last, flush=True)
"""


def test_kill_9_in_a_fast_loop_then_recover_keeps_the_spooled_points(tmp_path: Path):
    (tmp_path / "train.py").write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PROV4TORCH_FLUSH_INTERVAL": "0.5"})
    assert proc.stdout is not None
    seen: list[tuple[int, float]] = []
    for line in proc.stdout:
        n, ts = line.split()
        seen.append((int(n), float(ts)))
        if seen[-1][1] - seen[0][1] > 3:
            break
    kill_time = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    run_dir = tmp_path / "runs" / "fast" / "k"
    assert (run_dir / "rank-0.metrics.spool").is_file()  # the loop was too fast for CSV text: it was spooled
    prov4torch.recover(run_dir)
    assert not (run_dir / "rank-0.metrics.spool").exists()
    steps = [int(r["step"]) for r in rows(run_dir / "rank-0.metrics.csv")]
    assert steps == list(range(len(steps)))  # every point once, in order, none dropped
    older = max(n for n, ts in seen if ts < kill_time - 1.5)
    assert len(steps) >= older > 50_000


@pytest.mark.parametrize("tail", [b"P4TC" + b"\xff" * 40, b"P4TS\x00\x00\x00\x00\x05\x00\x00\x00loss,", b"junk"])
def test_a_spool_that_is_not_ours_never_reaches_marshal_and_ends_cleanly(tmp_path: Path, tail: bytes,
                                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal, "QUIET_POINTS", 10)
    writer = journal.JournalWriter(tmp_path / "j.jsonl", tmp_path / "m.csv")
    append = writer.add_series("loss", "training")
    for i in range(50):
        append((i, float(i)))
    writer.flush(rows=False)
    spool = journal.spool_path(tmp_path / "m.csv")
    data = spool.read_bytes()
    writer._spool.close()
    writer._csv.close()
    writer._journal.close()
    # marshal would make a code object of this; the spool's reader refuses anything but ints, None and floats
    evil = metricbuf.Spool(tmp_path / "evil.spool", functools.partial(open, mode="xb"))
    series = metricbuf.Series(("loss", "training"), 0, 1.0)
    evil.add([metricbuf.Chunk(series, marshal.dumps([0, compile("1", "x", "eval")], 2), 1, 0, [(0, 1.0), (1, 2.0)])],
             len(journal.METRICS_HEADER))
    evil.close()
    shutil.copy(tmp_path / "evil.spool", spool)
    assert journal.finish_spool(tmp_path / "m.csv") == 0
    spool.write_bytes(data + tail)
    assert journal.finish_spool(tmp_path / "m.csv") == 50  # the chunk before the foreign tail
    assert [int(r["step"]) for r in rows(tmp_path / "m.csv")] == list(range(50))


def test_a_fifo_at_the_spool_path_is_a_one_line_recover_error(tmp_path: Path):
    with prov4torch.start_run(out_dir=tmp_path, run_id="r", experiment="e") as run:
        prov4torch.log_metric("loss", 1.0)
    (run.dir / "rank-0.prov.json").unlink()
    os.mkfifo(journal.spool_path(run.metrics_path))
    proc = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "recover", str(run.dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (1, 2) and "metrics.spool" in proc.stderr and "Traceback" not in proc.stderr


def test_an_autograd_result_is_read_by_the_writer_without_a_copy_at_the_call(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """The GPU step's design (issue 28), exercised on the CPU: a loss tensor (an autograd result nobody wrote to) is
    kept by reference with its version counter and read in the writer's batched copy -- no kernel at the call; a
    tensor written to in place after it was logged is dropped and counted, never recorded with a later value;
    accumulators, no-grad results and views of larger tensors are copied at the call as before."""
    from prov4torch.record import values

    monkeypatch.setattr(values, "DEFERRED_DEVICES", {"cuda", "cpu"})
    writer = journal.JournalWriter(tmp_path / "j.jsonl", tmp_path / "m.csv")
    append = writer.add_series("loss", "training")
    w = torch.ones(3, requires_grad=True)
    losses = [(w * i).sum() for i in range(4)]
    kept = [values.coerce_metric("loss", loss) for loss in losses]
    assert all(isinstance(k, values.DeviceValue) and k.version == 0 for k in kept)
    assert all(k.tensor.untyped_storage().data_ptr() == loss.untyped_storage().data_ptr()  # the same memory
               for k, loss in zip(kept, losses, strict=True))
    late = (w * 5).sum()
    late_value = values.coerce_metric("loss", late)
    with torch.no_grad():
        late.add_(100.0)  # written to after it was logged: its version moves
    running = torch.zeros(())
    running += 7.0  # an accumulator (version 1): copied at the call
    acc = values.coerce_metric("loss", running)
    running += 1.0
    assert not isinstance(acc, values.DeviceValue)
    with torch.no_grad():
        assert not values.deferrable((w * 3).sum())  # a no-grad result (an evaluation's metric): copied
    for step, value in enumerate([*kept, late_value, acc]):
        append((step, value))
    with pytest.warns(RuntimeWarning, match="written to in place before it was read"):
        writer.close()
    got = [(r["step"], float(r["value"])) for r in rows(tmp_path / "m.csv")]
    assert got == [("0", 0.0), ("1", 3.0), ("2", 6.0), ("3", 9.0), ("5", 7.0)]  # step 4 dropped, not 115.0
    assert writer.dropped == 1 and writer.points == 5
    big = torch.ones(100, requires_grad=True) * 2  # an autograd result on a 400-byte storage: a view of it is copied
    assert not values.deferrable(big[3])


def test_a_spool_that_cannot_be_written_loses_no_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A file already at the spool's name (planted, or left by a crash the user did not recover): never written
    through; the points stay in memory and reach the CSV, and the failure is said once."""
    monkeypatch.setattr(journal, "QUIET_POINTS", 10)
    planted = journal.spool_path(tmp_path / "m.csv")
    planted.write_bytes(b"someone else's")
    writer = journal.JournalWriter(tmp_path / "j.jsonl", tmp_path / "m.csv")
    append = writer.add_series("loss", "training")
    for i in range(100):
        append((i, float(i)))
    with pytest.warns(RuntimeWarning, match="could not write"):
        writer.flush(rows=False)
    writer.close()
    assert [int(r["step"]) for r in rows(tmp_path / "m.csv")] == list(range(100))
    assert writer.points == 100 and writer.dropped == 0
    assert planted.read_bytes() == b"someone else's"
