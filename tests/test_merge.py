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


def test_a_rank_read_twice_is_kept_once_and_a_changed_copy_is_a_conflict(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A merged run merged again with one of its own rank files (or a copy of a rank file) holds that rank once;
    a rank file that says something else under the same rank is a conflict, kept in a bundle of its own."""
    run_dir = job(tmp_path, monkeypatch)
    merged = tmp_path / "first.prov.json"
    merge([run_dir], merged)
    rank1 = run_dir / "rank-1.prov.json"
    copy = tmp_path / "copy" / "rank-1.prov.json"
    copy.parent.mkdir()
    copy.write_bytes(rank1.read_bytes())
    for n, inputs in enumerate([[merged, rank1], [rank1, merged], [run_dir, copy], [merged, merged.read_bytes()]]):
        if isinstance(inputs[1], bytes):  # a merged run and a copy of it
            (tmp_path / "again.json").write_bytes(inputs[1])
            inputs[1] = tmp_path / "again.json"
        out = tmp_path / f"m{n}.prov.json"
        result = runner.invoke(app, ["merge", *map(str, inputs), "-o", str(out)])
        assert result.exit_code == 0, result.output
        raw = load(out)
        assert sorted(raw["bundle"]) == ["p4t:run/job1/rank/0/bundle", "p4t:run/job1/rank/1/bundle"], inputs
        assert raw["entity"]["p4t:run/job1"]["p4t:ranksPresent"]["$"] == "2" and "p4t:merge/conflicts" not in raw
        assert "p4t:run/job1/rank/1 is in both" in result.output and "with the same records: kept once" in result.output
        assert "conflict:" not in result.output and "0 conflicts" in result.output
        read_prov(out)  # and the autouse check: no entity has two generations
    # the same rank, something else recorded: a conflict, both kept, and --strict refuses
    doc = load(copy)
    doc["activity"]["p4t:run/job1/rank/1"]["p4t:status"] = "FAILED"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(doc))
    out = tmp_path / "changed-merge.json"
    result = runner.invoke(app, ["merge", str(merged), str(changed), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "conflict: p4t:run/job1/rank/1/bundle is declared differently in" in result.output
    raw = load(out)
    assert sorted(raw["bundle"]) == ["p4t:run/job1/rank/0/bundle", "p4t:run/job1/rank/1/bundle",
                                     "p4t:run/job1/rank/1/bundle-2"]
    assert raw["bundle"]["p4t:run/job1/rank/1/bundle-2"]["activity"]["p4t:run/job1/rank/1"]["p4t:status"] == "FAILED"
    assert raw["entity"]["p4t:merge/conflicts"]["p4t:conflictingId"] == "p4t:run/job1/rank/1/bundle"
    strict = runner.invoke(app, ["merge", "--strict", str(merged), str(changed), "-o", str(tmp_path / "s.json")])
    assert strict.exit_code == 1 and "p4t:run/job1/rank/1/bundle differs between" in strict.output


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


def test_merge_reads_a_large_input_a_record_at_a_time(tmp_path: Path):
    """A 40 MB document of relations: merging holds the shared records and ids, never the input's text or its
    parsed records, so the peak stays below the file's size (reading it whole costs about 10x it)."""
    import subprocess
    import sys
    import textwrap
    doc = tmp_path / "big.json"
    script = textwrap.dedent(f"""
        import json
        with open({str(doc)!r}, "w") as fh:
            fh.write('{{"prefix": {{"ex": "http://example.org/"}}, "entity": {{"ex:a": {{}}}}, "wasGeneratedBy": {{')
            fh.write(",".join(json.dumps(f"_:g{{i}}") + ":" + json.dumps({{
                "prov:entity": f"ex:series/{{i}}", "prov:activity": "ex:a", "prov:time": "2026-01-01T00:00:00Z",
                "ex:note": "x" * 100}}) for i in range(250_000)))
            fh.write("}}}}")
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    size = doc.stat().st_size
    assert size > 40e6
    code = textwrap.dedent(f"""
        import resource
        from prov4torch.audit.merge import merge
        r = merge([{str(doc)!r}], {str(tmp_path / "out" / "m.json")!r})
        assert r.records == 250_001, r.records
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)
    base = "import resource, prov4torch.audit.merge; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    used = [int(subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, check=True).stdout)
            for c in (base, code)]
    assert used[1] - used[0] < size / 2
    merged = load(tmp_path / "out" / "m.json")
    (bundle,) = merged["bundle"].values()
    assert len(bundle["wasGeneratedBy"]) == 250_000 and "_:in0-g7" in bundle["wasGeneratedBy"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m.json"]  # no spool or temporary file left


def test_merge_streams_merged_inputs_with_bundles_anywhere(tmp_path: Path):
    """A merged document whose top level comes before and after its bundles, a bundle that is not an object,
    and a record too large for JSON: bundles kept in document order, the top level's own records kept, the
    records merging rebuilds dropped; the bad record is one error naming it, and nothing is left behind."""
    doc = {
        "entity": {"ex:top": {"ex:v": 1}, "ex:b2": {"prov:type": {"$": "prov:Bundle", "type": "xsd:QName"}}},
        "bundle": {
            "ex:b2": {"prefix": {"in": "http://inner.org/"}, "entity": {"in:x": {}},
                      "used": {"_:u": {"prov:activity": "in:act", "prov:entity": "in:x"}}},
            "ex:b1": {"activity": {"in:act": {}}},
            "ex:b3": 7,
        },
        "prefix": {"ex": "http://example.org/"},
        "wasDerivedFrom": {"_:d": {"prov:generatedEntity": "ex:top", "prov:usedEntity": "ex:other"}},
    }
    f = tmp_path / "in.json"
    f.write_text(json.dumps(doc))
    out = tmp_path / "o" / "m.json"
    merge([f], out)
    raw = load(out)
    assert list(raw["bundle"]) == ["ex:b2", "ex:b1", "p4t:input/0-in.json"]
    assert raw["bundle"]["ex:b2"]["used"] == {"_:in0b0-u": {"prov:activity": "in:act", "prov:entity": "in:x"}}
    top = raw["bundle"]["p4t:input/0-in.json"]
    assert list(top["wasDerivedFrom"]) == ["_:in0-d"]
    assert "ex:top" in raw["entity"] and raw["entity"]["ex:b2"] == {"prov:type": {"$": "prov:Bundle",
                                                                                    "type": "xsd:QName"}}
    bad = tmp_path / "bad.json"
    bad.write_text('{"entity": {"ex:a": {}, "ex:b": {"ex:v": 1e400}}}')
    result = runner.invoke(app, ["merge", str(bad), "-o", str(tmp_path / "o2" / "m.json")])
    assert result.exit_code == 2 and "'ex:b'" in result.output and "too large" in result.output, result.output
    assert not (tmp_path / "o2").exists() or list((tmp_path / "o2").iterdir()) == []
