"""API -> PROV-JSON file -> the prov package reads it back with the expected records and types."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import torch
from conftest import read_prov
from prov.identifier import QualifiedName
from prov.model import ProvActivity, ProvAgent, ProvDerivation, ProvEntity, ProvGeneration, ProvUsage

import prov4torch

P4T = prov4torch.NAMESPACE


def attrs(record) -> dict[str, list]:
    out: dict[str, list] = {}
    for k, v in record.attributes:
        out.setdefault(str(k), []).append(v)
    return out


def by_id(doc, cls) -> dict[str, object]:
    return {str(r.identifier): r for r in doc.get_records(cls)}


def test_full_run_round_trips_through_prov(tmp_path: Path):
    torch.manual_seed(1234)
    data = tmp_path / "train.bin"
    data.write_bytes(b"\x00\x01" * 1000)
    with prov4torch.start_run(experiment="rt", run_id="rt1", region="eu-west-1", purpose="research") as run:
        prov4torch.log_params({"lr": 0.01, "epochs": 3, "optimizer": "adam", "amsgrad": False})
        prov4torch.set_tag("team", "vision")
        for i in range(5):
            prov4torch.log_metric("loss", 1.0 / (i + 1), step=i)
        prov4torch.log_metric("acc", 0.9, context="validation")
        ds = prov4torch.log_dataset(data, name="train-bin")
        m1 = prov4torch.log_model(torch.nn.Linear(2, 2), name="net", epoch=1)
        m2 = prov4torch.log_model(torch.nn.Linear(2, 3), name="net", epoch=2)
        art = prov4torch.log_artifact(data, name="copy")
    doc = read_prov(run.prov_path)

    acts = by_id(doc, ProvActivity)
    act = acts["p4t:run/rt1/rank/0"]
    a = attrs(act)
    (run_type,) = a["prov:type"]
    assert isinstance(run_type, QualifiedName) and run_type.uri == "http://www.w3.org/ns/mls#Run"
    assert a["p4t:status"] == ["FINISHED"]
    assert a["p4t:computeRegion"] == ["eu-west-1"] and a["p4t:purpose"] == ["research"]
    assert a["p4t:rank"] == [0] and a["p4t:worldSize"] == [1]
    assert a["p4t:torchSeed"] == [1234]
    assert a["tag:team"] == ["vision"]
    assert isinstance(act.get_startTime(), dt.datetime) and act.get_startTime().tzinfo is not None
    assert act.get_endTime() >= act.get_startTime()

    ents = by_id(doc, ProvEntity)
    params = attrs(ents["p4t:run/rt1/rank/0/params"])
    assert str(params["prov:type"][0]) == "mls:HyperParameterSetting"
    assert params["param:lr"] == [0.01] and params["param:epochs"] == [3]
    assert params["param:optimizer"] == ["adam"] and params["param:amsgrad"] == [False]

    loss = attrs(ents["p4t:run/rt1/rank/0/metric/training/loss"])
    assert loss["p4t:count"] == [5] and loss["p4t:last"] == [0.2] and loss["p4t:min"] == [0.2]
    assert "p4t:run/rt1/rank/0/metric/validation/acc" in ents

    dsa = attrs(ents[ds])
    assert str(dsa["prov:type"][0]) == "mls:Dataset" and dsa["p4t:sizeBytes"] == [2000]
    assert ds.startswith("p4t:dataset/sha256-")
    assert str(attrs(ents[m1.id])["prov:type"][0]) == "mls:Model"
    assert art in ents
    versions = {str(g.get_attribute("prov:entity").pop()): g.get_attribute("p4t:version")
                for g in doc.get_records(ProvGeneration)}
    assert versions[m2.id] == {2}  # per run: on the generation, not on the shared model

    env = attrs(ents["p4t:run/rt1/rank/0/environment"])
    assert env["p4t:torchVersion"] == [torch.__version__]
    assert env["p4t:sidecar"] == ["rank-0.packages.txt"]
    assert len(env["p4t:packagesSha256"][0]) == 64

    agents = by_id(doc, ProvAgent)
    assert any(str(attrs(ag)["prov:type"][0]) == "prov:Person" for ag in agents.values())
    assert any(attrs(ag).get("prov:label") == ["prov4torch"] for ag in agents.values())

    used = {(str(u.get_attribute("prov:activity").pop()), str(u.get_attribute("prov:entity").pop()))
            for u in doc.get_records(ProvUsage)}
    assert ("p4t:run/rt1/rank/0", ds) in used
    gens = {str(g.get_attribute("prov:entity").pop()) for g in doc.get_records(ProvGeneration)}
    assert {m1.id, m2.id, art} <= gens
    derivs = [(str(d.get_attribute("prov:generatedEntity").pop()), str(d.get_attribute("prov:usedEntity").pop()),
               [str(t) for t in d.get_attribute("prov:type")]) for d in doc.get_records(ProvDerivation)]
    assert (m2.id, m1.id, ["prov:Revision"]) in derivs  # version chain
    assert (m1.id, ds, []) in derivs  # trained on the dataset

    # serialising again through prov and reading back gives an equal document
    again = type(doc).deserialize(content=doc.serialize(format="json"), format="json")
    assert again == doc


def test_namespace_iris_are_real_iris():
    doc = prov4torch.start_run()
    doc.end_run()
    from conftest import load

    prefixes = load(doc.prov_path)["prefix"]
    assert prefixes["p4t"] == prov4torch.NAMESPACE == P4T
    assert all(iri.startswith(("http://", "https://")) for iri in prefixes.values())


def test_nan_metric_reads_back_as_nan():
    with prov4torch.start_run() as run:
        prov4torch.log_metric("loss", float("nan"))
    doc = read_prov(run.prov_path)
    (series,) = [e for e in doc.get_records(ProvEntity) if "/metric/" in str(e.identifier)]
    assert math.isnan(attrs(series)["p4t:first"][0])


def test_git_capture(tmp_path: Path):
    import subprocess

    from prov4torch.record.context import code_info

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://user:secret@example.com/x.git"], check=True)
    info = code_info(repo / "train.py")
    assert len(info["git_commit"]) == 40 and info["git_branch"] == "main"
    assert info["git_dirty"] is False and "git_diff_sha256" not in info
    assert info["git_remote"] == "https://example.com/x.git"  # credentials never recorded
    (repo / "train.py").write_text("print(2)\n")
    dirty = code_info(repo / "train.py")
    assert dirty["git_dirty"] is True and len(dirty["git_diff_sha256"]) == 64


def test_package_list_matches_importlib_metadata():
    from importlib import metadata

    from prov4torch.record.context import normalize_name, packages

    expected = {f"{normalize_name(d.metadata['Name'])}=={d.version}" for d in metadata.distributions()
                if d.metadata and d.metadata.get("Name")}
    assert set(packages()) == expected
    assert any(p.startswith("torch==") for p in packages())
