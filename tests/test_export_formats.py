"""Hand-over formats from a real run (issue 27): the MNIST example on two gloo ranks under `prov4torch run` (a
real run and a merged multi-rank document in one), exported as SPDX 3.0.1 and OpenLineage, each checked by the
official schemas kept in the package, with the PROV record's digests and governance; OpenLineage sent live to a
local HTTP server that is healthy, slow, dead or hostile -- training unaffected every time."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import load

from prov4torch.audit import openlineage, spdx
from prov4torch.autolog.openlineage_live import TIMEOUT_S
from prov4torch.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mnist"
CLI = [sys.executable, "-m", "prov4torch_cli.app"]
SPDX_301_SHA256 = "582c64e809d5b3ef9bd0c4de13a32391b47b0284a3e8d199569fb96f649234b1"  # as spdx.org serves it


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> \
        subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROV4TORCH_", "OPENLINEAGE"))}
    base.update({"PROV4TORCH_FLUSH_INTERVAL": "0.2", "PROV4TORCH_SYSTEM_METRICS": "0", **(env or {})})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=base)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("mnist")
    r = cli(root, "run", "--out", "runs", "--run-id", "ddp", "--experiment", "mnist", "--nproc-per-node", "2",
            "--policy", str(EXAMPLE / "policy.toml"), "--region", "eu-west-1", "--purpose", "training",
            str(EXAMPLE / "train.py"), "--data-dir", str(root / "none"), "--epochs", "1", "--limit", "300",
            "--out", "ckpt")
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "runs" / "mnist" / "ddp"


def export(target: Path, fmt: str, out: Path) -> subprocess.CompletedProcess[str]:
    return cli(out.parent, "export", str(target), "--format", fmt, "-o", str(out))


def prov_entities(run_dir: Path) -> dict[str, dict[str, Any]]:
    merged = load(run_dir / "run.prov.json")
    out = dict(merged.get("entity", {}))
    for bundle in merged.get("bundle", {}).values():
        out.update(bundle.get("entity", {}))
    return out


def expand(short: str) -> str:
    return "https://w3id.org/prov4torch/ns#" + short.removeprefix("p4t:")


# -- SPDX 3.0.1 ----------------------------------------------------------------------------------------------------

def test_the_spdx_schema_kept_here_is_the_official_one():
    data = (ROOT / "prov4torch" / "audit" / "schemas" / "spdx-3.0.1.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SPDX_301_SHA256


def test_spdx_of_a_merged_two_rank_mnist_run_is_valid_and_carries_the_records_digests(mnist: Path, tmp_path: Path):
    import jsonschema

    out = tmp_path / "sbom.spdx.json"
    r = export(mnist, "spdx", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    jsonschema.Draft202012Validator(spdx.schema()).validate(doc)
    graph = {o.get("spdxId", o.get("@id")): o for o in doc["@graph"]}
    entities = prov_entities(mnist)
    models = [o for o in doc["@graph"] if o["type"] == "ai_AIPackage"]
    datasets = [o for o in doc["@graph"] if o["type"] == "dataset_DatasetPackage"]
    assert models and len(datasets) >= 3
    for d in datasets:
        ent = next(e for k, e in entities.items() if expand(k) == d["spdxId"])
        assert d["verifiedUsing"][0]["hashValue"] == ent["p4t:sha256"]
        assert d["dataset_hasSensitivePersonalInformation"] == "no"
        assert d["validUntilTime"].startswith(ent["p4t:consentExpires"]["$"][:10])
    for m in models:
        ent = next(e for k, e in entities.items() if expand(k) == m["spdxId"])
        assert ent["p4t:weightsSha256"] in {h["hashValue"] for h in m["verifiedUsing"]}
        assert m["ai_energyConsumption"]["ai_trainingEnergyConsumption"]
        assert {e["key"] for e in m["ai_hyperparameter"]} >= {"args.epochs", "args.lr"}
    rels = [o for o in doc["@graph"] if o["type"] == "Relationship"]
    trained = {t for r in rels if r["relationshipType"] == "trainedOn" for t in r["to"]}
    tested = {t for r in rels if r["relationshipType"] == "testedOn" for t in r["to"]}
    names = {graph[t]["name"] for t in trained if t in graph}
    assert "digits-train" in names and "digits-test" not in names
    assert "digits-test" in {graph[t]["name"] for t in tested if t in graph}
    licences = {graph[r["to"][0]]["simplelicensing_licenseExpression"] for r in rels
                if r["relationshipType"] == "hasDeclaredLicense"}
    assert "CC-BY-4.0" in licences


# -- OpenLineage ---------------------------------------------------------------------------------------------------

def test_openlineage_events_of_the_run_are_valid_with_inputs_outputs_and_governance(mnist: Path, tmp_path: Path):
    out = tmp_path / "events.jsonl"
    r = export(mnist, "openlineage", out)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    for e in events:
        openlineage.validate(e)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    end = events[1]
    facet = end["run"]["facets"]["prov4torch_run"]
    assert facet["status"] == "FINISHED" and facet["ranks"] == 2 and facet["computeRegion"] == "eu-west-1"
    assert all(d["verdict"] == "allow" for d in facet["decisions"])
    entities = prov_entities(mnist)
    inputs = {i["name"]: i for i in end["inputs"]}
    train = next(i for i in inputs.values() if "training" in i["facets"]["prov4torch_governance"]["roles"])
    ent = entities["p4t:" + train["name"]]
    assert train["facets"]["version"]["datasetVersion"] == f"sha256:{ent['p4t:sha256']}"
    gov = train["facets"]["prov4torch_governance"]
    assert gov["license"] == ent["p4t:license"] and gov["personalData"] is False
    assert sorted(gov["consentScope"]) == sorted(ent["p4t:consentScope"])
    assert end["outputs"] and all(o["name"].startswith("model/") for o in end["outputs"])


def test_an_invalid_event_or_facet_is_refused():
    good = openlineage.start_event("01a24b7c-0c5e-7df1-a267-bce09ab252c6", "e", "r", "2026-01-01T00:00:00+00:00")
    openlineage.validate(good)
    with pytest.raises(ConfigError, match="runId"):
        openlineage.validate({**good, "run": {"facets": {}}})
    bad_facet = json.loads(json.dumps(good))
    bad_facet["run"]["facets"]["processing_engine"].pop("version")
    with pytest.raises(ConfigError, match="processing_engine"):
        openlineage.validate(bad_facet)
    gov = json.loads(json.dumps(good))
    gov["inputs"] = [{"namespace": "prov4torch", "name": "dataset/x", "facets": {"prov4torch_governance":
                      openlineage.facet("prov4torch_governance", {"kind": "dataset", "personalData": "yes"})}}]
    with pytest.raises(ConfigError, match="prov4torch_governance"):
        openlineage.validate(gov)


# -- live ------------------------------------------------------------------------------------------------------------

class Endpoint:
    """A local OpenLineage endpoint: ``ok`` records what it gets, ``slow`` answers after a delay, ``hostile``
    answers 500 with an endless body, ``dead`` accepts connections and never answers."""

    def __init__(self, mode: str, delay: float = 1.5) -> None:
        self.mode, self.delay = mode, delay
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.mode == "dead":
                    time.sleep(30)
                    return
                if outer.mode == "slow":
                    time.sleep(outer.delay)
                if outer.mode == "hostile":
                    self.send_response(500)
                    self.send_header("Content-Length", str(1 << 30))
                    self.end_headers()
                    try:
                        for _ in range(1 << 14):
                            self.wfile.write(b"x" * 65536)
                    except OSError:
                        return
                    return
                outer.received.append({"path": self.path, "event": json.loads(body)})
                self.send_response(201)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    e = Endpoint(request.param)
    yield e
    e.close()


TRAIN = """
import time, torch
torch.manual_seed(0)
t0 = time.monotonic()
m = torch.nn.Linear(2, 1); o = torch.optim.SGD(m.parameters(), lr=0.1)
ds = torch.utils.data.TensorDataset(torch.arange(32.).reshape(16, 2) / 32, torch.ones(16, 1))
for x, y in torch.utils.data.DataLoader(ds, batch_size=4):
    o.zero_grad(); ((m(x) - y) ** 2).mean().backward(); o.step()
torch.save(m.state_dict(), "m.pt")
print(f"trained in {time.monotonic() - t0:.3f} s; loss {((m(x) - y) ** 2).mean().item():.6f}")
"""


@pytest.mark.parametrize("endpoint", ["ok", "slow", "dead", "hostile"], indirect=True)
def test_live_events_never_slow_or_fail_training_and_are_always_on_disk(endpoint: Endpoint, tmp_path: Path):
    (tmp_path / "train.py").write_text(TRAIN)
    plain = subprocess.run([sys.executable, "train.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    t = time.monotonic()
    r = cli(tmp_path, "run", "--out", "runs", "--openlineage", endpoint.url, "train.py", timeout=120)
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("; loss")[1] == plain.stdout.split("; loss")[1]  # the same computation
    trained_in = float(r.stdout.split("trained in ")[1].split(" s")[0])
    if endpoint.mode == "dead":  # a POST sent in the script's path would hold it for the whole timeout
        assert trained_in < TIMEOUT_S, trained_in
    (run_dir,) = (tmp_path / "runs").glob("*/*/")
    on_disk = [json.loads(line) for line in (run_dir / "openlineage.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in on_disk] == ["START", "COMPLETE"]
    assert on_disk[0]["run"]["runId"] == on_disk[1]["run"]["runId"] == str(
        __import__("uuid").UUID(run_dir.name))
    if endpoint.mode in ("ok", "slow"):
        assert [x["event"]["eventType"] for x in endpoint.received] == ["START", "COMPLETE"]
        assert endpoint.received[0]["path"] == "/api/v1/lineage"
        assert "2 event(s) delivered" in r.stderr
    else:
        assert "0 of 2 event(s) delivered" in r.stderr or "1 of 2" in r.stderr
        assert took < 40  # a POST times out after 5 s; the end waits at most 10 s more


def test_a_bad_openlineage_url_is_a_usage_error(tmp_path: Path):
    (tmp_path / "train.py").write_text("print('ran')\n")
    r = cli(tmp_path, "run", "--openlineage", "ftp://nowhere", "train.py")
    assert r.returncode == 2 and "http(s) URL" in r.stderr and "ran" not in r.stdout


def test_a_closed_port_is_a_note_not_an_error(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "train.py").write_text(TRAIN)
    r = cli(tmp_path, "run", "--out", "runs", "train.py", env={"OPENLINEAGE_URL": f"http://127.0.0.1:{port}"})
    assert r.returncode == 0 and "0 of 2 event(s) delivered" in r.stderr and "Refused" in r.stderr, r.stderr


# -- the Annex IV pack ---------------------------------------------------------------------------------------------

def test_the_annex_iv_pack_holds_the_evidence_maps_each_item_and_names_what_it_cannot(mnist: Path, tmp_path: Path):
    out = tmp_path / "pack"
    r = export(mnist, "annex-iv", out)
    assert r.returncode == 0, r.stderr
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"index.md", "SHA256SUMS", "report.html", "bom.cdx.json", "sbom.spdx.json", "openlineage.jsonl",
            "decisions.json", "prov/mnist-ddp-run.prov.json"} <= names
    assert any(n.startswith("logs/") and n.endswith(".metrics.csv") for n in names)
    assert any(n.startswith("policies/") and n.endswith("policy.toml") for n in names)  # digest matched
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == names - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    index = (out / "index.md").read_text()
    assert "| IV 2(d) |" in index and "| XI 2(e) |" in index
    assert "Not evidenced by this pack: IV 2(e), IV 3, IV 7, IV 8, IV 9" in index
    assert "no attestation" in index  # this run was not signed, and the pack says so
    decisions = json.loads((out / "decisions.json").read_text())
    assert decisions and all(d["verdict"] == "allow" for d in decisions)
    zipped = tmp_path / "pack.zip"
    assert export(mnist, "annex-iv", zipped).returncode == 0
    import zipfile

    with zipfile.ZipFile(zipped) as z:
        assert set(z.namelist()) == names
    again = export(mnist, "annex-iv", out)  # the directory exists: refused, left as it was
    assert again.returncode == 2 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == names


@pytest.mark.foreign_prov
def test_a_failed_pack_leaves_nothing(tmp_path: Path):
    (tmp_path / "bad.prov.json").write_text("{not json")
    r = export(tmp_path / "bad.prov.json", "annex-iv", tmp_path / "pack")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "pack").exists() and not list(tmp_path.glob(".pack*"))


def test_the_fast_spdx_check_agrees_with_the_official_schema(mnist: Path, tmp_path: Path):
    """spdx.validate checks each element against its own class with a short-circuited copy of the schema (for
    speed); on a real document and on broken variants it must say what the unmodified schema says."""
    import copy

    import jsonschema

    out = tmp_path / "s.json"
    assert export(mnist, "spdx", out).returncode == 0
    doc = json.loads(out.read_text())
    official = jsonschema.Draft202012Validator(spdx.schema())

    def first(kind: str, d: dict[str, Any]) -> dict[str, Any]:
        return next(o for o in d["@graph"] if o["type"] == kind)

    variants = {"as written": lambda d: None,
                "a size that is text": lambda d: first("dataset_DatasetPackage", d).update(dataset_datasetSize="big"),
                "an unknown property": lambda d: first("ai_AIPackage", d).update(colour="red"),
                "an energy in exponent form": lambda d: first("ai_AIPackage", d)["ai_energyConsumption"][
                    "ai_trainingEnergyConsumption"][0].update(ai_energyQuantity="1e-05"),
                "a relationship to a number": lambda d: first("Relationship", d).update(to=[5]),
                "no spdxId": lambda d: first("Annotation", d).pop("spdxId", None)
                if any(o["type"] == "Annotation" for o in d["@graph"]) else first("Relationship", d).pop("spdxId")}
    for name, mutate in variants.items():
        d = copy.deepcopy(doc)
        mutate(d)
        want = official.is_valid(d)
        try:
            spdx.validate(d)
            got = True
        except ConfigError:
            got = False
        assert got == want, name
        assert want == (name == "as written"), name


def test_cyclonedx_and_prov_o_of_the_merged_two_rank_run(mnist: Path, tmp_path: Path):
    import rdflib
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bom = tmp_path / "bom.json"
    assert export(mnist, "cyclonedx", bom).returncode == 0
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom.read_text()) is None
    models = [c for c in json.loads(bom.read_text())["components"] if c["type"] == "machine-learning-model"]
    entities = prov_entities(mnist)
    for m in models:
        weights = next(p["value"] for p in m["properties"] if p["name"] == "prov4torch:weightsSha256")
        assert weights == entities[m["bom-ref"].removeprefix("model:")]["p4t:weightsSha256"]
    trig, ttl = tmp_path / "p.trig", tmp_path / "p.ttl"
    assert export(mnist, "prov-o", trig).returncode == 0 and export(mnist, "prov-o-turtle", ttl).returncode == 0
    import warnings

    from rdflib.compare import isomorphic

    with warnings.catch_warnings():  # rdflib's Dataset warns about its own internals
        warnings.simplefilter("ignore", DeprecationWarning)
        quads = rdflib.Dataset()
        quads.parse(data=trig.read_text(), format="trig")
        all_quads = list(quads.quads((None, None, None, None)))
    flat, merged = rdflib.Graph(), rdflib.Graph()
    flat.parse(data=ttl.read_text(), format="turtle")
    for s, p, o, _g in all_quads:
        merged.add((s, p, o))
    assert len({g for *_, g in all_quads}) >= 3  # the default graph and the two ranks' bundles
    assert len(flat) > 100 and isomorphic(merged, flat)
