"""prov4torch merge: bundles per rank, a collection per job, dedup, renamed blank nodes, conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CORPUS, load, read_prov
from prov4torch_cli.app import app
from typer.testing import CliRunner

import prov4torch
from prov4torch.audit.merge import merge

runner = CliRunner()


def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: int = 2, present: tuple[int, ...] | None = None,
        run_id: str = "job1") -> Path:
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"shared data")
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
    for rank in present if present is not None else range(world):
        monkeypatch.setenv("RANK", str(rank))
        with prov4torch.start_run(experiment="m") as run:
            prov4torch.log_param("lr", 0.1)
            prov4torch.log_dataset(shared, name="shared", jurisdiction="EU")
            prov4torch.log_metric("loss", 1.0 / (rank + 1))
    monkeypatch.delenv("RANK")
    return run.dir


def test_merge_gives_a_bundle_per_rank_and_a_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = job(tmp_path, monkeypatch)
    out = tmp_path / "merged.json"
    report = merge([run_dir], out)
    doc = read_prov(out)
    assert sorted(str(b.identifier) for b in doc.bundles) == [
        "p4t:run/job1/rank/0/bundle", "p4t:run/job1/rank/1/bundle"]
    raw = load(out)
    coll = raw["entity"]["p4t:run/job1"]
    assert coll["prov:type"]["$"] == "prov:Collection" and coll["p4t:worldSize"]["$"] == "2"
    assert sorted(raw["hadMember"].values(), key=lambda m: m["prov:entity"]) == [
        {"prov:collection": "p4t:run/job1", "prov:entity": "p4t:run/job1/rank/0/bundle"},
        {"prov:collection": "p4t:run/job1", "prov:entity": "p4t:run/job1/rank/1/bundle"}]
    # the shared dataset, agents and job activity: once at the top level, not in the bundles
    datasets = [k for k in raw["entity"] if k.startswith("p4t:dataset/")]
    assert len(datasets) == 1
    for b in raw["bundle"].values():
        assert not [k for k in b.get("entity", {}) if k.startswith("p4t:dataset/")]
    assert "p4t:run/job1/job" in raw["activity"]
    assert report.deduplicated > 0 and report.conflicts == []
    # blank-node relation ids never collide across bundles
    rel_ids = [rid for b in raw["bundle"].values() for sect in b.values() for rid in sect if rid.startswith("_:")]
    assert len(rel_ids) == len(set(rel_ids)) and all(rid.startswith(("_:rank0-", "_:rank1-")) for rid in rel_ids)


def test_merge_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = job(tmp_path, monkeypatch)
    merge([run_dir], tmp_path / "a.json")
    merge([run_dir / "rank-1.prov.json", run_dir / "rank-0.prov.json"], tmp_path / "b.json")
    merge([run_dir], tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def test_missing_ranks_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = job(tmp_path, monkeypatch, world=3, present=(0, 2))
    result = runner.invoke(app, ["merge", str(run_dir), "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "warning: run job1: rank(s) [1] missing (world size 3, 2 found)" in result.output
    coll = load(tmp_path / "m.json")["entity"]["p4t:run/job1"]
    assert coll["p4t:ranksMissing"] == {"$": "1", "type": "xsd:int"}


def test_conflicts_are_reported_and_strict_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = job(tmp_path, monkeypatch)
    f = run_dir / "rank-1.prov.json"
    doc = load(f)
    (did,) = [k for k in doc["entity"] if k.startswith("p4t:dataset/")]
    doc["entity"][did]["p4t:jurisdiction"] = "US"
    f.write_text(json.dumps(doc))
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["merge", str(run_dir), "-o", str(out)])
    assert result.exit_code == 0
    assert f"conflict: {did} is declared differently in" in result.output
    raw = load(out)
    assert raw["bundle"]["p4t:run/job1/rank/1/bundle"]["entity"][did]["p4t:jurisdiction"] == "US"
    assert raw["entity"]["p4t:merge/conflicts"]["p4t:conflictingId"] == did
    strict = runner.invoke(app, ["merge", str(run_dir), "-o", str(tmp_path / "s.json"), "--strict"])
    assert strict.exit_code == 1 and strict.output.startswith("Error: 1 conflicting declaration(s)")
    assert not (tmp_path / "s.json").exists()


def test_merged_output_is_checked_like_its_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = job(tmp_path, monkeypatch)
    merge([run_dir], run_dir / "run.prov.json")
    merge([run_dir], run_dir / "run.prov.json")  # its own output is not an input
    assert len(load(run_dir / "run.prov.json")["bundle"]) == 2
    assert prov4torch.check([run_dir / "run.prov.json"], "default").verdict == \
        prov4torch.check([run_dir / "rank-0.prov.json", run_dir / "rank-1.prov.json"], "default").verdict


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no corpus")
def test_merge_accepts_other_tools_prov_json(tmp_path: Path):
    files = sorted((CORPUS / "valid").rglob("*.json"))[:40] + sorted((CORPUS / "real-world").rglob("*.json"))
    out = tmp_path / "m.json"
    report = merge(files, out)
    assert len(load(out)["bundle"]) == len(files) == len(report.inputs)
    read_prov(out) if not report.conflicts else None


def test_bad_inputs_exit_2(tmp_path: Path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    for args, message in [
        (["merge", str(tmp_path / "nope"), "-o", "x.json"], "no such file or directory"),
        (["merge", str(tmp_path / "bad.json"), "-o", "x.json"], "a PROV-JSON document is a JSON object"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("Error: ") and message in result.output
