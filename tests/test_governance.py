"""Governance that holds on real code (issue 13): lineage that travels with the checkpoint, fail-closed
lineage, record only what happened, consent semantics, tags without code changes, enforcement on every
data path, one decision per dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import load, rank_activity, role
from torch.utils.data import DataLoader, Dataset, TensorDataset

import prov4torch
from prov4torch.governance.evaluate import check

EU_TAGS = {"origin_country": "DE", "jurisdiction": "EU", "personal_data": True, "consent_scope": ["training"],
           "license": "CC-BY-4.0"}
CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def pretrain(tmp_path: Path, out: Path) -> Path:
    data = tmp_path / "patients.bin"
    data.write_bytes(b"p" * 100)
    ckpt = tmp_path / "base" / "model.pt"
    ckpt.parent.mkdir()
    with prov4torch.start_run(out_dir=out, region="eu-west-1", purpose="training", policy="default"):
        prov4torch.log_dataset(data, name="patients", **EU_TAGS)
        torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
        prov4torch.log_model(ckpt, name="base")
    return ckpt


def decisions(doc: dict) -> list[dict]:
    def types(e: dict) -> list:
        t = e.get("prov:type", [])
        return [x.get("$") for x in (t if isinstance(t, list) else [t])]

    return [e for e in doc["entity"].values() if "p4t:PolicyDecision" in types(e)]


# -- lineage travels with the checkpoint; unknown lineage fails closed --------------------------------------

def test_a_copied_checkpoint_fine_tuned_elsewhere_is_blocked_citing_the_eu_rule(tmp_path: Path):
    ckpt = pretrain(tmp_path, tmp_path / "store-a")
    assert (ckpt.parent / "model.pt.lineage.json").is_file()  # the sidecar beside the file
    copy = tmp_path / "elsewhere" / "model.pt"
    copy.parent.mkdir()
    shutil.copy(ckpt, copy)
    shutil.copy(ckpt.parent / "model.pt.lineage.json", copy.parent / "model.pt.lineage.json")
    with pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        with prov4torch.start_run(out_dir=tmp_path / "store-b", region="us-east-1", purpose="training",
                                  policy="default") as run:
            prov4torch.load_model(copy)
    assert run.status == "BLOCKED"
    doc = load(run.prov_path)
    (model,) = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    assert model not in {u["prov:entity"] for u in doc["used"].values()}  # blocked: never `used`
    (dec,) = decisions(doc)
    assert dec["p4t:verdict"] == "deny" and "eu-personal-data-stays-in-eu" in json.dumps(dec["p4t:rule"])


def test_without_the_sidecar_unknown_lineage_fails_closed(tmp_path: Path):
    ckpt = pretrain(tmp_path, tmp_path / "store-a")
    copy = tmp_path / "elsewhere.pt"
    shutil.copy(ckpt, copy)  # the file alone, copied to another store
    with pytest.warns(RuntimeWarning, match="no lineage is known"), \
            pytest.raises(prov4torch.PolicyViolation, match="checkpoint-lineage-known.*declare_checkpoint"):
        with prov4torch.start_run(out_dir=tmp_path / "store-b", region="eu-west-1", purpose="training",
                                  policy="default") as run:
            prov4torch.load_model(copy)
    assert run.status == "BLOCKED"


def test_lineage_path_and_a_rebuilt_index_find_the_lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ckpt = pretrain(tmp_path, tmp_path / "store-a")
    (ckpt.parent / "model.pt.lineage.json").unlink()
    shutil.rmtree(tmp_path / "store-a" / ".lineage")
    proc = subprocess.run([*CLI, "index", "rebuild", str(tmp_path / "store-a")], capture_output=True, text=True)
    assert proc.returncode == 0 and "1 checkpoint lineage card(s)" in proc.stdout, proc.stderr
    monkeypatch.setenv("PROV4TORCH_LINEAGE_PATH", str(tmp_path / "store-a"))
    with pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        with prov4torch.start_run(out_dir=tmp_path / "store-b", region="us-east-1", purpose="training",
                                  policy="default"):
            prov4torch.load_model(ckpt)
    # a PROV file on the path works too
    shutil.rmtree(tmp_path / "store-a" / ".lineage")
    (prov_file,) = (tmp_path / "store-a").rglob("rank-0.prov.json")
    monkeypatch.setenv("PROV4TORCH_LINEAGE_PATH", str(prov_file))
    with prov4torch.start_run(out_dir=tmp_path / "store-c", region="eu-west-1", purpose="training",
                              policy="default") as run:
        prov4torch.load_model(ckpt)
    (used,) = [u for u in load(run.prov_path)["used"].values() if role(u) == "p4t:baseModel"]
    assert used["p4t:lineageKnown"] is True and used["p4t:lineageFrom"] == str(prov_file)


def test_a_copy_gets_its_own_sidecar_and_a_deleted_checkpoint_leaves_none(tmp_path: Path):
    """A trainer that rotates checkpoints and saves the best weights again as its final model: the final copy
    carries the lineage (in a fresh store it is blocked like the original), the rotated ones leave nothing."""
    data = tmp_path / "patients.bin"
    data.write_bytes(b"p" * 100)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    mine = tmp_path / "user.pt.lineage.json"  # a file of the same name the recorder did not write
    with prov4torch.start_run(out_dir=tmp_path / "store-a", region="eu-west-1", purpose="training"):
        torch.save({"w": torch.zeros(2)}, ckpts / "earlier.pt")  # an earlier run's checkpoint and sidecar
        prov4torch.log_model(ckpts / "earlier.pt", name="earlier")
    assert (ckpts / "earlier.pt.lineage.json").is_file()
    with prov4torch.start_run(out_dir=tmp_path / "store-a", region="eu-west-1", purpose="training") as run:
        prov4torch.log_dataset(data, name="patients", **EU_TAGS)
        (ckpts / "earlier.pt").unlink()  # a resumed trainer rotates the earlier run's checkpoint away
        for step in (1, 2, 3):
            torch.save({"w": torch.full((2,), float(step))}, ckpts / f"step-{step}.pt")
            prov4torch.log_model(ckpts / f"step-{step}.pt", name="ckpt", step=step)
            if step > 1:
                (ckpts / f"step-{step - 1}.pt").unlink()  # rotation: only the last is kept
        final = tmp_path / "final.pt"
        shutil.copy(ckpts / "step-3.pt", final)
        prov4torch.log_model(final, name="final")  # the same weights: no new model, a sidecar of its own
        (tmp_path / "user.pt").write_bytes(b"x")
        mine.write_text("{}")
        (tmp_path / "user.pt").unlink()
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-3.pt", "step-3.pt.lineage.json"]
    assert mine.read_text() == "{}"
    def card_of(sidecar: Path) -> dict:
        import base64

        return json.loads(base64.b64decode(json.loads(sidecar.read_text())["payload"]))["predicate"]

    assert card_of(tmp_path / "final.pt.lineage.json") == card_of(ckpts / "step-3.pt.lineage.json")
    doc = load(run.prov_path)
    (gen,) = [g for g in doc["wasGeneratedBy"].values() if g.get("p4t:savedAgainPath")]
    assert gen["p4t:savedAgainPath"] == str(final) and str(tmp_path / "final.pt.lineage.json") in gen[
        "p4t:lineageSidecar"]
    copy = tmp_path / "elsewhere" / "final.pt"
    copy.parent.mkdir()
    shutil.copy(final, copy)
    shutil.copy(tmp_path / "final.pt.lineage.json", copy.parent / "final.pt.lineage.json")
    with pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        with prov4torch.start_run(out_dir=tmp_path / "store-b", region="us-east-1", purpose="training",
                                  policy="default"):
            prov4torch.load_model(copy)


def test_a_declared_third_party_checkpoint_is_allowed_and_its_data_is_in_the_record(tmp_path: Path):
    ckpt = tmp_path / "vendor.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
    prov4torch.declare_checkpoint(ckpt, dataset_id="vendor-corpus", origin_country="US", jurisdiction="US",
                                  license="Apache-2.0")
    with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default") as run:
        prov4torch.load_model(ckpt)
    assert run.status == "FINISHED"
    doc = load(run.prov_path)
    assert doc["entity"]["p4t:dataset/declared/vendor-corpus"]["p4t:jurisdiction"] == "US"


# -- inheritance and consent semantics -------------------------------------------------------------------

def test_consent_intersects_and_personal_data_is_any(tmp_path: Path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    with prov4torch.start_run() as run:
        prov4torch.log_dataset(a, consent_scope=["research"], personal_data=False)
        prov4torch.log_dataset(b, consent_scope=["research", "commercial"], personal_data=True)
        mv = prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    model = load(run.prov_path)["entity"][mv.id]
    assert model["p4t:consentScope"] == "research" and model["p4t:personalData"] is True
    with prov4torch.start_run() as run:
        prov4torch.log_dataset(a, consent_scope=["research"])
        prov4torch.log_dataset(b, consent_scope=["commercial"])
        mv = prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    assert load(run.prov_path)["entity"][mv.id]["p4t:consentScope"] == "none"


def test_test_only_data_used_as_the_test_set_of_a_training_run_is_allowed(tmp_path: Path):
    train, test = tmp_path / "train.bin", tmp_path / "test.bin"
    train.write_bytes(b"t")
    test.write_bytes(b"x")
    tags = {"origin_country": "FR", "jurisdiction": "EU", "license": "CC-BY-4.0"}
    with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default") as run:
        prov4torch.log_dataset(train, consent_scope=["training"], **tags)
        prov4torch.log_dataset(test, role="testing", consent_scope=["testing"], **tags)
        prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
    assert run.status == "FINISHED" and check([run.prov_path], "default").verdict == "allow"
    with pytest.raises(prov4torch.PolicyViolation, match="purpose-within-consent"):
        with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default"):
            prov4torch.log_dataset(test, role="training", consent_scope=["testing"], **tags)
    # allowed for testing, then refused for training in the same run: the record holds the testing use only
    with pytest.raises(prov4torch.PolicyViolation, match="purpose-within-consent"):
        with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default") as both:
            prov4torch.log_dataset(test, role="testing", consent_scope=["testing"], **tags)
            prov4torch.log_dataset(test, role="training", consent_scope=["testing"], **tags)
    assert {role(u) for u in load(both.prov_path)["used"].values() if "dataset" in u["prov:entity"]} == {
        "p4t:testing"}
    assert check([both.prov_path], "default").verdict == "allow"


class Stream(torch.utils.data.IterableDataset):
    """A stream: nothing to shuffle, items made on the fly."""

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(24):
            yield torch.randn(2, generator=g)


class Split(Dataset):
    def __init__(self, split: str) -> None:
        self.split, self.x = split, torch.arange(24.0).reshape(12, 2) + (100 if split == "test" else 0)

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        return self.x[i]


def roles_of(doc: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for u in doc["used"].values():
        if u.get("p4t:name") in ("Stream", "Split", "TensorDataset"):
            out.setdefault(u["p4t:name"] + ":" + u["prov:entity"][-6:], set()).add(role(u))
    return out


def test_a_loader_an_optimizer_steps_between_batches_of_is_training_data(tmp_path: Path):
    """Roles from behaviour: an unshuffled or streaming loader the model is trained on is training data (and the
    model derives from it); one read under no_grad is evaluation, and so is one read to its end with gradients
    on but never trained on; one left half-read with gradients on stays input (the model may have learned from
    it). Recording changes nothing the loop computes."""
    def train(record: bool) -> tuple[list[float], Any]:
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        unshuffled = DataLoader(TensorDataset(torch.arange(16.0).reshape(8, 2)), batch_size=2)
        stream = DataLoader(Stream(), batch_size=4)
        evaluation = DataLoader(TensorDataset(torch.ones(4, 2) * 7), batch_size=2)
        looked_at = DataLoader(TensorDataset(torch.ones(4, 2) * 9), batch_size=2)
        half_read = DataLoader(TensorDataset(torch.ones(6, 2) * 5), batch_size=2)
        losses = []
        run = prov4torch.start_run(policy=str(permissive)) if record else None
        for _epoch in range(2):
            for (x,) in unshuffled:
                opt.zero_grad()
                loss = model(x).pow(2).mean()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        for x in stream:
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        with torch.no_grad():
            losses.append(sum(model(x).sum().item() for (x,) in evaluation))
        losses.append(sum(float(x.sum()) for (x,) in looked_at))
        losses.append(float(next(iter(half_read))[0].sum()))
        if run is not None:
            torch.save(model.state_dict(), tmp_path / "m.pt")
            prov4torch.log_model(tmp_path / "m.pt", name="m")
            run.end_run()
        return losses, run

    permissive = tmp_path / "p.toml"
    permissive.write_text('policy = "permissive"\n')
    plain, _ = train(False)
    recorded, run = train(True)
    assert recorded == plain
    doc = load(run.prov_path)
    roles = sorted(tuple(sorted(r)) for r in roles_of(doc).values())
    # the unshuffled loader and the stream: training, their first batch included (it was stepped on); the
    # loader read under no_grad and the one read to its end without a step: evaluation; the half-read one: input
    assert roles == [("p4t:evaluation",), ("p4t:evaluation",), ("p4t:input",), ("p4t:training",),
                     ("p4t:training",)], roles
    usage = {(u["p4t:name"], role(u)): int(u["p4t:batches"]["$"]) for u in doc["used"].values()
             if u.get("p4t:name") == "Stream"}
    assert usage == {("Stream", "p4t:training"): 6}
    (model,) = [k for k in doc["entity"] if k.startswith("p4t:model/")]
    sources = {d["prov:usedEntity"] for d in doc["wasDerivedFrom"].values() if d["prov:generatedEntity"] == model}
    trained = {u["prov:entity"] for u in doc["used"].values() if role(u) == "p4t:training"}
    evaluated = {u["prov:entity"] for u in doc["used"].values() if role(u) == "p4t:evaluation"}
    inputs = {u["prov:entity"] for u in doc["used"].values() if role(u) == "p4t:input"}
    assert len(trained) == 2 and len(evaluated) == 2 and sources == trained | inputs


def test_a_shuffled_loader_read_under_inference_mode_is_not_training_data(tmp_path: Path):
    """karpathy/makemore estimates its test loss on a shuffled DataLoader of the test split under
    torch.inference_mode, between training steps: it was recorded as training data (shuffled → training), so the
    record said the model trained on its test set (and testing-only data was refused). Read with gradients off it
    is evaluation, validation once a step follows; a shuffled loader stepped on between its batches is training."""
    permissive = tmp_path / "p.toml"
    permissive.write_text('policy = "permissive"\n')
    train_set = TensorDataset(torch.arange(16.0).reshape(8, 2))
    test_set = TensorDataset(torch.arange(16.0).reshape(8, 2) + 100)
    peeked = TensorDataset(torch.arange(16.0).reshape(8, 2) + 200)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with prov4torch.start_run(policy=str(permissive)) as run:
        def step(x: torch.Tensor) -> None:
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

        for _epoch in range(3):
            for (x,) in DataLoader(train_set, batch_size=4, shuffle=True):
                step(x)
            with torch.inference_mode():
                for i, (x,) in enumerate(DataLoader(test_set, batch_size=2, shuffle=True)):
                    model(x)
                    if i == 1:
                        break
        with torch.no_grad():
            it = iter(DataLoader(peeked, batch_size=2, shuffle=True))  # opened without gradients, then trained on
        for (x,) in it:
            step(x)
    doc = load(run.prov_path)
    by_data: dict[str, set[str]] = {}
    ids = {run.inputs.datasets.known(d): n for d, n in ((train_set, "train"), (test_set, "test"), (peeked, "peeked"))}
    for u in doc["used"].values():
        if u["prov:entity"] in ids:
            by_data.setdefault(ids[u["prov:entity"]], set()).add(role(u))
    assert by_data == {"train": {"p4t:training"}, "test": {"p4t:validation"}, "peeked": {"p4t:training"}}, by_data


def test_a_test_split_trained_on_is_checked_as_training_data_before_its_next_batch(tmp_path: Path):
    tags = tmp_path / "tags.toml"
    tags.write_text('[[dataset]]\nname = "Split"\norigin_country = "FR"\njurisdiction = "EU"\n'
                    'license = "CC-BY-4.0"\nconsent_scope = ["testing"]\n')
    prov4torch.load_tags(tags)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = 0
    with pytest.raises(prov4torch.PolicyViolation, match="purpose-within-consent"):
        with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default") as run:
            for x in DataLoader(Split("test"), batch_size=4):  # a test split: testing data, allowed
                seen += 1
                opt.zero_grad()
                model(x).sum().backward()
                opt.step()  # ... until it is trained on
    assert seen == 1 and run.status == "BLOCKED"
    doc = load(run.prov_path)
    # the one batch before the step was trained on, and the record says so: check denies the finished file
    (used,) = [u for u in doc["used"].values() if u.get("p4t:name") == "Split"]
    assert role(used) == "p4t:training" and used["p4t:batches"]["$"] == "1" and used["p4t:samples"]["$"] == "4"
    checked = {d["p4t:verdict"]: d["p4t:checkedRole"]["$"] for d in decisions(doc)}
    assert checked == {"allow": "p4t:testing", "deny": "p4t:training"}
    assert check([run.prov_path], "default").verdict == "deny"


def test_a_tracked_loader_reused_in_a_second_run_is_checked_again():
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=4)
    tracked = prov4torch.track(loader, name="eu", **EU_TAGS)
    with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default"):
        assert sum(1 for _ in tracked) == 2
    with pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        with prov4torch.start_run(region="us-east-1", purpose="training", policy="default") as second:
            for _ in tracked:
                pass
    assert second.status == "BLOCKED"


def test_one_decision_per_dataset_over_thirty_epochs():
    ds = TensorDataset(torch.arange(16.0))
    tags = {"origin_country": "FR", "jurisdiction": "EU", "license": "CC-BY-4.0", "consent_scope": ["training"]}
    with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default") as run:
        for _ in range(30):
            for _ in prov4torch.track(DataLoader(ds, batch_size=8, shuffle=True), name="d", **tags):
                pass
    doc = load(run.prov_path)
    assert len(decisions(doc)) == 1
    (used,) = [u for u in doc["used"].values() if role(u) == "p4t:training"]
    assert used["p4t:epochs"]["$"] == "30" and used["p4t:samples"]["$"] == str(30 * 16)


# -- enforcement on every data path -------------------------------------------------------------------------

DENY_ALL = """
policy = "deny-all"
[[rules]]
id = "nothing-allowed"
effect = "deny"
target = "dataset"
scope = "direct"
check = "required_attributes"
attributes = ["p4t:approvedByNobody"]
"""


class Items(Dataset):
    def __init__(self) -> None:
        self.x = torch.arange(40.0).reshape(20, 2)

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        return self.x[i]


class Loopy(DataLoader):
    """A DataLoader subclass with its own __iter__ that never builds an iterator of torch's."""

    def __iter__(self):
        for i in range(len(self.dataset)):
            yield self.dataset[i]


PATHS = {
    "dataloader": lambda ds: next(iter(DataLoader(ds, batch_size=4))),
    "dataloader with workers": lambda ds: next(iter(DataLoader(ds, batch_size=4, num_workers=1))),
    "index loader.dataset": lambda ds: DataLoader(ds).dataset[0],
    "iterate loader.dataset": lambda ds: next(iter(ds[i] for i in range(len(ds)))),
    "subclass with its own __iter__": lambda ds: next(iter(Loopy(ds))),
    "track(loader).loader": lambda ds: next(iter(prov4torch.track(DataLoader(ds)).loader)),
    "subset": lambda ds: torch.utils.data.Subset(ds, [1, 2])[0],
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_data_path_is_gated_before_the_first_item_reaches_the_caller(tmp_path: Path, path: str):
    policy = tmp_path / "deny.toml"
    policy.write_text(DENY_ALL)
    ds = Items()
    with pytest.raises(prov4torch.PolicyViolation, match="nothing-allowed"):
        with prov4torch.start_run(policy=str(policy)) as run:
            PATHS[path](ds)
    assert run.status == "BLOCKED"


def test_an_iterator_opened_before_the_run_stops_once_the_run_is_blocked(tmp_path: Path):
    policy = tmp_path / "deny.toml"
    policy.write_text(DENY_ALL)
    it = iter(DataLoader(Items(), batch_size=2))
    next(it)  # before any run
    with pytest.raises(prov4torch.PolicyViolation):
        with prov4torch.start_run(policy=str(policy)):
            next(it)


def test_training_after_catching_the_violation_gets_no_more_data(tmp_path: Path):
    policy = tmp_path / "deny.toml"
    policy.write_text(DENY_ALL)
    other = Items()
    with prov4torch.start_run(policy=str(policy)) as run:
        with pytest.raises(prov4torch.PolicyViolation):
            prov4torch.log_dataset(Items(), name="first")
        with pytest.raises(prov4torch.PolicyViolation):
            next(iter(DataLoader(other, batch_size=2)))
    assert run.status == "BLOCKED"


def test_a_plain_generator_is_not_gated_but_the_model_it_trained_is_a_finding(tmp_path: Path):
    with pytest.warns(Warning) as caught:
        with prov4torch.start_run(region="eu-west-1", purpose="training", policy="default") as run:
            for _x in (torch.ones(2) for _ in range(3)):
                pass
            prov4torch.log_model(torch.nn.Linear(2, 2), name="m")
    said = " ".join(str(w.message) for w in caught)
    assert "model-trained-on-declared-data" in said and "has no recorded training data" in said  # the gap, aloud
    (model,) = [e for k, e in load(run.prov_path)["entity"].items() if k.startswith("p4t:model/")]
    assert model["p4t:lineageGap"] is True
    report = check([run.prov_path], "default")
    assert report.verdict == "deny" and "model-trained-on-declared-data" in {v.rule for v in report.violations}


def test_disabled_together_with_a_policy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROV4TORCH_DISABLED", "1")
    with pytest.raises(prov4torch.ConfigError, match="PROV4TORCH_DISABLED=1 would switch off the policy"):
        prov4torch.start_run(policy="default")
    (tmp_path / "s.py").write_text("print('ran')\n")
    proc = subprocess.run([*CLI, "run", "--policy", "default", "s.py"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "ran" not in proc.stdout and "would switch off" in proc.stderr


# -- tags without code changes --------------------------------------------------------------------------------

UNMODIFIED = """
import sys, torch
from torch.utils.data import DataLoader, Dataset
class Csv(Dataset):
    def __init__(self, path):
        self.path = path
        self.rows = [[float(v) for v in line.split(",")] for line in open(path)]
    def __len__(self):
        return len(self.rows)
    def __getitem__(self, i):
        return torch.tensor(self.rows[i])
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x in DataLoader(Csv(sys.argv[1]), batch_size=4, shuffle=True):
    opt.zero_grad(); model(x).sum().backward(); opt.step()
torch.save(model.state_dict(), "model.pt")
print("trained")
"""


def unmodified(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("\n".join(f"{i},{i * 2},{i % 3}" for i in range(16)))
    (tmp_path / "train.py").write_text(UNMODIFIED)
    return tmp_path / "data" / "train.csv"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "run", "--policy", "default", "--region", "eu-west-1", "--purpose", "training",
                           *args, "train.py", "data/train.csv"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=240)


def test_an_unmodified_script_is_blocked_without_tags_and_passes_with_a_tags_file(tmp_path: Path):
    unmodified(tmp_path)
    blocked = run_cli(tmp_path)
    assert blocked.returncode == 1 and "required-tags" in blocked.stderr and "trained" not in blocked.stdout
    (tmp_path / "tags.toml").write_text(textwrap.dedent("""
        [[dataset]]
        path = "data/*.csv"
        origin_country = "FR"
        jurisdiction = "EU"
        license = "CC-BY-4.0"
        consent_scope = ["training"]
    """))
    ok = run_cli(tmp_path, "--data-tags", "tags.toml")
    assert ok.returncode == 0 and "trained" in ok.stdout, ok.stderr
    (run_dir,) = [p.parent for p in Path(__import__("os").environ["PROV4TORCH_DIR"]).glob("*/*/run.prov.json")
                  if rank_activity(load(p.parent / "rank-0.prov.json"))["p4t:status"] == "FINISHED"]
    doc = load(run_dir / "rank-0.prov.json")
    (used,) = [u for u in doc["used"].values() if role(u) == "p4t:training"]
    assert str(tmp_path / "tags.toml") in used["p4t:tagsFrom"]
    assert check([run_dir], "default").verdict == "allow"


def test_a_croissant_file_tags_the_data_an_unmodified_script_reads(tmp_path: Path):
    import hashlib

    csv_file = unmodified(tmp_path)
    croissant = {
        "@context": {"@vocab": "https://schema.org/", "cr": "http://mlcommons.org/croissant/"},
        "@type": "sc:Dataset", "conformsTo": "http://mlcommons.org/croissant/1.1", "name": "toy",
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "distribution": [{"@type": "cr:FileObject", "@id": "train.csv", "contentUrl": "data/train.csv",
                          "sha256": hashlib.sha256(csv_file.read_bytes()).hexdigest()}],
    }
    (tmp_path / "toy.croissant.json").write_text(json.dumps(croissant))
    (tmp_path / "more.toml").write_text(textwrap.dedent("""
        [[dataset]]
        name = "Csv"
        origin_country = "FR"
        jurisdiction = "EU"
        consent_scope = ["training"]
    """))
    ok = run_cli(tmp_path, "--data-tags", "toy.croissant.json", "--data-tags", "more.toml")
    assert ok.returncode == 0 and "trained" in ok.stdout, ok.stderr


def test_a_dataset_card_and_bad_tags_files(tmp_path: Path):
    card = tmp_path / "data" / "README.md"
    card.parent.mkdir()
    card.write_text("---\nlicense: cc-by-nc-4.0\nsource_datasets:\n- squad\npretty_name: Toy\n---\n# Toy\n")
    (tmp_path / "data" / "x.bin").write_bytes(b"x")
    assert prov4torch.load_tags(card) == 2
    with prov4torch.start_run() as run:
        did = prov4torch.log_dataset(tmp_path / "data" / "x.bin")
    ent = load(run.prov_path)["entity"][did]
    assert ent["p4t:license"] == "CC-BY-NC-4.0" and ent["p4t:sourceDataset"] == "squad"
    bad = tmp_path / "bad.toml"
    for text, match in [("[[dataset]]\npath='x'\ncolour='red'\n", "unknown key 'colour'"),
                        ("[[dataset]]\norigin_country='DE'\n", "nothing to match"),
                        ("[[dataset]]\npath='x'\norigin_country='Germany'\n", "origin_country"),
                        ("[[model]]\npath='x'\n", "unknown key 'model'")]:
        bad.write_text(text)
        with pytest.raises(prov4torch.ConfigError, match=match):
            prov4torch.load_tags(bad)
    bad.write_text("[[dataset]]\npath='data/*.bin'\nlicense='MIT'\n")
    prov4torch.load_tags(bad)
    # three sources disagree on the licence: all of them hold (every licence applies), and the record says so
    with pytest.warns(RuntimeWarning, match=r"disagree.*p4t:license"):
        with prov4torch.start_run() as run:
            did = prov4torch.log_dataset(tmp_path / "data" / "x.bin", license="CC-BY-4.0")
    ent = load(run.prov_path)["entity"][did]
    assert sorted(ent["p4t:license"]) == ["CC-BY-4.0", "CC-BY-NC-4.0", "MIT"]
    assert any("README.md" in c and "bad.toml" in c for c in ent["p4t:tagConflict"])
