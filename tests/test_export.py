"""Hand-over formats (issue 27): a CycloneDX 1.6 ML-BOM that its own strict validator accepts, with the digests
and governance of the PROV record; PROV-O that round-trips; atomic writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load

import prov4torch

CLI = [sys.executable, "-m", "prov4torch_cli.app"]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    data = tmp_path / "train.csv"
    data.write_text("1,2\n3,4\n")
    test = tmp_path / "test.csv"
    test.write_text("5,6\n")
    with prov4torch.start_run(region="eu-west-1", purpose="research", intended_use="research",
                              energy=True) as run:
        prov4torch.log_dataset(data, origin_country="DE", jurisdiction="EU", license="CC-BY-4.0 AND MIT",
                               consent_scope=["training", "research"], personal_data=False)
        prov4torch.log_dataset(test, role="testing", origin_country="FR", jurisdiction="EU", license="CC0-1.0")
        prov4torch.log_model(torch.nn.Linear(2, 1), name="m")
    return run.dir


def export(paths: list[Path], fmt: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "export", *map(str, paths), "--format", fmt, "-o", str(out)], capture_output=True,
                          text=True, timeout=120)


def test_cyclonedx_ml_bom_validates_and_carries_the_records_digests_and_governance(run_dir: Path, tmp_path: Path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    out = tmp_path / "bom.json"
    r = export([run_dir], "cyclonedx", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    doc = load(run_dir / "rank-0.prov.json")
    comps = {c["bom-ref"]: c for c in bom["components"]}
    (model,) = [c for c in comps.values() if c["type"] == "machine-learning-model"]
    model_id = model["bom-ref"].removeprefix("model:")
    weights = doc["entity"][model_id]["p4t:weightsSha256"]
    assert {"name": "prov4torch:weightsSha256", "value": weights} in model["properties"]
    data = [c for c in comps.values() if c["type"] == "data"]
    assert len(data) == 2
    for c in data:
        ent = doc["entity"][c["bom-ref"].removeprefix("dataset:")]
        assert c["hashes"] == [{"alg": "SHA-256", "content": ent["p4t:sha256"]}]
        props = {(p["name"], p["value"]) for p in c["properties"]}
        assert ("prov4torch:jurisdiction", "EU") in props
    train = next(c for c in data if ("prov4torch:role", "training") in {(p["name"], p["value"]) for p in c["properties"]})
    assert train["licenses"] == [{"expression": "(CC-BY-4.0 AND MIT)"}]
    assert train["hashes"][0]["content"] == hashlib.sha256(b"1,2\n3,4\n").hexdigest()
    card = model["modelCard"]
    assert card["modelParameters"]["datasets"] == [{"ref": train["bom-ref"]}]  # the test set did not train it
    assert card["considerations"]["useCases"] == ["research"]
    (energy,) = card["considerations"]["environmentalConsiderations"]["energyConsumptions"]
    act = next(a for a in doc["activity"].values() if "p4t:energyKWh" in a)
    assert energy["activityEnergyCost"] == {"value": float(act["p4t:energyKWh"]["$"]), "unit": "kWh"}
    deps = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert deps[model["bom-ref"]] == [train["bom-ref"]]


def test_prov_o_round_trips_to_the_same_graph(run_dir: Path, tmp_path: Path):
    import rdflib
    from rdflib.compare import isomorphic

    trig, jsonld = tmp_path / "run.trig", tmp_path / "run.jsonld"
    assert export([run_dir], "prov-o", trig).returncode == 0
    assert export([run_dir], "prov-o-jsonld", jsonld).returncode == 0
    import warnings

    ga, gb = rdflib.Graph(), rdflib.Graph()
    with warnings.catch_warnings():  # rdflib's Dataset warns about its own internals
        warnings.simplefilter("ignore", DeprecationWarning)
        a, b = rdflib.Dataset(), rdflib.Dataset()
        a.parse(data=trig.read_text(), format="trig")
        b.parse(data=jsonld.read_text(), format="json-ld")
        assert len(a) == len(b) > 50
        for s, p, o, _g in a.quads():
            ga.add((s, p, o))
        for s, p, o, _g in b.quads():
            gb.add((s, p, o))
    assert isomorphic(ga, gb)
    prov = rdflib.Namespace("http://www.w3.org/ns/prov#")
    assert any(True for p in (prov.used, prov.qualifiedUsage) for _ in ga.triples((None, p, None)))


@pytest.mark.foreign_prov
def test_a_failed_export_leaves_nothing_and_says_so_in_one_line(tmp_path: Path):
    bad = tmp_path / "broken.prov.json"
    bad.write_text("{not json")
    out = tmp_path / "bom.json"
    r = export([bad], "cyclonedx", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.glob(".bom.json*")) == []
    r = export([bad], "yaml", out)
    assert r.returncode == 2 and "--format" in r.stderr and "cyclonedx" in r.stderr and len(r.stderr.strip().splitlines()) == 1
