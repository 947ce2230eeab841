"""Run lifecycle: start, end, context manager, statuses, state errors, configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import load, rank_activity

import prov4torch


def test_context_manager_finishes_and_writes_all_files(tmp_path: Path):
    with prov4torch.start_run(experiment="exp", run_name="first", run_id="abc") as run:
        assert prov4torch.active_run() is run
        prov4torch.log_metric("loss", 0.5)
    assert prov4torch.active_run() is None
    assert run.dir == tmp_path / "runs" / "exp" / "abc"
    names = sorted(p.name for p in run.dir.iterdir())
    assert names == ["rank-0.journal.jsonl", "rank-0.metrics.csv", "rank-0.packages.txt", "rank-0.prov.json"]
    act = rank_activity(load(run.prov_path))
    assert act["p4t:status"] == "FINISHED"
    assert act["p4t:runName"] == "first"
    assert act["p4t:experiment"] == "exp"
    assert act["prov:startTime"].endswith("+00:00") and act["prov:endTime"] >= act["prov:startTime"]


def test_exception_in_with_block_ends_failed_and_propagates():
    with pytest.raises(ZeroDivisionError), prov4torch.start_run(run_id="boom") as run:
        1 / 0  # noqa: B018
    act = rank_activity(load(run.prov_path))
    assert act["p4t:status"] == "FAILED"
    assert act["p4t:exceptionType"] == "builtins.ZeroDivisionError"
    assert act["p4t:exceptionMessage"] == "division by zero"


@pytest.mark.parametrize(("code", "status", "exit_code"), [(0, "FINISHED", 0), (3, "FAILED", 3)])
def test_system_exit_in_with_block(code: int, status: str, exit_code: int):
    with pytest.raises(SystemExit), prov4torch.start_run() as run:
        raise SystemExit(code)
    act = rank_activity(load(run.prov_path))
    assert act["p4t:status"] == status
    assert int(act["p4t:exitCode"]["$"]) == exit_code


def test_explicit_end_run_status():
    run = prov4torch.start_run()
    prov4torch.end_run(status="FAILED")
    assert rank_activity(load(run.prov_path))["p4t:status"] == "FAILED"


def test_double_end_run_is_a_clear_error_and_keeps_the_file():
    run = prov4torch.start_run()
    run.end_run()
    before = run.prov_path.read_bytes()
    with pytest.raises(prov4torch.RunStateError, match="already ended"):
        run.end_run()
    with pytest.raises(prov4torch.RunStateError, match="no active run"):
        prov4torch.end_run()
    assert run.prov_path.read_bytes() == before


def test_bad_status_is_rejected_and_run_stays_open():
    run = prov4torch.start_run()
    with pytest.raises(prov4torch.InvalidValueError, match="status must be one of"):
        prov4torch.end_run(status="DONE")
    assert prov4torch.active_run() is run
    prov4torch.end_run()


def test_second_start_run_while_active_is_an_error():
    run = prov4torch.start_run()
    with pytest.raises(prov4torch.RunStateError, match="already active"):
        prov4torch.start_run()
    run.end_run()


@pytest.mark.parametrize(
    "call",
    [
        lambda: prov4torch.log_metric("x", 1.0),
        lambda: prov4torch.log_metrics({"x": 1.0}),
        lambda: prov4torch.log_param("a", 1),
        lambda: prov4torch.log_params({"a": 1}),
        lambda: prov4torch.set_tag("a", "b"),
        lambda: prov4torch.set_tags({"a": "b"}),
        lambda: prov4torch.log_artifact("x"),
        lambda: prov4torch.log_dataset("x"),
        lambda: prov4torch.log_model("x"),
        lambda: prov4torch.load_model("x"),
        lambda: prov4torch.flush(),
        lambda: prov4torch.end_run(),
    ],
)
def test_calls_before_start_run_say_what_to_do(call):
    with pytest.raises(prov4torch.RunStateError, match=r"no active run; call prov4torch.start_run\(\) first"):
        call()


def test_calls_after_end_run_on_the_run_object_are_errors():
    run = prov4torch.start_run()
    run.end_run()
    with pytest.raises(prov4torch.RunStateError, match="has ended"):
        run.log_metric("x", 1.0)
    with pytest.raises(prov4torch.RunStateError, match="has ended"):
        run.log_param("x", 1)


def test_unwritable_output_directory_fails_at_start(tmp_path: Path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(prov4torch.ConfigError, match="cannot write to output directory .*file-not-dir"):
        prov4torch.start_run(out_dir=blocker)
    assert prov4torch.active_run() is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_read_only_output_directory_fails_at_start(tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(prov4torch.ConfigError, match="cannot write"):
        prov4torch.start_run(out_dir=ro)


def test_reusing_a_run_id_refuses_to_overwrite(tmp_path: Path):
    with prov4torch.start_run(run_id="same"):
        pass
    with pytest.raises(prov4torch.RunStateError, match="already exists"):
        prov4torch.start_run(run_id="same")


def test_environment_configures_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PROV4TORCH_EXPERIMENT", "from-env")
    monkeypatch.setenv("PROV4TORCH_RUN_ID", "env-id")
    monkeypatch.setenv("PROV4TORCH_REGION", "eu-west-1")
    with prov4torch.start_run() as run:
        pass
    assert run.dir == tmp_path / "runs" / "from-env" / "env-id"
    assert rank_activity(load(run.prov_path))["p4t:computeRegion"] == "eu-west-1"
    # the argument wins over the environment
    with prov4torch.start_run(experiment="arg", run_id="arg-id") as run2:
        pass
    assert run2.dir == tmp_path / "runs" / "arg" / "arg-id"


def test_rank_and_world_size_from_torchrun_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-42")
    with prov4torch.start_run() as run:
        pass
    assert run.prov_path.name == "rank-3.prov.json"
    act = rank_activity(load(run.prov_path))
    assert (act["p4t:rank"]["$"], act["p4t:worldSize"]["$"], act["p4t:localRank"]["$"]) == ("3", "4", "1")
    assert act["p4t:runId"] == "job-42"


def test_disabled_switch_makes_everything_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PROV4TORCH_DISABLED", "1")
    with prov4torch.start_run() as run:
        prov4torch.log_metric("loss", "not even a number")
        prov4torch.log_param("a", 1)
    prov4torch.log_metric("after", 1.0)  # no active run, still silent
    assert run.status == "FINISHED"
    assert not (tmp_path / "runs").exists()


def test_run_never_writes_into_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PROV4TORCH_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with prov4torch.start_run() as run:
        prov4torch.log_metric("x", 1.0)
    assert list(work.iterdir()) == []
    assert run.dir.is_relative_to(tmp_path / "xdg" / "prov4torch" / "runs")


def test_uuid7_run_ids_are_time_ordered_and_unique():
    from prov4torch.record.distributed import uuid7

    ids = [uuid7(unix_ms=1_700_000_000_000 + i) for i in range(50)]
    assert ids == sorted(ids)
    assert len({uuid7() for _ in range(1000)}) == 1000
    assert all(i[14] == "7" for i in ids)
