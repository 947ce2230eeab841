"""log_metric / log_metrics: values, steps, contexts, timestamps, the sidecar and summaries."""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load

import prov4torch


def rows(run) -> list[dict[str, str]]:
    with open(run.metrics_path, newline="") as fh:
        return list(csv.DictReader(fh))


def series(run, context: str, name: str) -> dict:
    doc = load(run.prov_path)
    return doc["entity"][f"p4t:run/{run.run_id}/rank/0/metric/{context}/{name}"]


def test_values_of_every_numeric_kind_are_recorded():
    with prov4torch.start_run() as run:
        prov4torch.log_metric("f", 0.25)
        prov4torch.log_metric("i", 3)
        prov4torch.log_metric("np32", np.float32(1.5))
        prov4torch.log_metric("np64", np.int64(7))
        prov4torch.log_metric("t0", torch.tensor(2.5))
        prov4torch.log_metric("t1", torch.tensor([4.0], requires_grad=True).sum())
        prov4torch.log_metric("b", True)
    values = {r["name"]: float(r["value"]) for r in rows(run)}
    assert values == {"f": 0.25, "i": 3.0, "np32": 1.5, "np64": 7.0, "t0": 2.5, "t1": 4.0, "b": 1.0}


def test_nan_and_inf_are_recorded_not_rejected():
    with prov4torch.start_run() as run:
        for v in (1.0, float("nan"), float("inf"), -float("inf"), 3.0):
            prov4torch.log_metric("loss", v)
    assert [r["value"] for r in rows(run)] == ["1.0", "nan", "inf", "-inf", "3.0"]
    s = series(run, "training", "loss")
    assert s["p4t:count"]["$"] == "5"
    assert s["p4t:nonFinite"]["$"] == "3"
    assert (s["p4t:min"]["$"], s["p4t:max"]["$"], s["p4t:mean"]["$"]) == ("1.0", "3.0", "2.0")
    assert s["p4t:last"] == {"$": "3.0", "type": "xsd:double"}


def test_nan_first_value_is_written_the_way_prov_writes_it():
    with prov4torch.start_run() as run:
        prov4torch.log_metric("loss", float("nan"))
    s = series(run, "training", "loss")
    assert s["p4t:first"] == {"$": "NaN", "type": "xsd:double"}
    assert "NaN" not in run.prov_path.read_text().replace('"NaN"', "")  # never a bare NaN token


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.5", "value must be a number"),
        (None, "value must be a number"),
        ([1.0], "value must be a number"),
        (torch.tensor([1.0, 2.0]), r"one number, got shape \(2,\)"),
        (torch.tensor(1 + 2j), "is not a real number"),
        (1 + 2j, "value must be a number .*got complex"),
    ],
)
def test_non_numeric_values_raise_at_the_call(value, message):
    with prov4torch.start_run() as run:
        prov4torch.log_metric("warm", torch.tensor(7, dtype=torch.int64))  # CPU tensors now take the fast path
        with pytest.raises(prov4torch.InvalidValueError, match=message):
            prov4torch.log_metric("x", value)
        prov4torch.log_metric("x", 1.0)
    assert [(r["name"], r["value"]) for r in rows(run)] == [("warm", "7.0"), ("x", "1.0")]  # the bad call: nothing


@pytest.mark.parametrize(
    ("name", "context", "message"),
    [
        ("", "training", "invalid metric name ''"),
        ("a,b", "training", "invalid metric name 'a,b'"),
        (3, "training", "metric name must be a string, got int"),
        ("ok", "train ing", "invalid metric context"),
        ("ok", "", "invalid metric context"),
        ("-x", "training", "invalid metric name"),
    ],
)
def test_bad_names_and_contexts(name, context, message):
    with prov4torch.start_run(), pytest.raises(prov4torch.InvalidValueError, match=message):
        prov4torch.log_metric(name, 1.0, context=context)


def test_steps_auto_increment_per_series_and_follow_explicit_steps():
    with prov4torch.start_run() as run:
        prov4torch.log_metric("a", 1.0)
        prov4torch.log_metric("a", 2.0)
        prov4torch.log_metric("b", 1.0, context="validation")
        prov4torch.log_metric("a", 3.0, step=10)
        prov4torch.log_metric("a", 4.0)
        prov4torch.log_metric("a", 5.0, step=np.int64(20))
    got = [(r["name"], r["context"], r["step"], r["value"]) for r in rows(run)]
    a = [g for g in got if g[0] == "a"]
    assert a == [("a", "training", "0", "1.0"), ("a", "training", "1", "2.0"), ("a", "training", "10", "3.0"),
                 ("a", "training", "11", "4.0"), ("a", "training", "20", "5.0")]
    assert [g for g in got if g[0] == "b"] == [("b", "validation", "0", "1.0")]


def test_auto_steps_continue_across_writer_flushes():
    with prov4torch.start_run() as run:
        prov4torch.log_metric("a", 1.0)
        prov4torch.flush()
        prov4torch.log_metric("a", 2.0)
    assert [r["step"] for r in rows(run)] == ["0", "1"]


def test_bad_step_and_timestamp():
    with prov4torch.start_run():
        with pytest.raises(prov4torch.InvalidValueError, match="step must be an integer"):
            prov4torch.log_metric("a", 1.0, step=1.5)
        with pytest.raises(prov4torch.InvalidValueError, match="timezone"):
            prov4torch.log_metric("a", 1.0, timestamp=dt.datetime(2026, 1, 1))
        with pytest.raises(prov4torch.InvalidValueError, match="Unix seconds"):
            prov4torch.log_metric("a", 1.0, timestamp="yesterday")


def test_explicit_timestamps_are_kept():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with prov4torch.start_run() as run:
        prov4torch.log_metric("a", 1.0, timestamp=when)
        prov4torch.log_metric("a", 2.0, timestamp=1_700_000_000.5)
    # the sidecar keeps Unix epoch milliseconds
    assert [int(r["timestamp"]) for r in rows(run)] == [int(when.timestamp() * 1000), 1_700_000_000_500]


def test_log_metrics_shares_step_and_timestamp():
    with prov4torch.start_run() as run:
        prov4torch.log_metrics({"loss": 0.1, "acc": 0.9}, step=5, context="validation")
        with pytest.raises(prov4torch.InvalidValueError, match="mapping"):
            prov4torch.log_metrics([("loss", 1.0)])
    r = rows(run)
    assert {(x["name"], x["step"], x["context"]) for x in r} == {("loss", "5", "validation"), ("acc", "5", "validation")}
    assert r[0]["timestamp"] == r[1]["timestamp"]


def test_writer_flushes_in_the_background_without_flush_calls():
    import time

    with prov4torch.start_run() as run:
        prov4torch.log_metric("a", 1.0)
        deadline = time.time() + 5
        while time.time() < deadline and len(rows(run)) < 1:
            time.sleep(0.05)
        assert len(rows(run)) == 1  # written by the writer thread (interval 0.2 s in tests)


def test_flush_writes_now():
    with prov4torch.start_run(flush_interval_s=3600) as run:
        prov4torch.log_metric("a", 1.0)
        prov4torch.log_param("p", 1)
        assert rows(run) == []
        prov4torch.flush()
        assert len(rows(run)) == 1
        assert '"t": "param"' in run.journal_path.read_text()


def test_summary_matches_the_sidecar_and_its_digest():
    import hashlib

    with prov4torch.start_run() as run:
        for i in range(1000):
            prov4torch.log_metric("loss", math.exp(-i / 100), step=i)
    s = series(run, "training", "loss")
    assert s["p4t:count"]["$"] == "1000"
    assert (s["p4t:firstStep"]["$"], s["p4t:lastStep"]["$"]) == ("0", "999")
    assert float(s["p4t:min"]["$"]) == pytest.approx(math.exp(-9.99))
    assert s["p4t:sidecar"] == "rank-0.metrics.csv"
    assert s["p4t:sidecarSha256"] == hashlib.sha256(run.metrics_path.read_bytes()).hexdigest()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_batch_of_tensor_values_is_read_exactly_whatever_their_dtypes_and_shapes():
    """The writer stacks a batch by device, dtype and shape: an int64 count beside a bf16 loss is never rounded
    through bf16, shapes (1,) and (1, 1) are values too, and the order is kept."""
    from prov4torch.record.journal import to_floats

    big = 2**53 - 1  # exact in float64, not in bf16 or float32
    values = [torch.tensor(0.5, dtype=torch.bfloat16), torch.tensor(big), 1.5, torch.tensor([2.25]),
              torch.tensor([[3.0]], dtype=torch.float16), torch.tensor(True), np.float32(0.25), torch.tensor(-7)]
    assert to_floats(values) == [0.5, float(big), 1.5, 2.25, 3.0, 1.0, 0.25, -7.0]
    assert to_floats([1.0, 2.0]) == [1.0, 2.0]


def sync_debug_mode(mode: str):
    """torch.cuda.set_sync_debug_mode, whose "prototype feature" warning is not the test's business."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.cuda.set_sync_debug_mode(mode)


@pytest.mark.gpu
@needs_cuda
def test_cuda_tensors_are_queued_and_written_with_no_synchronising_call(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """In sync debug mode "error" any synchronising call raises: none on the hot path (one copy kernel per tensor,
    nothing for a Python number), and none when the writer reads the values back."""
    from prov4torch.record.values import DeviceValue

    monkeypatch.setenv("PROV4TORCH_FLUSH_INTERVAL", "3600")  # the writer keeps its queue while we look
    values = [torch.tensor(float(i), device="cuda") for i in range(100)]
    counts = torch.tensor([2**40 + 1], device="cuda")  # an int64 beside float32 losses: not rounded
    torch.cuda.synchronize()
    with prov4torch.start_run(out_dir=tmp_path, system_metrics=False, energy=False) as run:
        try:
            sync_debug_mode("error")
            for i, v in enumerate(values):
                prov4torch.log_metric("loss", v, step=i)
                prov4torch.log_metric("lr", 0.5, step=i)  # a Python number: no kernel, no event
            prov4torch.log_metric("seen", counts, step=0)
            queue = run._writer.series[("loss", "training")]
            assert len(queue) == 100 and all(isinstance(v, DeviceValue) for v in queue.buf[1::2])
            assert all(type(v) is float for v in run._writer.series[("lr", "training")].buf[1::2])
            run.flush()  # the writer's read, still in "error" mode
            assert run._writer.dropped == 0 and run._writer.failure is None
        finally:
            sync_debug_mode("default")
    got = rows(run)
    assert [float(r["value"]) for r in got if r["name"] == "loss"] == [float(i) for i in range(100)]
    assert [int(float(r["value"])) for r in got if r["name"] == "seen"] == [2**40 + 1]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("grad", [False, True])  # True: autograd results, read by reference (no copy at the call)
def test_values_logged_on_a_side_stream_are_read_after_they_are_computed(tmp_path: Path, grad: bool,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """Each value comes out of a long kernel on a non-default stream (alternating with the default stream, so one
    batch holds both); without ordering on the GPU the writer, on its own stream, could read a value before the
    kernel wrote it."""
    from prov4torch.record import values

    monkeypatch.setattr(values, "DEFERRED_DEVICES", {"cuda"} if grad else set())  # PROV4TORCH_METRIC_BY_REFERENCE
    x = (torch.randn(2048, 2048, device="cuda") / 64).requires_grad_(grad)  # stays finite through three products
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with prov4torch.start_run(out_dir=tmp_path, system_metrics=False, energy=False) as run:
        for i in range(60):
            with torch.cuda.stream(side if i % 2 else torch.cuda.default_stream()):
                y = (x @ x @ x).sum() * 0.0 + float(i)  # slow to compute, exactly i when done
                prov4torch.log_metric("v", y, step=i)
            if i % 3 == 2:
                run.flush()  # the writer converts right away, racing both streams
        assert run._writer.dropped == 0
    assert [float(r["value"]) for r in rows(run) if r["name"] == "v"] == [float(i) for i in range(60)]


def test_the_writer_bounds_its_queue_waits_then_drops_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A writer that falls behind (a slow disk, here a 0.3 s drain) bounds the queue: the hot path waits, then
    drops new points, counted; every point is either written or counted, none is lost silently."""
    import time as _time
    import warnings as _warnings

    from prov4torch.record import journal

    monkeypatch.setattr(journal, "BACKLOG_LIMIT", 500)
    monkeypatch.setattr(journal, "HIGH_WATER", 2000)
    monkeypatch.setattr(journal, "MAX_WAIT_S", 0.05)
    writer = journal.JournalWriter(tmp_path / "j.jsonl", tmp_path / "m.csv", interval_s=0.05)
    slow = writer.flush

    def slow_flush(rows: bool = True, sync: bool = True) -> None:
        _time.sleep(0.3)
        slow(rows, sync)

    monkeypatch.setattr(writer, "flush", slow_flush)
    writer.add_series("loss", "training")
    appenders = writer.appenders["training"]
    writer.start()
    n, peak = 0, 0
    for _ in range(600):  # past BACKLOG_LIMIT: at its next poll the writer bounds the hot path's appends
        appenders["loss"]((n, 1.0))
        n += 1
    _time.sleep(0.15)
    deadline = _time.monotonic() + 2.0
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        while _time.monotonic() < deadline:
            for _ in range(200):
                appenders["loss"]((n, 1.0))  # the hot path's call, looked up each time as Run does
                n += 1
            peak = max(peak, len(writer.series[("loss", "training")]))
    writer.close()
    assert peak <= 2000 + 1  # the bound held
    assert writer.dropped > 0 and writer.waits > 0  # the writer really was behind
    assert writer.points + writer.dropped == n  # every point written or counted
    assert sum(1 for w in caught if "points are dropped" in str(w.message)) >= 1
    assert (tmp_path / "m.csv").read_text().count("\n") == writer.points + 1


def test_the_bound_costs_nothing_while_the_writer_keeps_up(tmp_path: Path):
    with prov4torch.start_run(out_dir=tmp_path) as run:
        for i in range(10):
            run.log_metric("loss", float(i), step=i)
        plain = run.appenders["training"]["loss"]
        assert getattr(plain, "__self__", None) is not None  # a bound deque.append, no Python wrapper


def test_a_value_that_cannot_be_read_costs_only_its_own_point(tmp_path: Path):
    from prov4torch.record.journal import JournalWriter
    from prov4torch.record.metricbuf import Stamped

    class Unreadable:
        def __float__(self) -> float:
            raise RuntimeError("device lost")

    writer = JournalWriter(tmp_path / "j.jsonl", tmp_path / "m.csv")
    append = writer.add_series("loss", "training")
    for step, value in enumerate([torch.tensor(1.5), Unreadable(), torch.tensor(2.5), 3.5]):
        append((Stamped(step, 1_700_000_000.0), value))
    with pytest.warns(RuntimeWarning, match="could not be read .*device lost"):
        writer.close()
    with (tmp_path / "m.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["value"]) for r in rows] == [("0", "1.5"), ("2", "2.5"), ("3", "3.5")]
    assert writer.dropped == 1 and writer.points == 3


def test_the_fast_path_follows_the_active_run_and_stops_at_its_end():
    first = prov4torch.start_run()
    prov4torch.log_metric("loss", 1.0, step=0)  # a known series: later points take the fast path
    prov4torch.log_metric("loss", torch.tensor(2.0), step=1)
    first.end_run()
    with pytest.raises(prov4torch.RunStateError, match="no active run"):
        prov4torch.log_metric("loss", 3.0, step=2)
    with pytest.raises(prov4torch.RunStateError, match="has ended"):
        first.log_metric("loss", 3.0, step=2)
    with prov4torch.start_run() as second:
        prov4torch.log_metric("loss", 4.0, step=0)
        prov4torch.log_metric("loss", 5.0, step=1)
    assert [(r["step"], float(r["value"])) for r in rows(first)] == [("0", 1.0), ("1", 2.0)]
    assert [(r["step"], float(r["value"])) for r in rows(second)] == [("0", 4.0), ("1", 5.0)]
