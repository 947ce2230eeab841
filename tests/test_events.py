"""The journal's typed events (issue 21): one class per kind, one encode/decode pair, nothing malformed passes
silently -- not in a live run's journal, not through ``recover``."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import prov4torch
from prov4torch import events as ev
from prov4torch.errors import MalformedEventError

PACKAGE = Path(prov4torch.__file__).parent

SAMPLES: list[ev.Event] = [
    ev.Start(run_id="r1", time=1.7e9, rank=1, world_size=2, local_rank=1, attempt=0, policy={"id": "p", "mode": "x"},
             pid=42, command_line="python t.py", torch_seed=7),
    ev.Context(code={"script": "t.py"}, environment={"python": "3.11"}, packages={"count": 3}),
    ev.EnvInfo(info={"gpu_models": ["H100"]}),
    ev.Launcher(),
    ev.Identity(world_size=4),
    ev.PolicyAdopted(policy={"id": "p4t:policy/inline", "name": "p", "mode": "enforce"}, time=3.0),
    ev.Param(key="lr", value=0.1),
    ev.Tag(key="team", value="a"),
    ev.Attrs(attrs={"p4t:cpuPercentMean": 12.5}),
    ev.Dataset(id="p4t:dataset/sha256-ab", roles=["training"], name="d", sha256="ab", size=3,
               files=[["a.csv", "ab", 3]], file_count=1, tags={"p4t:license": "MIT"}, tag_conflicts=["x"]),
    ev.DatasetDigest(key="p4t:run/r/dataset/1", id="p4t:dataset/sha256-ab", sha256="ab", size=3),
    ev.Usage(id="p4t:dataset/sha256-ab", usage={"training": {"samples": 10, "batches": 2, "epochs": 1}}),
    ev.Artifact(id="p4t:artifact/sha256-cd", name="opt.pt", path="/x/opt.pt", kind="run-state", used=True),
    ev.ModelSaved(id="p4t:model/sha256-ef", name="net", version=2, sha256="ef", derived_from=["p4t:dataset/x"],
                  lineage_gap=True, step=10),
    ev.ModelLoaded(id="p4t:model/sha256-ef", path="/x/m.pt", lineage_known=True, lineage_errors=["bad"],
                   upstream={"p4t:dataset/x": {"name": "x"}}, derivations=[["a", "b"]]),
    ev.Decision(time=1.7e9, policy_id="p4t:policy/x", datasets=["d"], role="training",
                attrs={"p4t:verdict": "deny"}),
    ev.Signal(signal=15, signal_name="SIGTERM", time=1.7e9),
    ev.End(status="FAILED", exit_code=1, exception={"type": "ValueError", "message": "boom"}),
]


def test_every_kind_has_a_sample_and_round_trips_through_json():
    assert {type(e) for e in SAMPLES} == set(ev.KINDS.values())
    for event in SAMPLES:
        line = json.dumps(ev.encode(event))
        back = ev.decode(json.loads(line))
        assert back == event, line
        assert json.loads(line)["v"] == ev.EVENT_VERSION


def test_encode_leaves_defaults_out_and_a_line_without_a_version_is_version_one():
    assert ev.encode(ev.Launcher()) == {"t": "launcher", "v": 1}
    assert ev.decode({"t": "param", "key": "k", "value": [1, 2]}) == ev.Param(key="k", value=[1, 2])


@pytest.mark.parametrize(("obj", "says"), [
    ({"t": "nonsense"}, "unknown event kind 'nonsense'"),
    ([1, 2], "JSON object"),
    ({"t": "param", "v": 99, "key": "k", "value": 1}, "version 99"),
    ({"t": "param", "v": True, "key": "k", "value": 1}, "version True"),
    ({"t": "param", "value": 1}, "param: field 'key' is missing"),
    ({"t": "start", "run_id": 5}, "start: field 'run_id' is not str"),
    ({"t": "start", "run_id": "r", "rank": True}, "start: field 'rank'"),
    ({"t": "start", "run_id": "r", "rank": -1}, "start: field 'rank' is out of range"),
    ({"t": "start", "run_id": "r", "world_size": 2**40}, "start: field 'world_size' is out of range"),
    ({"t": "identity", "world_size": 0}, "identity: field 'world_size'"),
    ({"t": "dataset", "id": "d", "roles": "training"}, "dataset: field 'roles'"),
    ({"t": "dataset", "id": "d", "roles": [1]}, "dataset: field 'roles'"),
    ({"t": "usage", "id": "d", "usage": {"training": {"samples": "10"}}}, "usage: field 'usage'"),
    ({"t": "model", "id": "m", "name": "n", "version": 1.5}, "model: field 'version'"),
    ({"t": "end", "status": "FINISHED", "time": 1e13}, "end: time"),
    ({"t": "end", "status": "FINISHED", "time": "yesterday"}, "end: field 'time'"),
    ({"t": "decision", "datasets": None}, "decision: field 'datasets'"),
    ({"t": "end", "status": "ALLOW"}, "end: field 'status' is not one of FINISHED"),
])
def test_decode_refuses_what_does_not_fit_and_names_kind_and_field(obj, says):
    with pytest.raises(MalformedEventError) as err:
        ev.decode(obj)
    assert says in str(err.value)


def test_events_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SAMPLES[0].run_id = "other"  # type: ignore[attr-defined,misc]


def test_journal_events_are_built_only_as_typed_events():
    """No module builds a ``{"t": ...}`` dict or reads ``event["t"]`` any more: the contract is the classes."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name == "events.py" and path.parent == PACKAGE:
            continue
        if re.search(r"""["']t["']\s*:\s*["']""", text) or re.search(r"""\[["']t["']\]|\.get\(["']t["']\)""", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def _run_dir(tmp_path: Path) -> Path:
    with prov4torch.start_run(out_dir=tmp_path, experiment="e", system_metrics=False, energy=False) as run:
        prov4torch.log_param("lr", 0.1)
        prov4torch.log_metric("loss", 1.0, step=0)
    return run.dir


def test_a_live_journal_is_typed_events_of_the_current_version(tmp_path: Path):
    journal = next(_run_dir(tmp_path).glob("rank-0.journal.jsonl"))
    kinds = []
    for line in journal.read_text().splitlines():
        obj = json.loads(line)
        assert obj["v"] == ev.EVENT_VERSION
        kinds.append(type(ev.decode(obj)).__name__)
    assert kinds[0] == "Start" and kinds[-1] == "End" and "Param" in kinds


def test_recover_counts_every_line_that_is_not_an_event_and_keeps_the_rest(tmp_path: Path):
    d = _run_dir(tmp_path)
    journal = d / "rank-0.journal.jsonl"
    lines = journal.read_text().splitlines()
    end = lines.pop()  # the run "died" before its end: recover rebuilds it
    bad = [json.dumps({"t": "param", "key": "x"}), json.dumps({"t": "teleport", "to": "mars"}),
           json.dumps({"t": "param", "v": 7, "key": "y", "value": 1}), "not json", '{"t": "tag", "key": "a", ']
    journal.write_text("\n".join([*lines, *bad]) + "\n")
    (d / "rank-0.prov.json").unlink()
    (rec,) = prov4torch.recover(d)
    assert rec.skipped_lines == len(bad)
    doc = json.loads((d / "rank-0.prov.json").read_text())
    (act,) = [a for a in doc["activity"].values() if a.get("p4t:runId")]
    skipped = act["p4t:journalSkippedLines"]
    assert int(skipped["$"] if isinstance(skipped, dict) else skipped) == len(bad)
    assert act["p4t:status"] == "INCOMPLETE"
    params = [e for e in doc["entity"].values() if "param:lr" in e]
    assert params and "param:x" not in params[0] and "param:y" not in params[0]
    assert json.loads(end)["t"] == "end"
