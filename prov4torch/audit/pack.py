"""``prov4torch export --format annex-iv``: what an auditor takes away -- a directory (or a ``.zip``) holding the
HTML report, the CycloneDX and SPDX BOMs, the OpenLineage events, the PROV documents, the metrics logs, the
attestations, the policies the runs applied (when the file the run names is still there with the digest it
recorded) and every decision taken, a ``SHA256SUMS`` of all of it, and an ``index.md`` that maps each item of
the EU AI Act's Annex IV (technical documentation) and Annex XI (general-purpose models) this record can
evidence to the file and field that does -- and says plainly which items it cannot.

Built in a temporary directory beside the target and renamed into place: a failure leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigError
from ..provjson import MLS_NAMESPACE, NAMESPACE
from ..safefs import check_output
from .graph import PROV, Graph
from .load import expand_dirs, load_graph, no_cycle_collection
from .text import clean

# (item, what it asks, what evidences it here -- or None: not evidenced by a training record)
ANNEX_IV: list[tuple[str, str, str | None]] = [
    ("IV 1(a)", "intended purpose, provider, version",
     "partly: the purpose and intended use each run declared (`prov4torch_run.purpose`, `p4t:intendedUse` in "
     "prov/, report.html); the provider's own statement of purpose is not a training record"),
    ("IV 1(c)", "versions of relevant software", "prov/ (`p4t:Environment`: Python, torch, CUDA; `p4t:Code`: git "
     "commit, script sha256), logs/*.packages.txt (every installed package)"),
    ("IV 1(e)", "hardware the system was developed on", "prov/ (`p4t:Environment`: CPU, GPUs, memory), report.html"),
    ("IV 2(a)", "methods and steps of development, pre-trained systems and tools used",
     "prov/ (command line, code, base models as `p4t:baseModel` uses and `wasDerivedFrom`), report.html lineage"),
    ("IV 2(b)", "design specifications, key choices, what is optimised",
     "partly: hyperparameters and optimizer settings (prov/ `mls:HyperParameterSetting`, sbom.spdx.json "
     "`ai_hyperparameter`); the rationale behind them is not recorded"),
    ("IV 2(c)", "computational resources used to develop, train, test and validate",
     "prov/ (hardware, duration, `p4t:optimizerSteps`, GPU and memory peaks), energy and CO2 "
     "(`p4t:energyKWh`, `p4t:emissionsKgCO2eq`, `p4t:energyMethod`), bom.cdx.json `environmentalConsiderations`"),
    ("IV 2(d)", "training data: provenance, scope, main characteristics, how obtained and selected",
     "datasets by content digest with origin, jurisdiction, licence, consent, personal data, size and role "
     "(prov/, bom.cdx.json, sbom.spdx.json, openlineage.jsonl `prov4torch_governance`); labelling and cleaning "
     "procedures are not recorded"),
    ("IV 2(e)", "human oversight measures", None),
    ("IV 2(g)", "validation and testing: data, metrics, dated and signed test logs",
     "validation/testing datasets and their roles, metric series (logs/*.metrics.csv, their digests in prov/), "
     "dated records; signed when attestations/ holds a run's attestation (check: prov4torch verify)"),
    ("IV 2(h)", "cybersecurity measures", "partly: integrity of the record itself (SHA256SUMS, attestations/); "
     "the system's own security measures are not a training record"),
    ("IV 3", "capabilities, limitations, foreseeable unintended outcomes", None),
    ("IV 4", "appropriateness of the performance metrics", "partly: which metrics were recorded (report.html); "
     "their appropriateness is a judgement, not a record"),
    ("IV 5", "risk management system", "partly: the data-use policies applied and every decision they took "
     "(policies/, decisions.json), uses prevented at runtime"),
    ("IV 6", "changes through the lifecycle", "model revision chains and fine-tunes (`prov:Revision`, "
     "`wasDerivedFrom` in prov/; SPDX `descendantOf`)"),
    ("IV 7", "harmonised standards applied", None),
    ("IV 8", "EU declaration of conformity", None),
    ("IV 9", "post-market monitoring", None),
    ("XI 1(d)", "architecture and number of parameters", "partly: the checkpoints' weights digests and files "
     "(prov/); the architecture description and parameter count are not recorded"),
    ("XI 1(f)", "licence", "the licence each model inherits from its data (`p4t:license` on models; SPDX "
     "`hasDeclaredLicense`)"),
    ("XI 2(c)", "data for training, testing, validation: type, provenance, curation, number of data points",
     "as IV 2(d), with samples and batches per dataset and role (`p4t:samples`, `p4t:batches`, `p4t:reads`)"),
    ("XI 2(d)", "computational resources: training time, hardware, FLOPs",
     "partly: training time, hardware and optimizer steps (prov/); floating point operations are not counted"),
    ("XI 2(e)", "known or estimated energy consumption", "`p4t:energyKWh` per run with its method "
     "(`p4t:energyMethod`, `p4t:energyFallback` when estimated) in prov/, bom.cdx.json, sbom.spdx.json"),
]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _label(path: Path) -> str:
    """A file name for a run's file in the pack: <experiment>-<run dir>-<name>, or the name alone."""
    parts = [p for p in (path.parent.parent.name, path.parent.name) if p]
    return "-".join([*parts, path.name]) if path.name.startswith(("rank-", "run.")) else path.name


def decisions(graph: Graph) -> list[dict[str, Any]]:
    out = []
    for node in graph.of_type([NAMESPACE + "PolicyDecision"]):
        row: dict[str, Any] = {"decision": graph.short(node.id)}
        for local in ("verdict", "mode", "rule", "reason", "trigger", "checkedRole", "offendingDataset",
                      "checkedDataset"):
            vals = node.values(NAMESPACE + local)
            if vals:
                row[local] = [clean(v, 2000) for v in vals] if len(vals) > 1 else clean(vals[0], 2000)
        out.append(row)
    return sorted(out, key=lambda r: str(r["decision"]))


def policies(graph: Graph, files: list[Path], dest: Path) -> list[str]:
    """Copy each policy file a run names (``used`` with role policy and a ``p4t:path``) whose bytes still have the
    digest the run recorded; one line per policy saying what was done."""
    lines = []
    for e in graph.edges:
        if e.relation != "used" or not any(str(r).endswith("policy") for r in e.attrs.get(PROV + "role", [])):
            continue
        node = graph.nodes.get(e.up)
        recorded = node.values(NAMESPACE + "sha256") if node is not None else []
        want = str(recorded[0]) if recorded else ""
        for raw in e.attrs.get(NAMESPACE + "path", []):
            name = clean(raw, 300)
            candidates = [Path(str(raw))] + [f.parent / str(raw) for f in files]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                lines.append(f"{name}: not found here (the run recorded sha256 {want[:16]}...)")
            elif hashlib.sha256(found.read_bytes()).hexdigest() != want:
                lines.append(f"{name}: the file here has changed since the run (not its sha256 {want[:16]}...)")
            else:
                _copy(found, dest / f"{want[:16]}-{found.name}")
                lines.append(f"{name}: policies/{want[:16]}-{found.name}")
    return sorted(set(lines))


def index(graph: Graph, manifest: dict[str, str], notes: list[str]) -> str:
    runs = graph.of_type([MLS_NAMESPACE + "Run"])
    datasets = graph.of_type([MLS_NAMESPACE + "Dataset"])
    models = graph.of_type([MLS_NAMESPACE + "Model"])
    rows = "\n".join(f"| {item} | {asks} | {evidence or '**not evidenced**: not something a training record holds'} |"
                     for item, asks, evidence in ANNEX_IV)
    files = "\n".join(f"- `{name}`" for name in sorted(manifest))
    gaps = [item for item, _a, ev in ANNEX_IV if ev is None]
    return f"""# Technical documentation evidence (EU AI Act Annex IV / Annex XI)

Made by prov4torch {__version__} from {len(runs)} run record(s), {len(datasets)} dataset(s), {len(models)} model(s).
Every file below is listed with its SHA-256 in `SHA256SUMS` (check: `sha256sum -c SHA256SUMS`).
Open `report.html` first: it opens offline and shows each run, its data, decisions and signatures.

## What each item is evidenced by

| item | what it asks | evidenced here by |
|---|---|---|
{rows}

Not evidenced by this pack: {', '.join(gaps)}. They are the provider's statements and processes, not records of
training; the pack says so rather than leaving them out silently.

## Notes

{chr(10).join(f"- {n}" for n in notes) or "- none"}

## Files

{files}
"""


def write_pack(paths: Iterable[str | Path], out: str | Path, keys: list[Any] | None = None) -> Path:
    """Write the pack of ``paths`` to ``out`` (a directory that does not exist yet, or a ``.zip``)."""
    target = Path(out)
    as_zip = target.suffix.lower() == ".zip"
    check_output(target if as_zip else target / "index.md")
    if not as_zip and target.exists():
        raise ConfigError(f"{target} exists: give a new directory (or a .zip) for the pack")
    files = list(expand_dirs(paths))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        root = Path(tmp) / "pack"
        root.mkdir()
        with no_cycle_collection():  # one graph serves every export in the pack and its index
            graph = load_graph(files)
            notes = _fill(root, files, graph, keys)
            manifest = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(root.rglob("*")) if p.is_file()}
            (root / "index.md").write_text(index(graph, manifest, notes), encoding="utf-8")
            del graph
        manifest["index.md"] = hashlib.sha256((root / "index.md").read_bytes()).hexdigest()
        (root / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sorted(manifest.items())),
                                         encoding="utf-8")
        if as_zip:
            staged = Path(tmp) / "pack.zip"
            with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as z:
                for p in sorted(root.rglob("*")):
                    if p.is_file():
                        z.write(p, p.relative_to(root).as_posix())
            os.replace(staged, target)
        else:
            os.rename(root, target)
    return target


def _fill(root: Path, files: list[Path], graph: Graph, keys: list[Any] | None) -> list[str]:
    """Everything but the index and the sums; notes on what could not be included."""
    from ..evidence.attest import ATTESTATION
    from .export import cyclonedx
    from .openlineage import events
    from .sections import write_report
    from .spdx import spdx3

    notes: list[str] = []
    for f in files:
        _copy(f, root / "prov" / _label(f))
    run_dirs = sorted({f.parent for f in files})
    for d in run_dirs:
        for extra in sorted(d.glob("rank-*.metrics.csv")) + sorted(d.glob("rank-*.packages.txt")):
            _copy(extra, root / "logs" / _label(extra))
        if (d / ATTESTATION).is_file():
            _copy(d / ATTESTATION, root / "attestations" / f"{d.parent.name}-{d.name}.intoto.jsonl")
        else:
            notes.append(f"{clean(d, 300)}: no attestation (the run was not signed: prov4torch keys init)")
    (root / "bom.cdx.json").write_text(json.dumps(cyclonedx(graph), indent=1, sort_keys=True), encoding="utf-8")
    (root / "sbom.spdx.json").write_text(json.dumps(spdx3(graph), indent=1, sort_keys=True), encoding="utf-8")
    (root / "openlineage.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events(graph)),
                                            encoding="utf-8")
    (root / "decisions.json").write_text(json.dumps(decisions(graph), indent=1), encoding="utf-8")
    notes += policies(graph, files, root / "policies")
    if keys is None:
        from ..evidence.keys import trusted_keys

        keys = trusted_keys()
    write_report(files, root / "report.html", keys=keys)
    return notes
