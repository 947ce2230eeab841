"""log_model / load_model / log_artifact / log_dataset: digests, version chains, links across runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import load, role

import prov4torch


def test_checkpoint_file_is_identified_by_its_weights_and_keeps_its_sha256(tmp_path: Path):
    ckpt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3)}, ckpt)
    with prov4torch.start_run() as run:
        mv = prov4torch.log_model(ckpt, name="net", step=100, epoch=2)
    assert mv.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert mv.id.startswith("p4t:model/weights-sha256-") and mv.version == 1 and mv.path == str(ckpt)
    doc = load(run.prov_path)
    (gen,) = [g for g in doc["wasGeneratedBy"].values() if g["prov:entity"] == mv.id]
    assert gen["p4t:sha256"] == mv.sha256 and gen["p4t:path"] == str(ckpt) and gen["p4t:name"] == "net"
    assert doc["entity"][mv.id]["p4t:identity"] == "weights"


def test_a_file_that_is_not_weights_is_identified_by_its_bytes(tmp_path: Path):
    ckpt = tmp_path / "blob.bin"
    ckpt.write_bytes(b"not a torch file")
    with prov4torch.start_run() as run:
        mv = prov4torch.log_model(ckpt, name="blob")
    assert mv.id == f"p4t:model/sha256-{hashlib.sha256(b'not a torch file').hexdigest()}"
    assert load(run.prov_path)["entity"][mv.id]["p4t:identity"] == "content"


def test_module_is_saved_into_the_run_directory_not_the_cwd(tmp_path: Path):
    with prov4torch.start_run() as run:
        mv = prov4torch.log_model(torch.nn.Linear(2, 2), name="lin")
    assert Path(mv.path).parent == run.dir / "models"
    assert list(tmp_path.glob("*.pt")) == []
    assert set(torch.load(mv.path)) == {"weight", "bias"}


def test_a_fine_tune_links_to_the_run_that_made_its_base_model(tmp_path: Path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc" * 100)
    with prov4torch.start_run(run_id="pretrain") as first:
        ds = prov4torch.log_dataset(data)
        base = prov4torch.log_model(torch.nn.Linear(2, 2), name="base")
    with prov4torch.start_run(run_id="finetune") as second:
        state = prov4torch.load_model(base.path)
        assert set(state) == {"weight", "bias"}
        tuned = prov4torch.log_model(torch.nn.Linear(2, 2), name="tuned")
    d1, d2 = load(first.prov_path), load(second.prov_path)
    assert (base.id, ds) in {(r["prov:generatedEntity"], r["prov:usedEntity"]) for r in d1["wasDerivedFrom"].values()}
    used = {(u["prov:activity"], u["prov:entity"], role(u)) for u in d2["used"].values()}
    assert ("p4t:run/finetune/rank/0", base.id, "p4t:baseModel") in used  # same id in both files
    derived = {(r["prov:generatedEntity"], r["prov:usedEntity"]) for r in d2["wasDerivedFrom"].values()}
    assert (tuned.id, base.id) in derived


def test_bad_model_and_artifact_input(tmp_path: Path):
    with prov4torch.start_run() as run:
        with pytest.raises(prov4torch.InvalidValueError, match="does not exist"):
            prov4torch.log_model(tmp_path / "missing.pt")
        with pytest.raises(prov4torch.InvalidValueError, match="needs a path, an nn.Module or a state dict"):
            prov4torch.log_model(42)
        with pytest.raises(prov4torch.InvalidValueError, match="invalid model name"):
            prov4torch.log_model(torch.nn.Linear(1, 1), name="")
        with pytest.raises(prov4torch.InvalidValueError, match="does not exist"):
            prov4torch.log_artifact(tmp_path / "missing.txt")
        with pytest.raises(prov4torch.InvalidValueError, match="takes a path"):
            prov4torch.log_artifact(3.14)
        with pytest.raises(prov4torch.InvalidValueError, match="does not exist"):
            prov4torch.load_model(tmp_path / "missing.pt")
        prov4torch.log_metric("still", 1.0)
    assert run.status == "FINISHED"
    assert "missing" not in run.prov_path.read_text()


def test_artifact_directory_digest_is_stable(tmp_path: Path):
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    with prov4torch.start_run():
        first = prov4torch.log_artifact(d)
    with prov4torch.start_run():
        second = prov4torch.log_artifact(d)
    assert first == second
    (d / "sub" / "b.txt").write_text("changed")
    with prov4torch.start_run():
        assert prov4torch.log_artifact(d) != first


def test_in_memory_datasets_are_identified_by_their_whole_content():
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.arange(12.0).reshape(6, 2)
    with prov4torch.start_run() as run:
        a = prov4torch.log_dataset(TensorDataset(x, torch.zeros(6)), name="a")
        b = prov4torch.log_dataset(DataLoader(TensorDataset(x.clone(), torch.zeros(6))), name="same-bytes")
        c = prov4torch.log_dataset(list(range(100)), name="a-list", role="validation")
    assert a == b != c
    ents = load(run.prov_path)["entity"]
    assert ents[a]["p4t:digestMethod"] == "sha256-content" and ents[a]["p4t:length"]["$"] == "6"
    assert ents[a]["p4t:identity"] == "content" and ents[c]["p4t:identity"] == "content"
    roles = {u["prov:entity"]: u["prov:role"] for u in load(run.prov_path)["used"].values()}
    assert roles[c] == {"$": "p4t:validation", "type": "xsd:QName"}


def test_a_dataset_attached_again_for_training_is_in_the_models_lineage(tmp_path: Path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"d")
    with prov4torch.start_run() as run:
        ds = prov4torch.log_dataset(data, role="validation")
        prov4torch.log_dataset(data, role="training")
        mv = prov4torch.log_model(torch.nn.Linear(1, 1), name="m")
        assert run.model_sources() == [ds]  # the runtime policy sees the same derivation
    derived = {(r["prov:generatedEntity"], r["prov:usedEntity"]) for r in load(run.prov_path)["wasDerivedFrom"].values()}
    assert (mv.id, ds) in derived
