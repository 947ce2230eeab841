"""Governance follows the data (issue 23): tags bound to content through wrappers and copies, consent judged
through lineage on both axes, roles in a model's lineage, licences as SPDX expressions, Croissant DUO forms,
UK GDPR residency, prevented uses in check -- on real runs under `prov4torch run` and the API."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import load, rank_activity, role

import prov4torch
from prov4torch.governance.evaluate import check

CLI = [sys.executable, "-m", "prov4torch_cli.app"]
TAGS = {"origin_country": "FR", "jurisdiction": "EU", "license": "CC-BY-4.0"}


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=180)


# -- wrappers: the tags of the data a wrapper is made of ---------------------------------------------------------

WRAPPED = """
import sys, torch
from torch.utils.data import ChainDataset, ConcatDataset, DataLoader, Dataset, IterableDataset, Subset, random_split

class Csv(Dataset):
    def __init__(self, root):
        self.root = root
        self.rows = [[float(v) for v in line.split(",")] for line in open(root + "/rows.csv")]
    def __len__(self):
        return len(self.rows)
    def __getitem__(self, i):
        return torch.tensor(self.rows[i])

base = Csv("data")
kind = sys.argv[1]
if kind == "subset":
    train = Subset(base, list(range(8)))
elif kind == "split":
    train, _rest = random_split(base, [8, 8], generator=torch.Generator().manual_seed(0))
elif kind == "concat":
    train = ConcatDataset([Subset(base, [0, 1, 2]), torch.utils.data.TensorDataset(torch.zeros(4, 3))])
else:
    raise SystemExit("unknown kind")
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for batch in DataLoader(train, batch_size=4, shuffle=True):
    x = batch[0] if isinstance(batch, list) else batch
    opt.zero_grad(); model(x).sum().backward(); opt.step()
print("trained")
"""


def testing_only_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("\n".join(f"{i},{i + 1},{i % 3}" for i in range(16)))
    (tmp_path / "tags.toml").write_text(textwrap.dedent("""
        [[dataset]]
        path = "data"
        origin_country = "FR"
        jurisdiction = "EU"
        license = "CC-BY-4.0"
        consent_scope = ["testing"]
    """))
    (tmp_path / "train.py").write_text(WRAPPED)


@pytest.mark.parametrize("kind", ["subset", "split", "concat"])
def test_a_wrapper_of_testing_only_data_is_blocked_when_trained_on(tmp_path: Path, kind: str):
    testing_only_folder(tmp_path)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data-tags", "tags.toml", "train.py", kind)
    assert r.returncode == 1 and "trained" not in r.stdout, r.stderr
    assert "purpose-within-consent" in r.stderr and "used as training" in r.stderr
    (rank0,) = (tmp_path / "runs").glob("*/*/rank-0.prov.json")
    doc = load(rank0)
    assert rank_activity(doc)["p4t:status"] == "BLOCKED"
    wrapped = [e for e in doc["entity"].values() if e.get("p4t:consentScope") == "testing"]
    assert wrapped, "the wrapper carries the testing-only consent of what it is made of"
    assert check([rank0.parent], "default").prevented


def test_the_api_tags_of_a_dataset_follow_it_into_a_subset(tmp_path: Path):
    base = torch.utils.data.TensorDataset(torch.arange(20.0).reshape(10, 2))
    with pytest.raises(prov4torch.PolicyViolation, match="used as training"):
        with prov4torch.start_run(region="eu-west-1", purpose="research", policy="default"):
            prov4torch.log_dataset(base, role="testing", consent_scope=["testing"], **TAGS)
            prov4torch.log_dataset(torch.utils.data.Subset(base, [1, 2, 3]), role="training")


class _Holder(torch.utils.data.Dataset):
    """A dataset class of the user's own, holding what it serves under names of its own."""

    def __init__(self, **members):
        self.__dict__.update(members)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(2)


def _derived(kind: str, base: torch.utils.data.TensorDataset, arrays: dict):
    x, y = base.tensors
    if kind == "attribute":  # a wrapper keeping the tagged dataset under a name of its own
        return _Holder(base=base)
    if kind == "dict-of-datasets":
        return _Holder(sources={"held-out": base})
    if kind == "own-class":  # the tagged tensors themselves, in a class of the user's own
        return _Holder(x=x, y=y)
    if kind == "slice":
        return torch.utils.data.TensorDataset(x[:6], y[:6])
    if kind == "transposed":
        return torch.utils.data.TensorDataset(x.t()[1:])
    if kind == "numpy-view":  # arrays tagged; a tensor made on part of one (torch.from_numpy shares the memory)
        return torch.utils.data.TensorDataset(torch.from_numpy(arrays["x"][3:]))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["attribute", "dict-of-datasets", "own-class", "slice", "transposed", "numpy-view"])
def test_data_that_is_a_tagged_datasets_own_memory_carries_its_tags(tmp_path: Path, kind: str):
    """Governance follows the data in memory: a wrapper under any attribute name, the tagged tensors in a class of
    the user's own, a slice or view of them, a tensor on a tagged NumPy array -- each is new content with an id
    of its own, and carries the testing-only consent of the data it is."""
    import numpy as np

    arrays = {"x": np.arange(40.0).reshape(10, 4)}
    base = torch.utils.data.TensorDataset(torch.arange(40.0).reshape(10, 4), torch.arange(10))
    tagged = _Holder(x=arrays["x"]) if kind == "numpy-view" else base
    with pytest.raises(prov4torch.PolicyViolation, match="purpose-within-consent.*used as training"):
        with prov4torch.start_run(out_dir=tmp_path, region="eu-west-1", purpose="training", policy="default") as run:
            prov4torch.log_dataset(tagged, name="held-out", role="testing", consent_scope=["testing"], **TAGS)
            prov4torch.log_dataset(_derived(kind, base, arrays), name="train")
    (event,) = [e for e in _journal(run.journal_path) if e["t"] == "dataset" and e["name"] == "train"]
    assert event["id"] != base_id(run.journal_path)  # new content, an id of its own
    doc = load(run.prov_path)
    entity = doc["entity"][event["id"]]
    assert entity["p4t:consentScope"] == "testing" and entity["p4t:originCountry"] == "FR"
    # and the record says what it was made from: a lineage edge, not only a note
    assert event["derived_from"] == [base_id(run.journal_path)]
    edges = {(d["prov:generatedEntity"], d["prov:usedEntity"]) for d in doc["wasDerivedFrom"].values()}
    assert (event["id"], base_id(run.journal_path)) in edges
    if kind not in ("attribute", "dict-of-datasets"):
        assert any(w.startswith("memory shared with held-out") for w in event["tags_from"]), event["tags_from"]


@pytest.mark.parametrize("how", ["filter", "shuffle", "train_test_split", "select"])
def test_a_hugging_face_view_of_tagged_data_carries_its_tags(tmp_path: Path, how: str):
    """``filter``/``shuffle``/``train_test_split``/``select`` keep the tagged dataset's Arrow table and add indices:
    new content ids, the same memory, the same tags."""
    datasets = pytest.importorskip("datasets")
    base = datasets.Dataset.from_dict({"x": [[float(i), float(i + 1)] for i in range(32)], "y": [i % 2 for i in range(32)]})
    views = {"filter": lambda: base.filter(lambda r: r["y"] == 1), "shuffle": lambda: base.shuffle(seed=0),
             "train_test_split": lambda: base.train_test_split(test_size=0.5, seed=0)["train"],
             "select": lambda: base.select([3, 1, 4, 1, 5])}
    with pytest.raises(prov4torch.PolicyViolation, match=r"purpose-within-consent.*used as input \(training\)"):
        with prov4torch.start_run(out_dir=tmp_path, region="eu-west-1", purpose="training", policy="default") as run:
            prov4torch.log_dataset(base, name="held-out", role="testing", consent_scope=["testing"], **TAGS)
            model = torch.nn.Linear(2, 1)
            for batch in torch.utils.data.DataLoader(views[how]().with_format("torch"), batch_size=4):
                model(batch["x"]).sum().backward()
    (event,) = [e for e in _journal(run.journal_path) if e["t"] == "dataset" and e["name"] != "held-out"]
    assert event["id"] != base_id(run.journal_path)
    assert any(w.startswith("memory shared with held-out") for w in event["tags_from"]), event


def test_data_that_only_sits_beside_tagged_data_in_memory_is_not_given_its_tags(tmp_path: Path):
    """No false kinship: other tensors (a copy of a slice too: new memory) train freely beside testing-only data."""
    base = torch.utils.data.TensorDataset(torch.arange(40.0).reshape(10, 4))
    other = torch.utils.data.TensorDataset(torch.ones(5, 4), base.tensors[0][:5].clone())
    with prov4torch.start_run(out_dir=tmp_path, region="eu-west-1", purpose="training", policy="default") as run:
        prov4torch.log_dataset(base, name="held-out", role="testing", consent_scope=["testing"], **TAGS)
        prov4torch.log_dataset(other, name="train", consent_scope=["training"], **TAGS)
        model = torch.nn.Linear(4, 1)
        for (x, _copy) in torch.utils.data.DataLoader(other, batch_size=5):
            model(x).sum().backward()
    (event,) = [e for e in _journal(run.journal_path) if e["t"] == "dataset" and e["name"] == "train"]
    assert "tags_from" not in event
    doc = load(run.prov_path)
    assert doc["entity"][event["id"]]["p4t:consentScope"] == "training"
    assert rank_activity(doc)["p4t:status"] == "FINISHED"


def _journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def base_id(path: Path) -> str:
    return next(e["id"] for e in _journal(path) if e["t"] == "dataset" and e["name"] == "held-out")


# -- identical content, two tag sets ---------------------------------------------------------------------------------

def test_two_copies_of_one_file_tagged_differently_combine_restrictively(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.csv").write_text("1,2,3\n")
    shutil.copy(tmp_path / "a" / "x.csv", tmp_path / "b" / "x.csv")
    (tmp_path / "tags.toml").write_text(textwrap.dedent("""
        [[dataset]]
        path = "a/x.csv"
        origin_country = "FR"
        jurisdiction = "EU"
        license = "CC-BY-4.0"
        consent_scope = ["training", "testing"]

        [[dataset]]
        path = "b/x.csv"
        origin_country = "FR"
        jurisdiction = "EU"
        license = "CC-BY-4.0"
        consent_scope = ["testing"]
    """))
    prov4torch.load_tags(tmp_path / "tags.toml")
    with pytest.warns(RuntimeWarning, match="disagree"), \
            pytest.raises(prov4torch.PolicyViolation, match="used as training"):
        with prov4torch.start_run(region="eu-west-1", purpose="research", policy="default") as run:
            prov4torch.log_dataset(tmp_path / "a" / "x.csv")  # the permissive copy: the content is the same
    doc = load(run.prov_path)
    (ds,) = [e for k, e in doc["entity"].items() if k.startswith("p4t:dataset/")]
    assert ds["p4t:consentScope"] == "testing" and ds["p4t:tagConflict"]


# -- consent judged through lineage ------------------------------------------------------------------------------

def base_model(tmp_path: Path, **tags) -> Path:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(64))
    ckpt = tmp_path / "base.pt"
    with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="research"):
        prov4torch.log_dataset(data, **{**TAGS, **tags})
        torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
        prov4torch.log_model(ckpt, name="base")
    return ckpt


def test_a_fine_tune_after_the_inherited_consent_expired_is_denied(tmp_path: Path):
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    ckpt = base_model(tmp_path, consent_scope=["training", "research"], consent_expires=expiry)
    import time

    time.sleep(2.5)
    with pytest.raises(prov4torch.PolicyViolation, match="consent-not-expired"):
        with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="research",
                                  policy="default"):
            prov4torch.load_model(ckpt)


def test_a_purpose_outside_the_inherited_consent_is_denied_at_runtime_and_in_check(tmp_path: Path):
    ckpt = base_model(tmp_path, consent_scope=["training", "research"])
    with pytest.raises(prov4torch.PolicyViolation, match="purpose-within-consent.*commercial"):
        with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="commercial",
                                  policy="default"):
            prov4torch.load_model(ckpt)
    # the model a research run produces for commercial use: its intended use is outside the consent
    with pytest.raises(prov4torch.PolicyViolation, match="intended-use-within-consent"):
        with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="research",
                                  intended_use="commercial", policy="default"):
            prov4torch.load_model(ckpt)
    with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="research",
                              intended_use="research") as ok:
        prov4torch.load_model(ckpt)
        prov4torch.log_model(torch.nn.Linear(2, 2), name="tuned")
    assert check([ok.prov_path], "default").verdict == "allow"


# -- roles in a model's lineage ----------------------------------------------------------------------------------

def test_data_the_run_only_tested_on_is_not_in_the_models_training_lineage(tmp_path: Path):
    train, test = tmp_path / "train.bin", tmp_path / "test.bin"
    train.write_bytes(b"t" * 32)
    test.write_bytes(b"s" * 32)
    with prov4torch.start_run(region="eu-west-1", purpose="research", intended_use="commercial") as run:
        prov4torch.log_dataset(train, consent_scope=["training", "commercial", "research"], **TAGS)
        prov4torch.log_dataset(test, role="testing", consent_scope=["testing", "research"],
                               **{**TAGS, "license": "CC-BY-NC-4.0"})
        prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    report = check([run.prov_path], "default")
    rules = {v.rule for v in report.violations}
    # the test set's non-commercial licence and research-only consent do not make the model non-commercial
    assert "non-commercial-licences" not in rules and "intended-use-within-consent" not in rules, rules


# -- licences as SPDX expressions -------------------------------------------------------------------------------

@pytest.mark.parametrize(("licence", "allowed"), [
    ("CC-BY-4.0", True), ("CC-BY-4.0 AND CC-BY-NC-4.0", False), ("CC-BY-NC-4.0 OR MIT", True),
    ("(CC-BY-NC-4.0 OR CC-BY-NC-SA-4.0)", False), ("LicenseRef-internal", False),
])
def test_licences_are_judged_as_spdx_expressions(tmp_path: Path, licence: str, allowed: bool):
    data = tmp_path / "d.bin"
    data.write_bytes(b"d" * 16)
    with prov4torch.start_run(region="eu-west-1", purpose="commercial", intended_use="commercial") as run:
        prov4torch.log_dataset(data, origin_country="FR", jurisdiction="EU", license=licence)
        prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    rules = {v.rule for v in check([run.prov_path], "default").violations}
    assert ("non-commercial-licences" not in rules) is allowed, rules



@pytest.mark.parametrize(("tags", "rule"), [
    ({"license": "CC-BY-NC-4.0"}, "non-commercial-licences"),
    ({"license": "CC-BY-4.0 AND CC-BY-NC-SA-4.0"}, "non-commercial-licences"),
    ({"license": "CC-BY-4.0", "prohibited_purpose": ["commercial"]}, "no-prohibited-use"),
])
def test_a_run_that_declares_only_its_purpose_cannot_pass_the_model_use_rules(tmp_path: Path, tags: dict, rule: str):
    """The licence and prohibited-purpose rules judge a model's intended use; a run that says only that its
    purpose is commercial makes a model for commercial use: blocked before its first batch, and found by check."""
    data = tmp_path / "d.bin"
    data.write_bytes(b"d" * 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=2)
    gov = {**TAGS, "consent_scope": ["training"], **tags}  # consent on the role axis only
    with pytest.raises(prov4torch.PolicyViolation) as raised:
        with prov4torch.start_run(region="eu-west-1", purpose="commercial", policy="default") as run:
            for _ in prov4torch.track(loader, **gov):
                pytest.fail("a batch of data whose use the policy forbids reached the loop")
    assert raised.value.violations[0].rule == rule and "purpose of the run" in str(raised.value)
    assert run.status == "BLOCKED"
    with prov4torch.start_run(region="eu-west-1", purpose="commercial", policy="default", mode="audit") as audited:
        prov4torch.log_dataset(data, **gov)
        prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    assert rule in {v.rule for v in check([audited.prov_path], "default").violations}
    # the same data for research, and a declared intended use that the data allows, are not refused by it
    for settings in ({"purpose": "research"}, {"purpose": "commercial", "intended_use": "research"}):
        with prov4torch.start_run(region="eu-west-1", **settings) as fine:
            prov4torch.log_dataset(data, **gov)
            prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
        assert rule not in {v.rule for v in check([fine.prov_path], "default").violations}, settings



def _loader(x: torch.Tensor) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=2)


def test_the_same_content_attached_again_with_other_tags_is_held_to_both(tmp_path: Path):
    """Identity is content: a second claim about the same data (another object, the same bytes) used to be
    dropped -- the first attachment's tags won, so EU data re-tagged as US, or consent narrowed to testing, trained
    freely. Both claims now hold, combined restrictively, and the disagreement is recorded and warned."""
    x = torch.randn(8, 2)
    eu = {"origin_country": "DE", "jurisdiction": "EU", "license": "CC-BY-4.0", "consent_scope": ["training"]}
    narrowed = {**eu, "jurisdiction": "US", "origin_country": "US", "consent_scope": ["testing"]}
    with pytest.raises(prov4torch.PolicyViolation):
        with prov4torch.start_run(out_dir=tmp_path / "runs", region="eu-west-1", policy="default") as run:
            for _ in prov4torch.track(_loader(x), **eu):
                pass
            with pytest.warns(RuntimeWarning, match="attached before with other tags"):
                for _ in prov4torch.track(_loader(x.clone()), **narrowed):
                    pytest.fail("data whose second claim forbids this use reached the loop")
    assert run.status == "BLOCKED"
    with pytest.warns(RuntimeWarning, match="attached before with other tags"):
        with prov4torch.start_run(out_dir=tmp_path / "runs", region="eu-west-1") as free:
            for _ in prov4torch.track(_loader(x), **eu):
                pass
            for _ in prov4torch.track(_loader(x.clone()), **narrowed):
                pass
            prov4torch.log_model(torch.nn.Linear(2, 1))
    (ds,) = [e for k, e in load(free.prov_path)["entity"].items() if k.startswith("p4t:dataset/")]
    assert sorted(ds["p4t:jurisdiction"]) == ["EU", "US"] and ds["p4t:consentScope"] == "none"  # nothing in common
    assert any("jurisdiction" in c for c in ds["p4t:tagConflict"])
    rules = {v.rule for v in check([free.prov_path], "default").violations}
    assert {"no-eu-us-blend", "purpose-within-consent"} <= rules, rules


def test_tags_given_after_an_untagged_attachment_of_the_same_data_are_recorded(tmp_path: Path):
    x = torch.randn(8, 2)
    with prov4torch.start_run(out_dir=tmp_path / "runs") as run:
        for _ in prov4torch.track(_loader(x)):
            pass
        prov4torch.log_dataset(torch.utils.data.TensorDataset(x.clone()), **TAGS)
    (ds,) = [e for k, e in load(run.prov_path)["entity"].items() if k.startswith("p4t:dataset/")]
    assert ds["p4t:jurisdiction"] == "EU" and ds["p4t:license"] == "CC-BY-4.0" and "p4t:tagConflict" not in ds



@pytest.mark.parametrize(("first", "second", "rule"), [
    ("DE", "US", "no-eu-us-blend"), ("EU", "US-CA", "no-eu-us-blend"), ("FR-75", "US", "no-eu-us-blend"),
    ("DEU", "USA", "no-eu-us-blend"),
    ("NO", None, "eu-personal-data-stays-in-eu"), ("IT", None, "eu-personal-data-stays-in-eu"),
])
def test_a_member_state_or_subdivision_code_meets_the_rules_written_for_its_union_or_country(
        tmp_path: Path, first: str, second: str | None, rule: str):
    """Jurisdiction tagged by a member state (DE), an EEA state (NO) or a subdivision (US-CA) used to pass the
    rules written for EU, EEA and US; the policy now matches the jurisdictions a code is within, and the record
    keeps the code as declared."""
    x = torch.randn(8, 2)
    base = {"origin_country": "DE", "license": "CC-BY-4.0", "personal_data": second is None}
    with pytest.raises(prov4torch.PolicyViolation) as raised:
        with prov4torch.start_run(out_dir=tmp_path / "runs", region="us-east-1", purpose="research",
                                  policy="default") as run:
            for _ in prov4torch.track(_loader(x), jurisdiction=first, **base):
                pass
            if second is not None:
                for _ in prov4torch.track(_loader(x + 1), jurisdiction=second, **{**base, "origin_country": "US"}):
                    pass
    assert raised.value.violations[0].rule == rule
    recorded = {e.get("p4t:jurisdiction") for k, e in load(run.prov_path)["entity"].items()
                if k.startswith("p4t:dataset/")}
    assert first in recorded



READS_CSV = """
import sys, numpy as np, torch
from torch.utils.data import DataLoader, TensorDataset
train_dir, test_dir = sys.argv[1], sys.argv[2]
def columns(folder):  # every split read at the start, as a LightningDataModule.setup does
    if sys.argv[3] == "pandas":  # a column of a frame read_csv made: its own array, no copy
        import pandas as pd
        df = pd.read_csv(f"{folder}/d.csv", header=None, dtype="float32")
        return [torch.from_numpy(df[i].to_numpy()) for i in range(3)]
    arr = np.loadtxt(f"{folder}/d.csv", delimiter=",", dtype=np.float32)
    return [torch.from_numpy(arr[:, i]) for i in range(3)]
train, test = columns(train_dir), columns(test_dir)
model = torch.nn.Linear(2, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for a, b, y in DataLoader(TensorDataset(*train), batch_size=8, shuffle=True):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(torch.stack([a, b], 1)), y.long()).backward(); opt.step()
with torch.no_grad():
    for a, b, y in DataLoader(TensorDataset(*test)):
        model(torch.stack([a, b], 1))
print("done")
"""


def _split_folders(tmp_path: Path) -> None:
    for name, consent in (("train", ["training"]), ("test", ["testing"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "d.csv").write_text("".join(f"{i / 16},{(i * 7 % 16) / 16},{i % 2}\n" for i in range(16))
                                               + ("" if name == "train" else "0.5,0.5,1\n"))
        with (tmp_path / "tags.toml").open("a") as fh:
            fh.write(f'[[dataset]]\npath = "{name}/*"\norigin_country = "FR"\njurisdiction = "EU"\n'
                     f'license = "CC-BY-4.0"\nconsent_scope = {json.dumps(consent)}\n\n')
    (tmp_path / "train.py").write_text(READS_CSV)


@pytest.mark.parametrize("reader", ["numpy", "pandas"])
@pytest.mark.parametrize(("dirs", "allowed"), [(("train", "test"), True), (("test", "train"), False)])
def test_arrays_a_reader_filled_from_tagged_files_carry_their_tags_into_tensors(tmp_path: Path, dirs: tuple,
                                                                                 allowed: bool, reader: str):
    """np.loadtxt (or pandas.read_csv) of each split's file (the split named by its --data folder), then
    torch.from_numpy of its columns:
    the tensors are the files' data. Trained on the training split and tested on the test split: allowed (the
    tensors used to be untagged, refused for missing tags); the splits swapped: refused for the test split's
    consent, before the first batch."""
    _split_folders(tmp_path)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "research", "--data", "train", "--data", "test", "--data-tags", "tags.toml", "train.py", *dirs, reader)
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    if allowed:
        assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]
        trained = [u for u in doc["used"].values() if role(u) == "p4t:training"
                   and "read from the file" in json.dumps(u.get("p4t:tagsFrom", ""))]
        assert trained, "the training tensors carry the training file's tags"
    else:
        assert r.returncode == 1 and "done" not in r.stdout
        assert "purpose-within-consent" in r.stderr and "required-tags" not in r.stderr, r.stderr[-2000:]


TORCH_DATA = """
import torch
from torch.utils.data import DataLoader, TensorDataset
X, y = torch.load("data/train.pt")  # a preprocessed dataset saved as tensors
model = torch.nn.Linear(2, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
for xb, yb in DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(xb), yb).backward(); opt.step()
print("trained")
"""


def test_tensors_torch_load_read_from_a_tagged_data_file_carry_its_tags(tmp_path: Path):
    """A dataset saved as tensors (torch.save((X, y), 'data/train.pt')) and loaded back: the loaded tensors are
    the file's data. They were untagged, so a correctly tagged file was refused for missing tags."""
    (tmp_path / "data").mkdir()
    torch.save((torch.randn(32, 2), torch.randint(0, 2, (32,))), tmp_path / "data" / "train.pt")
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "data/*"\norigin_country = "FR"\njurisdiction = "EU"\n'
                                        'license = "CC-BY-4.0"\nconsent_scope = ["training"]\n')
    (tmp_path / "train.py").write_text(TORCH_DATA)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "research", "--data", "data", "--data-tags", "tags.toml", "train.py")
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-2000:]
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    assert any(role(u) == "p4t:training" and "train.pt (read from the file)" in json.dumps(u.get("p4t:tagsFrom"))
               for u in doc["used"].values())


# -- governance across processes: a tagged dataset handed to a spawned trainer (Hogwild) ----------------------------

HOGWILD_TRAINER = """
import torch
from torch.utils.data import DataLoader


def train(model, dataset):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for xb, yb in DataLoader(dataset, batch_size=8, shuffle=True):
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(xb), yb).backward(); opt.step()
    print("trained", flush=True)


def train_rank(rank, model, dataset):  # torch.multiprocessing.spawn's function: a rank of its own
    train(model, dataset)
"""

HOGWILD = """
import sys, torch, torch.multiprocessing as mp
from torch.utils.data import TensorDataset
from trainer import train, train_rank

if __name__ == "__main__":
    X, y = torch.load("data/train.pt")
    dataset = TensorDataset(X, y)
    model = torch.nn.Linear(2, 2)
    model.share_memory()
    if sys.argv[1] == "spawn":  # each process a rank of its own, given the dataset
        mp.spawn(train_rank, args=(model, dataset), nprocs=2)
    else:  # Hogwild: helpers of this rank
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=train, args=(model, dataset)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print("exit codes", [p.exitcode for p in procs])
"""


@pytest.mark.parametrize("how", ["process", "spawn"])
@pytest.mark.parametrize("consent", ["training", "testing"])
def test_a_tagged_dataset_sent_to_spawned_trainers_carries_its_tags_there(tmp_path: Path, consent: str, how: str):
    """pytorch/examples' mnist_hogwild: the dataset (loaded from a tagged file) is pickled to spawned processes,
    its tensors moved to shared memory and mapped there at other addresses. It arrived untagged, so a correctly
    tagged file was refused for missing tags in every trainer; now its tags travel with its tensors: allowed when
    the file's consent covers training, refused for that consent when it does not. Through
    torch.multiprocessing.spawn too, whose processes receive it as helpers and then run as ranks of their own."""
    (tmp_path / "data").mkdir()
    torch.save((torch.randn(32, 2), torch.randint(0, 2, (32,))), tmp_path / "data" / "train.pt")
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "data/*"\norigin_country = "FR"\njurisdiction = "EU"\n'
                                        f'license = "CC-BY-4.0"\nconsent_scope = ["{consent}"]\n')
    (tmp_path / "trainer.py").write_text(HOGWILD_TRAINER)
    (tmp_path / "hogwild.py").write_text(HOGWILD)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "research", "--data-tags", "tags.toml", "hogwild.py", how)
    assert "required-tags" not in r.stderr, r.stderr[-3000:]
    if consent == "training":
        assert r.returncode == 0 and r.stdout.count("trained") == 2, r.stderr[-3000:]
        doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
        uses = [u for u in doc["used"].values() if role(u) == "p4t:training"]
        assert uses and all("received from another process" in json.dumps(u.get("p4t:tagsFrom")) for u in uses)
    else:
        assert r.returncode == 1 and "trained" not in r.stdout and "purpose-within-consent" in r.stderr


SCRIPT_POLICY = """
import torch, prov4torch
from torch.utils.data import DataLoader, TensorDataset
data = TensorDataset(torch.randn(32, 2), torch.randint(0, 2, (32,)))
model = torch.nn.Linear(2, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
with prov4torch.start_run(purpose="research", region="eu-west-1", policy="default"):
    prov4torch.log_dataset(data, name="held-out", origin_country="FR", jurisdiction="EU", license="CC-BY-4.0",
                           consent_scope=["testing"], role="evaluation")
    for xb, yb in DataLoader(data, batch_size=8, shuffle=True):
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(xb), yb).backward(); opt.step()
print("trained")
"""


def test_the_scripts_own_policy_is_enforced_under_prov4torch_run(tmp_path: Path):
    """A script that enforces a policy itself (start_run(policy="default")), run under prov4torch run without
    --policy: the script joined the run prov4torch run made and its policy was dropped -- testing-only data
    trained unchecked, exit 0. It is enforced from the script's start_run now."""
    (tmp_path / "train.py").write_text(SCRIPT_POLICY)
    r = cli(tmp_path, "run", "--out", "runs", "train.py")
    assert r.returncode == 1 and "trained" not in r.stdout, r.stderr[-2000:]
    assert "purpose-within-consent" in r.stderr and "enforced from its start_run" in r.stderr
    # the record names the policy, in force from the script's start_run (the run's start record did not)
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    act_id, act = next((k, a) for k, a in doc["activity"].items() if a.get("p4t:status") == "BLOCKED")
    policy_uses = [u for u in doc["used"].values() if role(u) == "p4t:policy" and u["prov:activity"] == act_id]
    assert act["p4t:policyMode"] == "enforce" and act["p4t:policyAdoptedAt"]
    assert len(policy_uses) == 1 and policy_uses[0]["prov:time"] and doc["entity"][
        policy_uses[0]["prov:entity"]]["prov:label"] == "prov4torch-default"


SCRIPT_POLICY_SPAWNS = """
import torch, torch.multiprocessing as mp, prov4torch
from torch.utils.data import TensorDataset
from trainer import train

if __name__ == "__main__":
    with prov4torch.start_run(purpose="research", region="eu-west-1", policy="default"):
        data = TensorDataset(torch.randn(32, 2), torch.randint(0, 2, (32,)))
        prov4torch.log_dataset(data, name="held-out", origin_country="FR", jurisdiction="EU",
                               license="CC-BY-4.0", consent_scope=["testing"], role="evaluation")
        model = torch.nn.Linear(2, 2)
        model.share_memory()
        p = mp.get_context("spawn").Process(target=train, args=(model, data))
        p.start()
        p.join()
        print("exit code", p.exitcode)
"""


def test_the_scripts_own_policy_reaches_the_processes_it_starts_under_prov4torch_run(tmp_path: Path):
    """The same, with the testing-only data trained in a spawned process: that process read the policy from the
    environment prov4torch run had set before the script's start_run, and trained unchecked."""
    (tmp_path / "trainer.py").write_text(HOGWILD_TRAINER)
    (tmp_path / "train.py").write_text(SCRIPT_POLICY_SPAWNS)
    r = cli(tmp_path, "run", "--out", "runs", "train.py")
    assert r.returncode == 1 and "trained" not in r.stdout and "exit code 1" in r.stdout, r.stderr[-3000:]
    assert "purpose-within-consent" in r.stderr


def test_memory_a_reader_filled_is_forgotten_when_freed():
    import gc

    import numpy as np

    from prov4torch.record.sharedmem import SharedMemory, buffers

    memory = SharedMemory()
    arr = np.arange(1000, dtype=np.float64)
    memory.note("d.csv", buffers(arr), "d.csv", {"p4t:jurisdiction": "EU"}, weakly=True)
    view = torch.from_numpy(arr[10:20])
    assert [g for _, _, g in memory.shared_with(view, buffers(view))] == [{"p4t:jurisdiction": "EU"}]
    del arr, view
    gc.collect()
    other = np.ones(1000)
    memory.shared_with(other, buffers(other))  # looks after the free: the note is gone first
    assert not memory.noted


# -- Croissant DUO forms --------------------------------------------------------------------------------------------

def test_croissant_duo_term_codes_and_odrl_duo_purposes(tmp_path: Path):
    from prov4torch.governance.cards import croissant

    base = {"@context": {"@vocab": "https://schema.org/"}, "conformsTo": "http://mlcommons.org/croissant/1.1",
            "name": "toy"}
    by_code = croissant({**base, "usageInfo": [{"@type": "DataUseTerm", "termCode": "DUO:0000046"},
                                               {"termCode": "DUO:0000042"}]}, tmp_path / "c.json")
    assert by_code[0]["prohibited_purpose"] == ["commercial"]
    assert by_code[0]["consent_scope"] == ["research", "training"]
    odrl = croissant({**base, "usageInfo": [{"permission": [{"constraint": [
        {"leftOperand": "odrl:purpose", "rightOperand": "DUO:0000042"}]}]}]}, tmp_path / "c.json")
    assert odrl[0]["consent_scope"] == ["research", "training"]


# -- residency: the UK GDPR and the EEA -----------------------------------------------------------------------------

@pytest.mark.parametrize(("jurisdiction", "region", "blocked"), [
    ("UK", "us-east-1", True), ("UK", "eu-west-2", False), ("EEA", "us-east-1", True), ("EU", "us-east-1", True),
    ("US", "us-east-1", False),
])
def test_personal_data_residency_covers_the_uk_and_the_eea(tmp_path: Path, jurisdiction: str, region: str,
                                                           blocked: bool):
    data = tmp_path / "p.bin"
    data.write_bytes(b"p" * 16)
    tags = {"origin_country": "GB", "jurisdiction": jurisdiction, "license": "CC-BY-4.0", "personal_data": True}
    try:
        with prov4torch.start_run(region=region, purpose="research", policy="default"):
            prov4torch.log_dataset(data, **tags)
        assert not blocked
    except prov4torch.PolicyViolation as exc:
        assert blocked and "stays-in" in str(exc)


# -- the quickstart runs under the default policy ------------------------------------------------------------------

def test_the_quickstart_example_runs_and_its_record_is_allowed(tmp_path: Path):
    example = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
    r = subprocess.run([sys.executable, str(example), "--epochs", "1", "--out", str(tmp_path / "q")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "status FINISHED" in r.stdout
    (prov,) = (tmp_path / "q").glob("*/*/rank-0.prov.json")
    assert check([prov], "default").verdict == "allow"


def test_a_policy_can_refuse_data_whose_tag_sources_disagree(tmp_path: Path):
    data = tmp_path / "x.csv"
    data.write_text("1,2\n")
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "x.csv"\nlicense = "MIT"\n')
    prov4torch.load_tags(tmp_path / "tags.toml")
    with pytest.warns(RuntimeWarning, match="disagree"):
        with prov4torch.start_run(region="eu-west-1", purpose="research") as run:
            prov4torch.log_dataset(data, license="CC-BY-4.0", **{k: v for k, v in TAGS.items() if k != "license"})
    assert check([run.prov_path], "default").verdict == "allow"  # combined restrictively: both licences hold
    strict = tmp_path / "strict.toml"
    strict.write_text(textwrap.dedent("""
        [[rules]]
        id = "agreed-tags"
        target = "dataset"
        scope = "direct"
        check = "no_tag_conflict"
    """))
    (v,) = check([run.prov_path], str(strict)).violations
    assert v.rule == "agreed-tags" and "p4t:license" in v.reason


# -- evaluation data that drives a training decision is validation data --------------------------------------------

EVALUATED = """
import sys, torch
from torch.utils.data import DataLoader, Dataset

class Csv(Dataset):
    def __init__(self, root):
        self.root = root
        self.rows = [[float(v) for v in line.split(",")] for line in open(f"{root}/rows.csv")]
    def __len__(self):
        return len(self.rows)
    def __getitem__(self, i):
        return torch.tensor(self.rows[i])

train, val, test = Csv("train"), Csv("val"), Csv("test")
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
epochs = int(sys.argv[1])
for epoch in range(epochs):
    for x in DataLoader(train, batch_size=4, shuffle=True):
        opt.zero_grad(); model(x).sum().backward(); opt.step()
    print("trained epoch", epoch, flush=True)
    with torch.no_grad():
        loss = sum(float(model(x).sum()) for x in DataLoader(val, batch_size=4))
    if sys.argv[2] == "plateau":
        plateau.step(loss)
with torch.no_grad():
    print("test", sum(float(model(x).sum()) for x in DataLoader(test, batch_size=4)))
"""


def evaluated_folders(tmp_path: Path, val_consent: list[str]) -> None:
    for name, consent in (("train", ["training"]), ("val", val_consent), ("test", ["testing"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows.csv").write_text("\n".join(f"{i},{i + 1},{len(name)}" for i in range(8)))
        with (tmp_path / "tags.toml").open("a") as fh:
            fh.write(f'[[dataset]]\npath = "{name}"\norigin_country = "FR"\njurisdiction = "EU"\n'
                     f'license = "CC-BY-4.0"\nconsent_scope = {consent!r}\n\n'.replace("'", '"'))
    (tmp_path / "train.py").write_text(EVALUATED)


def _uses(doc: dict, folder: str) -> dict[str, int]:
    """role -> batches of the dataset read from ``folder``."""
    (did,) = [k for k, e in doc["entity"].items() if k.startswith("p4t:dataset/") and
              any(u["prov:entity"] == k and str(u.get("p4t:name", "")).startswith("Csv") for u in doc["used"].values())
              and any(u["prov:entity"] == k and str(u.get("p4t:sourceUri", "")).rstrip("/").endswith(folder)
                      for u in doc["used"].values())]
    out = {}
    for u in doc["used"].values():
        if u["prov:entity"] == did:
            b = u.get("p4t:batches", 0)
            out[u["prov:role"]["$"].split(":")[1]] = int(b["$"] if isinstance(b, dict) else b)
    return out


@pytest.mark.parametrize("decides", ["next-step", "plateau"])
def test_evaluation_data_followed_by_a_training_decision_is_validation_data(tmp_path: Path, decides: str):
    """Evaluated between epochs (an optimizer step follows), or read by ReduceLROnPlateau: validation data, every
    pass of it; the test set evaluated after the last step stays evaluation (testing) data."""
    evaluated_folders(tmp_path, ["validation", "testing"])
    epochs = "2" if decides == "next-step" else "1"
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data-tags", "tags.toml", "train.py", epochs, decides)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    assert _uses(doc, "/val") == {"validation": 2 * int(epochs)}  # both passes, none left under evaluation
    assert _uses(doc, "/test") == {"evaluation": 2}
    assert _uses(doc, "/train") == {"training": 2 * int(epochs)}
    assert check([doc_path for doc_path in (tmp_path / "runs").glob("*/*")], "default").verdict == "allow"


def test_data_consented_for_testing_only_cannot_drive_training_decisions(tmp_path: Path):
    """The same loop with the validation folder consented for testing only: blocked at the step after the first
    evaluation (it is validation data now), before the second epoch trains."""
    evaluated_folders(tmp_path, ["testing"])
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data-tags", "tags.toml", "train.py", "2", "next-step")
    assert r.returncode == 1 and "trained epoch 0" in r.stdout and "trained epoch 1" not in r.stdout, r.stderr
    assert "purpose-within-consent" in r.stderr and "validation" in r.stderr
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    assert rank_activity(doc)["p4t:status"] == "BLOCKED"


def test_an_inferred_evaluation_of_data_consented_for_validation_only_is_not_blocked_before_its_role_is_known(
        tmp_path: Path):
    """The first pass of the validation folder is an inferred evaluation (testing or validation: no step has
    followed yet); consented for validation only it is not blocked then, and the step after it settles it as
    validation, within consent. The record holds validation only and `check` allows."""
    evaluated_folders(tmp_path, ["validation"])
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data-tags", "tags.toml", "train.py", "2", "next-step")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    assert _uses(doc, "/val") == {"validation": 4}
    assert check(list((tmp_path / "runs").glob("*/*")), "default").verdict == "allow"


TOKENS = """
import sys
import numpy as np, torch
block, batch = 8, 4
def get_batch(split):  # nanoGPT's pattern: a token file mapped every call
    data = np.memmap(f"data/{split}.bin", dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block, (batch,))
    x = torch.stack([torch.from_numpy(data[i:i + block].astype(np.int64)) for i in ix]).float()
    return x, x.sum(1, keepdim=True)
model = torch.nn.Linear(block, 1)
opt = torch.optim.SGD(model.parameters(), lr=1e-9)
@torch.no_grad()
def estimate_loss():  # both splits, between training steps; the best validation loss picks the checkpoint
    return {s: float(((model(x) - y) ** 2).mean()) for s in ("train", "val") for x, y in [get_batch(s)]}
X, Y = get_batch("train")
best = float("inf")
for it in range(int(sys.argv[1])):
    if it % 5 == 0:
        losses = estimate_loss()
        print("evaluated at", it, flush=True)
        if losses["val"] < best:
            best = losses["val"]
            torch.save(model.state_dict(), "ckpt.pt")
    opt.zero_grad(); ((model(X) - Y) ** 2).mean().backward(); opt.step()
    X, Y = get_batch("train")
with torch.no_grad():
    model(get_batch("test")[0])  # a final test: after the last step
"""


def token_files(tmp_path: Path, val_consent: list[str]) -> None:
    import numpy as np

    (tmp_path / "data").mkdir()
    with (tmp_path / "tags.toml").open("w") as fh:
        for name, consent in (("train", ["training"]), ("val", val_consent), ("test", ["testing"])):
            np.arange(2000 + len(name), dtype=np.uint16).tofile(tmp_path / "data" / f"{name}.bin")
            fh.write(f'[[dataset]]\npath = "data/{name}.bin"\norigin_country = "FR"\njurisdiction = "EU"\n'
                     f'license = "CC-BY-4.0"\nconsent_scope = {consent!r}\n\n'.replace("'", '"'))
    (tmp_path / "train.py").write_text(TOKENS)


def _file_roles(doc: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for u in doc["used"].values():
        if "dataset/" in u["prov:entity"]:
            name = u["p4t:sourceUri"].rsplit("/", 1)[-1]
            out.setdefault(name, {})[u["prov:role"]["$"].split(":")[1]] = int(u["p4t:reads"]["$"])
    return out


def test_token_files_read_without_gradients_before_a_step_are_validation_data(tmp_path: Path):
    """nanoGPT's loop on memmapped token files: the validation split, estimated between steps, is validation
    data (all 3 reads; consented for validation only, allowed -- its first read is not yet settled); the training
    split's loss estimate is training data's (consented for training only, allowed); the test split, read after
    the last step, stays evaluation (testing)."""
    token_files(tmp_path, ["validation"])
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data", "data", "--data-tags", "tags.toml", "train.py", "15")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    assert _file_roles(doc) == {"train.bin": {"training": 1 + 15 + 3}, "val.bin": {"validation": 3},
                                "test.bin": {"evaluation": 1}}
    assert check(list((tmp_path / "runs").glob("*/*/rank-0.prov.json")), "default").verdict == "allow"


def test_a_token_file_consented_for_testing_only_cannot_steer_training(tmp_path: Path):
    """The same loop with the validation split consented for testing only: its first estimate is allowed (it
    may be a test), the step after it makes it validation data, and the policy stops the run there."""
    token_files(tmp_path, ["testing"])
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data", "data", "--data-tags", "tags.toml", "train.py", "15")
    assert r.returncode == 1 and "evaluated at 0" in r.stdout and "evaluated at 5" not in r.stdout, r.stderr
    assert "validation" in r.stderr and "not within the consent scope" in r.stderr
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    assert rank_activity(doc)["p4t:status"] == "BLOCKED"
    assert "val.bin" in json.dumps([d for d in doc["entity"].values() if d.get("p4t:verdict") == "deny"]) or \
        any(u["p4t:sourceUri"].endswith("val.bin") for u in doc["used"].values() if "dataset/" in u["prov:entity"])


CORPUS = """
import sys, torch
def tokenize(path):  # pytorch/examples' word_language_model: each split read whole before training
    with open(path) as fh:
        return torch.tensor([float(len(w)) for line in fh for w in line.split()])
train, valid, test = (tokenize(f"data/{name}.txt") for name in ("train", "valid", "test"))
model = torch.nn.Linear(4, 1)
for epoch in range(2):
    for i in range(0, len(train) - 4, 4):
        model.zero_grad()
        ((model(train[i:i + 4]) - 1) ** 2).sum().backward()
        for p in model.parameters():  # weights updated by hand: no optimizer
            p.data.add_(p.grad, alpha=-0.001)
    with torch.no_grad():
        model(valid[:4])
with torch.no_grad():
    model(test[:4])
if sys.argv[1:] == ["train-on-test"]:
    for i in range(0, len(test) - 4, 4):
        model.zero_grad(); model(open("data/test.txt") and test[i:i + 4]).sum().backward()
torch.save(model.state_dict(), "model.pt")
print("done", flush=True)
"""


def corpus_files(tmp_path: Path, consents: dict[str, list[str]]) -> None:
    (tmp_path / "data").mkdir()
    with (tmp_path / "tags.toml").open("w") as fh:
        for name, consent in consents.items():
            (tmp_path / "data" / f"{name}.txt").write_text("\n".join(" ".join("ab" * (i % 3 + 1) for _ in range(8))
                                                                        + f" {name}{i}" for i in range(6)))
            fh.write(f'[[dataset]]\npath = "data/{name}.txt"\norigin_country = "FR"\njurisdiction = "EU"\n'
                     f'license = "CC-BY-4.0"\nconsent_scope = {consent!r}\n\n'.replace("'", '"'))
    (tmp_path / "train.py").write_text(CORPUS)


def test_a_corpus_read_whole_at_start_and_trained_by_hand_gets_its_roles_from_split_names(tmp_path: Path):
    """word_language_model's shape: three split files tokenized before any training step (with gradients on:
    nothing but their names says which is which), then weights updated by hand after each backward (no
    optimizer: the backward pass is the step). Each split is consented for its own role only: allowed; the model
    derives from the training split alone."""
    corpus_files(tmp_path, {"train": ["training"], "valid": ["validation"], "test": ["testing"]})
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data", "data", "--data-tags", "tags.toml", "train.py")
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]
    doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
    roles = {name: set(v) for name, v in _file_roles(doc).items()}
    assert roles == {"train.txt": {"training"}, "valid.txt": {"validation"}, "test.txt": {"testing"}}, roles
    (model,) = [g["prov:entity"] for g in doc["wasGeneratedBy"].values() if g["prov:entity"].startswith("p4t:model/")]
    derived = {d["prov:usedEntity"] for d in doc["wasDerivedFrom"].values() if d["prov:generatedEntity"] == model}
    train_id = next(u["prov:entity"] for u in doc["used"].values() if u.get("p4t:sourceUri", "").endswith("train.txt"))
    assert derived == {train_id}
    assert check(list((tmp_path / "runs").glob("*/*/rank-0.prov.json")), "default").verdict == "allow"


def test_a_split_name_does_not_hide_training_on_it_once_training_has_begun(tmp_path: Path):
    """The name decides only for data loaded before training starts: `test.txt` opened with gradients on once
    training has begun may be trained on (`input`, judged as training) -- consented for testing only, the open
    is refused before the script gets the file."""
    corpus_files(tmp_path, {"train": ["training"], "valid": ["validation"], "test": ["testing"]})
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "training", "--data", "data", "--data-tags", "tags.toml", "train.py", "train-on-test")
    assert r.returncode == 1 and "done" not in r.stdout, r.stderr[-2000:]
    assert "used as input (training)" in r.stderr and "not within the consent scope" in r.stderr, r.stderr[-2000:]


# -- text a script reads itself (karpathy/makemore's pattern) -------------------------------------------------------

NAMES_SCRIPT = """
import sys, torch
from torch.utils.data import DataLoader, Dataset

class CharDataset(Dataset):  # makemore's: the words of the file, its characters, the encodings
    def __init__(self, words, chars, max_word_length):
        self.words, self.chars, self.max_word_length = words, chars, max_word_length
        self.stoi = {ch: i + 1 for i, ch in enumerate(chars)}
        self.itos = {i: s for s, i in self.stoi.items()}
    def __len__(self):
        return len(self.words)
    def __getitem__(self, idx):
        ix = [self.stoi[c] for c in self.words[idx]]
        x = torch.zeros(self.max_word_length + 1, dtype=torch.long)
        x[1:1 + len(ix)] = torch.tensor(ix)
        return x

with open("data/names.txt", "r") as f:
    data = f.read()
words = [w.strip() for w in data.splitlines()]
words = [w for w in words if w]
if "--extra" in sys.argv:
    words.append("qqzzxx")  # a string from nowhere the tags cover
chars = sorted(set("".join(words)))
dataset = CharDataset(words, chars, max(len(w) for w in words))
if "--tensor" in sys.argv:
    dataset.features = torch.ones(len(words), 2)  # memory from nowhere the tags cover
model = torch.nn.Embedding(len(chars) + 1, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x in DataLoader(dataset, batch_size=4, shuffle=True):
    opt.zero_grad(); model(x).sum().backward(); opt.step()
print("trained")
"""


@pytest.mark.parametrize("case", ["training", "testing", "extra", "tensor"])
def test_strings_read_from_a_tagged_text_file_carry_its_tags(tmp_path: Path, case: str):
    """karpathy/makemore reads names.txt with open(), keeps its lines as Python strings in a Dataset: the tags
    declared for the file were lost on the way, and a correctly tagged file was refused for missing tags. The
    strings are found in the tagged text the script read: its tags hold (allowed for training consent, refused
    for testing-only consent). A string or memory from elsewhere in the dataset: no tags from the text (closed)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "names.txt").write_text("emma\nolivia\n ava \nisabella\nsophia\nmia\n\ncharlotte\n")
    consent = "testing" if case == "testing" else "training"
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "data/names.txt"\norigin_country = "US"\n'
                                        f'jurisdiction = "US"\nlicense = "MIT"\nconsent_scope = ["{consent}"]\n')
    (tmp_path / "train.py").write_text(NAMES_SCRIPT)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "us-east-1", "--purpose",
            "research", "--data-tags", "tags.toml", "train.py", *([f"--{case}"] if case in ("extra", "tensor") else []))
    if case == "training":
        assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-3000:]
        doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
        use = next(u for u in doc["used"].values() if u.get("p4t:name") == "CharDataset")
        assert "(text read from names.txt): the data's 7 values found in names.txt" in use["p4t:tagsFrom"]
        ds = doc["entity"][use["prov:entity"]]
        assert ds["p4t:consentScope"] == "training" and ds["p4t:license"] == "MIT"
        # the file is data of the run too (read, then trained from), and the dataset derives from it: lineage
        file_use = next(u for u in doc["used"].values() if u.get("p4t:name") == "names.txt")
        assert role(file_use) == "p4t:training"
        assert {(d["prov:generatedEntity"], d["prov:usedEntity"]) for d in doc["wasDerivedFrom"].values()} == {
            (use["prov:entity"], file_use["prov:entity"])}
    elif case == "testing":
        assert r.returncode == 1 and "trained" not in r.stdout and "purpose-within-consent" in r.stderr, r.stderr
    else:
        assert r.returncode == 1 and "trained" not in r.stdout and "required-tags" in r.stderr, r.stderr[-3000:]


CSV_SCRIPT = """
import csv, sys, torch
from torch.utils.data import DataLoader, Dataset

class Reviews(Dataset):
    def __init__(self, path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.texts = [r["text"] for r in rows]
        self.labels = [int(r["label"]) for r in rows]
        self.scores = [float(r["score"]) for r in rows]
        if "--foreign" in sys.argv:
            self.scores[0] = 0.123  # a measurement from elsewhere
        self.split = "train"
    def __len__(self):
        return len(self.texts)
    def __getitem__(self, i):
        return torch.tensor([len(self.texts[i])], dtype=torch.float32), self.labels[i]

model = torch.nn.Linear(1, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in DataLoader(Reviews("reviews.csv"), batch_size=2):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
print("trained")
"""


@pytest.mark.parametrize("case", ["training", "testing", "foreign"])
def test_fields_of_a_tagged_csv_file_read_with_the_csv_module_carry_its_tags(tmp_path: Path, case: str):
    """Texts (a quoted one holding the separator), labels and float scores parsed from a tagged CSV: the tags hold;
    a float from elsewhere among them (a measurement is content, not a label): no tags from the text (closed)."""
    (tmp_path / "reviews.csv").write_text('text,label,score\n"good, really",1,0.50\nbad film,0,1e-3\nfine,1,7\n'
                                          '"so-so",0,-2.25\n')
    consent = "testing" if case == "testing" else "training"
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "reviews.csv"\norigin_country = "FR"\n'
                                        f'jurisdiction = "EU"\nlicense = "CC-BY-4.0"\nconsent_scope = ["{consent}"]\n')
    (tmp_path / "train.py").write_text(CSV_SCRIPT)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-1", "--purpose",
            "research", "--data-tags", "tags.toml", "train.py", *(["--foreign"] if case == "foreign" else []))
    if case == "training":
        assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-3000:]
    else:
        rule = "purpose-within-consent" if case == "testing" else "required-tags"
        assert r.returncode == 1 and "trained" not in r.stdout and rule in r.stderr, r.stderr[-3000:]


def test_the_strings_of_a_dataset_are_its_content_not_its_settings():
    from prov4torch.record.texts import pieces_of, strings_in

    class D:
        def __init__(self) -> None:
            self.root, self.split = "/data", "train"  # settings: short strings on the dataset itself
            self.rows = [("a sentence", 1), ("another one", 0)]
            self.vocab = {"a": 1, "sentence": 2}
            self.transform = lambda s: s

    assert sorted(strings_in(D()) or []) == ["a sentence", "another one", "sentence"]  # (labels: no evidence)
    d = D()
    d.rows.append(("measured", 0.25))  # a float is content: found in the text as a number, or the match fails
    assert sorted(strings_in(d) or [], key=str) == [0.25, "a sentence", "another one", "measured", "sentence"]
    d = D()
    d.rows.append(b"bytes")  # type: ignore[arg-type]
    assert strings_in(d) is None  # bytes: not text found in a file, so nothing is matched
    assert strings_in(torch.utils.data.TensorDataset(torch.ones(2))) is None

    class Hostile:
        def __init__(self) -> None:
            self.words = ["a sentence"]

        def __getattribute__(self, name: str):
            raise RuntimeError("no")

    from prov4torch.record.texts import TextSources

    sources = TextSources()
    sources.opened("/nonexistent", None, [("t", {"p4t:license": "MIT"})], None)
    assert sources.found_in(Hostile()) == ([], [])  # never raises: nothing is matched
    pieces = pieces_of('x,"a sentence"\n  another one  \nmeasured,0.250\n')
    assert pieces is not None and {hash("a sentence"), hash("another one"), hash("x"), hash(0.25)} <= pieces


BIGRAM = """
import torch
torch.manual_seed(1337)
with open("input.txt", "r", encoding="utf-8") as f:  # karpathy's bigram.py: the text, encoded, as one tensor
    text = f.read()
chars = sorted(set(text))
stoi = {ch: i for i, ch in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
model = torch.nn.Embedding(len(chars), len(chars))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
for step in range(5):
    ix = torch.randint(len(data) - 1, (4,))
    loss = torch.nn.functional.cross_entropy(model(data[ix]), data[ix + 1])
    opt.zero_grad(); loss.backward(); opt.step()
    print("step", step, round(loss.item(), 4))
"""


@pytest.mark.parametrize("consent", ["training", "testing"])
def test_a_tagged_text_file_trained_on_as_a_tensor_is_judged_as_training_data(tmp_path: Path, consent: str):
    """karpathy's bigram.py/gpt.py ("Let's build GPT"): input.txt read with open(), encoded into one tensor, trained
    on without a DataLoader. Tagged testing-only, it trained and the run exited 0 with no dataset in the record.
    A tagged file the script reads itself is data: judged at the optimizer's step as training data."""
    (tmp_path / "input.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20)
    (tmp_path / "tags.toml").write_text('[[dataset]]\npath = "input.txt"\norigin_country = "GB"\njurisdiction = "UK"\n'
                                        f'license = "CC0-1.0"\nconsent_scope = ["{consent}"]\n')
    (tmp_path / "train.py").write_text(BIGRAM)
    plain = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    r = cli(tmp_path, "run", "--out", "runs", "--policy", "default", "--region", "eu-west-2", "--purpose",
            "research", "--data-tags", "tags.toml", "train.py")
    if consent == "training":
        assert r.returncode == 0 and r.stdout == plain.stdout, r.stderr[-3000:]
        doc = load(next((tmp_path / "runs").glob("*/*/rank-0.prov.json")))
        (use,) = [u for u in doc["used"].values() if u.get("p4t:name") == "input.txt"]
        assert role(use) == "p4t:training" and "tags.toml" in use["p4t:tagsFrom"]
    else:  # refused at the first step: the update it ends was the only one
        assert r.returncode == 1 and "step 1" not in r.stdout and "purpose-within-consent" in r.stderr, r.stderr
