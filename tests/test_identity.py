"""Record integrity (issue 11): one declaration per id, content identity for checkpoints and data,
a document that is never lost. Every document here also passes the independent checks in conftest."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import load, rank_activity, read_prov, role, run_script
from provcheck import constraint_errors, schema_errors
from torch.utils.data import Dataset, Subset, TensorDataset

import prov4torch
from prov4torch.audit.merge import merge
from prov4torch.record.identity import FileDigest, root_digest


def generations(doc: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in doc.get("wasGeneratedBy", {}).values():
        out[g["prov:entity"]] = out.get(g["prov:entity"], 0) + 1
    return out


# -- checkpoints ----------------------------------------------------------------------------------

def test_best_pt_saved_and_reloaded_gives_one_valid_document(tmp_path: Path):
    best = tmp_path / "best.pt"
    model = torch.nn.Linear(3, 2)
    with prov4torch.start_run() as run:
        torch.save(model.state_dict(), best)
        mv = prov4torch.log_model(best, name="best")
        state = prov4torch.load_model(best)
        model.load_state_dict(state)
        prov4torch.log_model(best, name="best")  # the same bytes recorded again
    doc = load(run.prov_path)
    assert run.record_error is None
    assert generations(doc)[mv.id] == 1
    assert mv.id in {u["prov:entity"] for u in doc["used"].values() if role(u) == "p4t:baseModel"}
    (gen,) = [g for g in doc["wasGeneratedBy"].values() if g["prov:entity"] == mv.id]
    assert "p4t:savedAgain" in gen
    read_prov(run.prov_path)


def test_identical_bytes_saved_twice_and_repeated_log_model(tmp_path: Path):
    args = {"lr": 0.1}
    model = torch.nn.Linear(2, 2)
    with prov4torch.start_run() as run:
        for ckpt in ("checkpoint-1", "checkpoint-2"):  # the HF Trainer writes training_args.bin in each
            (tmp_path / ckpt).mkdir()
            prov4torch.log_model(torch.save(args, tmp_path / ckpt / "training_args.bin") or
                                 tmp_path / ckpt / "training_args.bin", name="training_args")
        a = prov4torch.log_model(model, name="m")
        b = prov4torch.log_model(model, name="m")
    assert a.id == b.id and b.version == 2
    doc = load(run.prov_path)
    assert all(n == 1 for n in generations(doc).values())
    assert not [r for r in doc.get("wasDerivedFrom", {}).values() if r["prov:generatedEntity"] == r["prov:usedEntity"]]


def test_a_then_b_then_a_makes_no_revision_cycle(tmp_path: Path):
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with prov4torch.start_run() as run:
        va = prov4torch.log_model(a, name="m")
        vb = prov4torch.log_model(b, name="m")
        va2 = prov4torch.log_model(a, name="m")
    assert va.id == va2.id != vb.id
    doc = load(run.prov_path)
    revisions = {(r["prov:generatedEntity"], r["prov:usedEntity"]) for r in doc["wasDerivedFrom"].values()
                 if r.get("prov:type", {}).get("$") == "prov:Revision"}
    assert revisions == {(vb.id, va.id)}
    assert constraint_errors(doc) == []


def test_the_same_weights_under_two_names_are_one_model(tmp_path: Path):
    from safetensors.torch import save_file

    model = torch.nn.Linear(4, 3)
    torch.save(model.state_dict(), tmp_path / "a.pt")
    torch.save(model.state_dict(), tmp_path / "b.pt")
    save_file(model.state_dict(), tmp_path / "c.safetensors")
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()  # torch.save embeds the name
    with prov4torch.start_run(run_id="one"):
        a = prov4torch.log_model(tmp_path / "a.pt", name="a")
    with prov4torch.start_run(run_id="two"):
        b = prov4torch.log_model(tmp_path / "b.pt", name="b")
        c = prov4torch.log_model(tmp_path / "c.safetensors", name="c")
    assert a.id == b.id == c.id and a.sha256 != b.sha256
    other = torch.nn.Linear(4, 3)
    with prov4torch.start_run(run_id="three"):
        assert prov4torch.log_model(other, name="x").id != a.id


def test_sharded_safetensors_checkpoint_is_one_model_with_a_root_digest(tmp_path: Path):
    from safetensors.torch import save_file

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    sd = model.state_dict()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    names = sorted(sd)
    shard1, shard2 = {k: sd[k] for k in names[:2]}, {k: sd[k] for k in names[2:]}
    save_file(shard1, ckpt / "model-00001-of-00002.safetensors")
    save_file(shard2, ckpt / "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in shard1},
                                            **{k: "model-00002-of-00002.safetensors" for k in shard2}}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.save(sd, tmp_path / "whole.pt")
    with prov4torch.start_run() as run:
        sharded = prov4torch.log_model(ckpt / "model.safetensors.index.json", name="sharded")
        whole = prov4torch.log_model(tmp_path / "whole.pt", name="whole")
    assert sharded.id == whole.id  # the same weights, whatever the files
    ent = load(run.prov_path)["entity"][sharded.id]
    files = [FileDigest(name, hashlib.sha256((ckpt / name).read_bytes()).hexdigest(), 0)
             for name in sorted(p.name for p in ckpt.iterdir() if not p.name.endswith(".lineage.json"))]
    # OpenSSF model-signing root digest: SHA-256 over the raw per-file digests, in name order
    expected = hashlib.sha256(b"".join(bytes.fromhex(f.sha256) for f in files)).hexdigest()
    assert ent["p4t:rootSha256"] == expected == root_digest(files)
    assert len(ent["p4t:fileSha256"]) == 3


def test_weight_digest_ignores_file_format_but_not_values():
    from prov4torch.record.identity import weights_digest

    m = torch.nn.Linear(3, 3)
    sd = m.state_dict()
    assert weights_digest(m) == weights_digest(sd) == weights_digest({"state_dict": sd, "epoch": 3})
    flipped = {k: v.clone() for k, v in sd.items()}
    flipped["bias"][0] += 1
    assert weights_digest(flipped) != weights_digest(sd)
    assert weights_digest({"lr": 0.1}) is None and weights_digest(m.weight.to(torch.float16)) is None


# -- datasets -------------------------------------------------------------------------------------

class Images(Dataset):
    """A map-style dataset holding its data in attributes, with random augmentation in __getitem__."""

    def __init__(self, data: torch.Tensor, targets: list[int]) -> None:
        self.data, self.targets = data, targets
        self.transform = lambda x: x + 0.01 * torch.randn_like(x)  # random: __getitem__ draws numbers

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(self.data[i]), self.targets[i]


def dataset_id(ds) -> str:
    with prov4torch.start_run() as run:
        did = prov4torch.log_dataset(ds, name="d")
    return run.prov_path and did


def test_two_different_datasets_of_the_same_shape_get_different_ids():
    g = torch.Generator().manual_seed(0)
    a = Images(torch.rand(64, 1, 8, 8, generator=g), [i % 10 for i in range(64)])
    b = Images(torch.rand(64, 1, 8, 8, generator=g), [i % 10 for i in range(64)])
    assert dataset_id(a) != dataset_id(b)


def test_one_flipped_label_changes_the_id():
    data = torch.rand(200, 4)
    labels = [i % 3 for i in range(200)]
    flipped = list(labels)
    flipped[137] = (flipped[137] + 1) % 3
    assert dataset_id(Images(data, labels)) != dataset_id(Images(data, flipped))
    assert dataset_id(Images(data, labels)) == dataset_id(Images(data.clone(), list(labels)))


def test_subsets_and_concatenations_are_identified_by_what_they_select():
    base = TensorDataset(torch.arange(100.0))
    assert dataset_id(Subset(base, range(50))) != dataset_id(Subset(base, range(50, 100)))
    assert dataset_id(Subset(base, list(range(50)))) == dataset_id(Subset(base, list(range(50))))


class Opaque(Dataset):
    """Nothing content-like reachable: items made on the fly from an object whose repr has an address."""

    def __init__(self) -> None:
        self.source = object()

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return torch.tensor([float(i)])


def test_unreachable_content_is_declared_or_unidentified_never_shared():
    with prov4torch.start_run() as run:
        a = prov4torch.log_dataset(Opaque(), name="a")
        b = prov4torch.log_dataset(Opaque(), name="b")
        c = prov4torch.log_dataset(Opaque(), name="c", dataset_id="corp/opaque-v1")
    assert a != b and a.startswith(run.activity + "/dataset/")
    assert c == "p4t:dataset/declared/corp%2Fopaque-v1"
    ents = load(run.prov_path)["entity"]
    assert ents[a]["p4t:identity"] == "unidentified" and ents[c]["p4t:identity"] == "declared"


class Generated(Dataset):
    """Items made from settings alone: a length and a seed, no data held."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([float(i + self.seed)])


class OtherGenerated(Generated):
    def __getitem__(self, i: int):
        return torch.tensor([float(-i)])


def test_settings_alone_are_not_content():
    """Two generators that share a length and a seed are not the same data: neither has a content id."""
    with prov4torch.start_run() as run:
        a = prov4torch.log_dataset(Generated(2000), name="a")
        b = prov4torch.log_dataset(OtherGenerated(2000), name="b")
        c = prov4torch.log_dataset(TensorDataset(torch.arange(4.0)), name="c")
    ents = load(run.prov_path)["entity"]
    assert a != b and ents[a]["p4t:identity"] == ents[b]["p4t:identity"] == "unidentified"
    assert ents[c]["p4t:identity"] == "content"


SEEDED = """
import sys, torch
from torch.utils.data import DataLoader, Dataset
sys.path.insert(0, {tests!r})
from test_identity import Images
torch.manual_seed(0)
data, labels = torch.rand(96, 4), [i % 3 for i in range(96)]
ds = Images(data, labels)
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
record = sys.argv[1] == "record"
if record:
    import prov4torch
    run = prov4torch.start_run(system_metrics=False, energy=False)
    print("ID", prov4torch.log_dataset(ds, name="aug"))
for x, y in DataLoader(ds, batch_size=16, shuffle=True):
    opt.zero_grad(); loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(y)); loss.backward(); opt.step()
print("LOSS", repr(loss.item()))
if record:
    prov4torch.end_run()
"""


def test_an_augmenting_dataset_keeps_its_id_and_recording_never_changes_the_seeded_result(tmp_path: Path):
    body = SEEDED.format(tests=str(Path(__file__).parent))
    plain = run_script(tmp_path, body, "plain")
    rec1 = run_script(tmp_path, body, "record")
    rec2 = run_script(tmp_path, body, "record")
    for p in (plain, rec1, rec2):
        assert p.returncode == 0, p.stderr
    loss = {p.stdout.split("LOSS ")[1].strip() for p in (plain, rec1, rec2)}
    assert len(loss) == 1  # bit-identical with and without recording
    ids = {p.stdout.split("ID ")[1].split()[0] for p in (rec1, rec2)}
    assert len(ids) == 1 and next(iter(ids)).startswith("p4t:dataset/sha256-")  # the same id in two processes


def test_a_csv_changed_in_one_row_gets_a_new_id(tmp_path: Path):
    class CsvRows(Dataset):
        def __init__(self, path: Path) -> None:
            self.path = str(path)
            with open(path, newline="") as fh:
                self.rows = [[float(v) for v in r] for r in csv.reader(fh)]

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int):
            return torch.tensor(self.rows[i])

    f = tmp_path / "data.csv"
    rows = [[i, i * 2, i % 7] for i in range(5000)]
    f.write_text("\n".join(",".join(map(str, r)) for r in rows))
    first = dataset_id(CsvRows(f))
    rows[4321][1] = -1
    f.write_text("\n".join(",".join(map(str, r)) for r in rows))
    assert dataset_id(CsvRows(f)) != first


def test_large_data_is_hashed_in_the_background_and_the_run_ends_with_its_content_id(monkeypatch):
    from prov4torch.record import datasets

    monkeypatch.setattr(datasets, "SYNC_LIMIT", 1024)
    data = TensorDataset(torch.rand(4096, 16))
    with prov4torch.start_run() as run:
        provisional = prov4torch.log_dataset(data, name="big")
        assert provisional.startswith(run.activity + "/dataset/")
        mv = prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    doc = load(run.prov_path)
    (did,) = [k for k in doc["entity"] if k.startswith("p4t:dataset/")]
    assert doc["entity"][did]["p4t:identity"] == "content"
    assert (mv.id, did) in {(r["prov:generatedEntity"], r["prov:usedEntity"]) for r in doc["wasDerivedFrom"].values()}


def test_a_digest_that_finishes_before_its_dataset_event_still_names_the_dataset():
    """The hashing thread can record its result before the training thread records the dataset (seen under
    load): replayed in either order, the journal gives the content id and its digest."""
    from prov4torch.events import decode
    from prov4torch.record.replay import RunRecord

    dataset = {"t": "dataset", "id": "p4t:run/r/dataset/1", "identity": "pending", "name": "big", "roles": []}
    digest = {"t": "dataset_digest", "key": "p4t:run/r/dataset/1", "id": "p4t:dataset/sha256-ab", "sha256": "ab",
              "size": 3, "identity": "content"}
    for events in ([dataset, digest], [digest, dataset]):
        rec = RunRecord.replay(decode(e) for e in events)
        assert list(rec.datasets) == ["p4t:dataset/sha256-ab"], events
        got = rec.datasets["p4t:dataset/sha256-ab"]
        assert (got.identity, got.sha256, got.name) == ("content", "ab", "big")


def test_file_digests_are_cached_by_path_size_and_mtime(tmp_path: Path):
    from prov4torch.record.identity import DigestCache, digest_path

    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(1 << 20))
    cache = DigestCache(tmp_path / "store" / ".cache" / "d.sqlite", tmp_path / "store")
    first = digest_path(f, cache)
    assert cache.get(str(f.resolve()), f.stat()) == first.sha256
    f.write_bytes(os.urandom(1 << 20))
    assert digest_path(f, cache).sha256 != first.sha256


# -- documents ------------------------------------------------------------------------------------

KILLED = """
import os, signal, sys, torch, prov4torch
prov4torch.start_run(system_metrics=False, energy=False)
m = torch.nn.Linear(2, 2)
torch.save(m.state_dict(), "best.pt")
prov4torch.log_model("best.pt", name="best")
prov4torch.load_model("best.pt")
prov4torch.log_model(m, name="best")
prov4torch.log_model(torch.nn.Linear(2, 2), name="best")
prov4torch.log_model(m, name="best")
prov4torch.log_metric("loss", 0.5)
prov4torch.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_killed_after_resaves_recovers_into_a_valid_document_of_the_same_shape(tmp_path: Path):
    proc = run_script(tmp_path, KILLED)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.journal.jsonl")]
    (result,) = prov4torch.recover(run_dir)
    assert result.error is None and result.status == "INCOMPLETE"
    doc = load(run_dir / "rank-0.prov.json")
    assert schema_errors(doc) == [] and constraint_errors(doc) == []
    read_prov(run_dir / "rank-0.prov.json")


def test_a_recovered_document_has_the_shape_of_a_finished_one(tmp_path: Path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"x" * 100)
    with prov4torch.start_run(policy="default", region="eu-west-1", purpose="training") as run:
        prov4torch.log_dataset(data, name="d", origin_country="DE", jurisdiction="EU", consent_scope="training",
                               license="CC-BY-4.0", personal_data=False)
        prov4torch.log_param("lr", 0.1)
        for i in range(5):
            prov4torch.log_metric("loss", 1.0 / (i + 1), step=i)
        prov4torch.log_model(torch.nn.Linear(2, 2), name="m")
    finished = load(run.prov_path)
    run.prov_path.unlink()
    prov4torch.recover(run.dir)
    recovered = load(run.prov_path)

    def shape(doc: dict) -> dict:
        out = {}
        for section, records in doc.items():
            if section == "prefix":
                continue
            for rid, rec in records.items():
                key = (section, rid if not rid.startswith("_:") else "_")
                out.setdefault(key, []).append({k: (type(v).__name__, v.get("type") if isinstance(v, dict) else None,
                                                    v if k in ("prov:role", "prov:type") else None)
                                                for k, v in rec.items() if k not in ("p4t:recovered",)})
        return {k: sorted(v, key=json.dumps) for k, v in out.items()}

    assert shape(recovered) == shape(finished)


def test_a_record_that_cannot_be_built_still_leaves_a_valid_document_and_says_so(tmp_path: Path, monkeypatch):
    from prov4torch.record import document

    def broken(*a, **k):
        raise RuntimeError("simulated bug in the builder")

    with pytest.warns(RuntimeWarning, match="could not be built.*journal"):
        with prov4torch.start_run() as run:
            prov4torch.log_metric("loss", 1.0)
            monkeypatch.setattr(document, "build", broken)
    assert run.status == "FINISHED" and "simulated bug" in run.record_error
    act = rank_activity(load(run.prov_path))
    assert act["p4t:status"] == "FINISHED" and "journal" in act["p4t:recordError"]


def test_prov4torch_run_exits_non_zero_naming_the_journal_when_the_record_is_incomplete(tmp_path: Path):
    script = tmp_path / "ok.py"
    script.write_text(textwrap.dedent("""
        from prov4torch.record import document
        def broken(*a, **k):
            raise RuntimeError("simulated")
        document.build = broken
        print("trained")
    """))
    proc = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "run", str(script)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "trained" in proc.stdout
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("prov4torch: error:")]
    assert "journal.jsonl" in line and "Traceback" not in proc.stderr


@pytest.mark.parametrize("journal", [
    '{"t": "start"}\n',
    '{"t": "start", "run_id": "x", "time": 1e12}\n{"t": "model"}\n',
    '{"t": "start", "run_id": "x", "rank": "zero"}\n',
    '{"t": "start", "run_id": "x", "time": 1.0}\n{"t": "dataset", "id": 3, "roles": 7}\n{"t": "usage"}\n',
    '[' * 100000 + '\n{"t": "start", "run_id": "y"}\n',
    '{"t": "start", "run_id": "x", "time": "yesterday"}\n{"t": "end", "time": 99e99, "status": 5}\n',
    '{"t": "start", "run_id": "x"}\n{"t": "param", "key": "a", "value": ' + '9' * 5000 + '}\n',
])
def test_recover_never_prints_a_traceback(tmp_path: Path, journal: str):
    d = tmp_path / "run"
    d.mkdir()
    (d / "rank-0.journal.jsonl").write_text(journal)
    (d / "rank-0.metrics.csv").write_text("name,context,step,timestamp,value\nloss,training,0,99999999999999999,1\n")
    proc = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "recover", str(d)], capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 0:
        doc = load(d / "rank-0.prov.json")
        assert schema_errors(doc) == [] and constraint_errors(doc) == []
    else:
        assert len(proc.stderr.strip().splitlines()) == 1


def test_an_elastic_restart_records_a_new_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "elastic")
    with prov4torch.start_run() as first:
        prov4torch.log_metric("loss", 1.0)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with prov4torch.start_run() as second:
        prov4torch.log_metric("loss", 0.5)
    assert first.dir == second.dir and second.prov_path.name == "rank-0.attempt-1.prov.json"
    act = rank_activity(load(second.prov_path))
    assert act["p4t:attempt"]["$"] == "1"
    informed = load(second.prov_path)["wasInformedBy"].values()
    assert ("p4t:run/elastic/rank/0/attempt/1", "p4t:run/elastic/rank/0") in {
        (r["prov:informed"], r["prov:informant"]) for r in informed}
    report = merge([first.dir], tmp_path / "m.prov.json")
    assert report.runs["elastic"]["ranks"] == [0] and report.missing() == {}


# -- merge ------------------------------------------------------------------------------------------

def relations(doc: dict) -> int:
    n = 0
    for c in [doc, *doc.get("bundle", {}).values()]:
        n += sum(len(v) for k, v in c.items() if k not in ("prefix", "entity", "activity", "agent", "bundle"))
    return n


def test_merging_a_pretraining_with_its_fine_tune_has_no_conflict_and_a_re_merge_keeps_every_relation(
        tmp_path: Path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"data" * 100)
    with prov4torch.start_run(run_id="pre") as pre:
        prov4torch.log_dataset(data, name="pretraining-data", jurisdiction="EU")
        base = prov4torch.log_model(torch.nn.Linear(2, 2), name="base")
    with prov4torch.start_run(run_id="ft") as ft:
        prov4torch.load_model(base.path)
        prov4torch.log_dataset(data, name="called-something-else-here", jurisdiction="EU")
        prov4torch.log_model(torch.nn.Linear(2, 2), name="tuned")
    first = merge([pre.prov_path, ft.prov_path], tmp_path / "a.prov.json")
    assert first.conflicts == []
    again = merge([tmp_path / "a.prov.json"], tmp_path / "b.prov.json")
    assert again.conflicts == []
    a, b = load(tmp_path / "a.prov.json"), load(tmp_path / "b.prov.json")
    assert relations(b) == relations(a) > 20
    read_prov(tmp_path / "b.prov.json")


def test_merge_removes_its_temporary_file_when_terminated(tmp_path: Path):
    from conftest import ROOT

    big = tmp_path / "in"
    big.mkdir()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gen_rank_files import write_rank_files

    write_rank_files(big, 64, "sig")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, prov4torch.audit.merge as m
        real = m.stream.items
        def slow(p):
            time.sleep(0.05)
            return real(p)
        m.stream.items = slow
        m.merge([{str(big)!r}], {str(tmp_path / 'out.prov.json')!r})
    """)])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.prov.json.*.tmp")):
        time.sleep(0.02)
    assert list(tmp_path.glob(".out.prov.json.*.tmp")), "merge never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob(".out.prov.json.*")) and not (tmp_path / "out.prov.json").exists()


# -- independent views ------------------------------------------------------------------------------

def test_prov_o_and_sparql_find_the_data_behind_a_checkpoint(tmp_path: Path):
    rdflib = pytest.importorskip("rdflib")
    from prov.model import ProvDocument

    train, other = tmp_path / "train.bin", tmp_path / "other.bin"
    train.write_bytes(b"t" * 10)
    other.write_bytes(b"o" * 10)
    with prov4torch.start_run() as run:
        ds = prov4torch.log_dataset(train, name="train")
        prov4torch.log_dataset(other, name="eval", role="evaluation")
        mv = prov4torch.log_model(torch.nn.Linear(2, 2), name="m")
    doc = ProvDocument.deserialize(source=str(run.prov_path), format="json")
    with warnings.catch_warnings():  # prov 3.2.3's RDF serializer calls rdflib 7.6 APIs it deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        turtle = doc.serialize(format="rdf", rdf_format="turtle")
    g = rdflib.Graph()
    g.parse(data=turtle, format="turtle")
    p4t = prov4torch.NAMESPACE
    rows = g.query("""
        PREFIX prov: <http://www.w3.org/ns/prov#>
        PREFIX mls: <http://www.w3.org/ns/mls#>
        SELECT ?d WHERE {
          ?model (prov:wasDerivedFrom|prov:qualifiedDerivation/prov:entity)+ ?d . ?d a mls:Dataset .
        }
    """, initBindings={"model": rdflib.URIRef(p4t + mv.id.split(":", 1)[1])})
    assert {str(r[0]) for r in rows} == {p4t + ds.split(":", 1)[1]}
    roles = {str(o) for o in g.objects(None, rdflib.URIRef("http://www.w3.org/ns/prov#hadRole"))}
    assert p4t + "training" in roles and all(isinstance(o, rdflib.URIRef)
                                             for o in g.objects(None, rdflib.URIRef("http://www.w3.org/ns/prov#hadRole")))


def test_the_prov_o_export_answers_plain_prov_queries_across_a_fine_tune(tmp_path: Path):
    """An auditor's SPARQL asks ``prov:used`` and ``prov:wasDerivedFrom``, not their qualified forms: the export
    asserts both for every relation (the prov package writes a relation with a time, role or activity only
    qualified, so a fine-tuned model's derivation from its base and its data was missing from a plain query)."""
    rdflib = pytest.importorskip("rdflib")
    base_data, tune_data = tmp_path / "base.bin", tmp_path / "tune.bin"
    base_data.write_bytes(b"b" * 16)
    tune_data.write_bytes(b"t" * 16)
    with prov4torch.start_run(out_dir=tmp_path / "runs") as first:
        base_ds = prov4torch.log_dataset(base_data, name="base data")
        torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "base.pt")
        base = prov4torch.log_model(tmp_path / "base.pt", name="base")
    with prov4torch.start_run(out_dir=tmp_path / "runs") as second:
        net = torch.nn.Linear(2, 2)
        net.load_state_dict(prov4torch.load_model(tmp_path / "base.pt"))
        with torch.no_grad():
            net.weight.add_(1.0)  # the fine-tune: new weights
        tune_ds = prov4torch.log_dataset(tune_data, name="tune data")
        tuned = prov4torch.log_model(net, name="tuned")
    out = tmp_path / "chain.ttl"
    proc = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "export", str(first.prov_path),
                           str(second.prov_path), "--format", "prov-o-turtle", "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    g = rdflib.Graph()
    g.parse(out, format="turtle")
    p4t = prov4torch.NAMESPACE
    iri = {name: p4t + qname.split(":", 1)[1] for name, qname in
           {"base": base.id, "tuned": tuned.id, "base data": base_ds, "tune data": tune_ds,
            "second": f"p4t:run/{second.run_id}/rank/0"}.items()}
    ask = "PREFIX prov: <http://www.w3.org/ns/prov#> PREFIX mls: <http://www.w3.org/ns/mls#> "
    data = {str(r[0]) for r in g.query(ask + "SELECT ?d WHERE { ?m prov:wasDerivedFrom+ ?d . ?d a mls:Dataset }",
                                        initBindings={"m": rdflib.URIRef(iri["tuned"])})}
    assert data == {iri["base data"], iri["tune data"]}
    used = {str(r[0]) for r in g.query(ask + "SELECT ?e WHERE { ?run prov:used ?e }",
                                        initBindings={"run": rdflib.URIRef(iri["second"])})}
    assert {iri["base"], iri["tune data"]} <= used
    made = {str(r[0]) for r in g.query(ask + "SELECT ?run WHERE { ?m prov:wasGeneratedBy ?run }",
                                        initBindings={"m": rdflib.URIRef(iri["tuned"])})}
    assert made == {iri["second"]}
    prov = rdflib.Namespace("http://www.w3.org/ns/prov#")
    pairs = {"qualifiedUsage": ("entity", "used"), "qualifiedGeneration": ("activity", "wasGeneratedBy"),
             "qualifiedDerivation": ("entity", "wasDerivedFrom"), "qualifiedAssociation": ("agent", "wasAssociatedWith")}
    for qualified, (influencer, plain) in pairs.items():
        nodes = list(g.subject_objects(prov[qualified]))
        assert nodes, qualified
        for subject, node in nodes:
            for obj in g.objects(node, prov[influencer]):
                assert (subject, prov[plain], obj) in g, (qualified, subject, obj)
