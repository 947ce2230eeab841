"""What a report shows, read from PROV-JSON and the files beside it: runs, their parameters, metric series (exact
values from the metrics sidecar, checked against the digest the run recorded), datasets with roles, counts and
tags, checkpoints, policy decisions, energy, signatures and warnings. ``audit.page`` turns it into HTML.

Every string taken from a document is cleaned here (``text.clean``) and escaped where it is written; nothing a
document says is trusted to be markup.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Prov4TorchError
from ..provjson import MLS_NAMESPACE, NAMESPACE, PARAM_NAMESPACE, expand_qname
from ..safefs import read_regular
from .graph import PROV, TYPE, Edge, Graph, Node
from .load import expand_dirs, load_graph, no_cycle_collection
from .query import kind_of
from .render import Judge
from .text import clean

P = NAMESPACE
RUN = MLS_NAMESPACE + "Run"
SERIES = P + "MetricSeries"
METRICS_CAP = 1 << 30  # a metrics sidecar larger than this is not read (its PROV summary is shown)
ENERGY = ("energyKWh", "cpuEnergyKWh", "gpuEnergyKWh", "ramEnergyKWh", "emissionsKgCO2eq", "energyCountry",
          "energyMethod", "energyTrackingMode", "energyTool", "energyFallbackReason")
SYSTEM = ("peakRssBytes", "processCpuPercentMean", "systemMemoryPeakBytes", "gpuUtilizationMean",
          "gpuUtilizationPeak", "gpuMemoryPeakBytes", "gpuSamplerOff", "sampleIntervalSeconds")
ENVIRONMENT = ("python", "torchVersion", "cudaVersion", "hostname", "platform", "cpuModel", "cpuCount",
               "memoryTotalBytes", "gpuCount", "gpuModel", "gpuDriver", "gitCommit", "gitBranch", "gitDirty")
TAGS = ("datasetId", "originCountry", "jurisdiction", "regulation", "personalData", "consentScope",
        "consentExpires", "prohibitedPurpose", "purposeLimit", "license", "transferBasis", "intendedUse",
        "sourceDataset")
DATASET_FLAGS = ("tagConflict", "lineageConflict", "lineageError", "unidentifiedReason", "lineageSource")
MODEL_FLAGS = ("lineageGap", "tagConflict", "lineageConflict", "lineageError", "lineageSource", "lineageVerified")


SUMMARY = ("count", "first", "last", "min", "max", "lastStep")  # a series' summary attributes, in ``Series.stats``
_NO_POINTS: tuple[Any, ...] = ()


@dataclass(slots=True)
class Series:
    """One metric series of one rank: the exact values when the sidecar was read, else only the summary. Small: a
    store holds millions (its summary a tuple in ``SUMMARY`` order, None where absent; its lists made when the
    sidecar gives it points)."""

    name: str
    context: str
    rank: str
    steps: list[int] | tuple[int, ...] = _NO_POINTS
    values: list[float] | tuple[float, ...] = _NO_POINTS
    stats: tuple[Any, ...] | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in zip(SUMMARY, self.stats or (), strict=False) if v is not None}

    def add(self, step: int, value: float) -> None:
        if type(self.steps) is tuple:
            self.steps, self.values = [], []
        self.steps.append(step)  # type: ignore[union-attr]
        self.values.append(value)  # type: ignore[union-attr]

    @property
    def key(self) -> tuple[str, str]:
        return self.context, self.name


@dataclass
class DataUse:
    id: str
    name: str
    identity: str
    digest: str
    roles: set[str] = field(default_factory=set)
    batches: int = 0
    samples: int = 0
    reads: int = 0
    tags: dict[str, list[str]] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Checkpoint:
    id: str
    name: str
    path: str
    sha256: str
    weights: str
    version: str
    revision_of: str
    flags: dict[str, list[str]] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)
    signature: str = ""  # its signed lineage card, verified against the bytes on disk (or why not)


@dataclass
class Decision:
    verdict: str
    mode: str
    rule: str
    reason: str
    trigger: str
    role: str
    datasets: list[str]
    time: str


@dataclass
class RunReport:
    """Everything one run's section shows."""

    run_id: str
    experiment: str
    name: str
    status: str
    start: str
    end: str
    ranks: list[str]
    command: str
    directory: Path | None
    fields: dict[str, str] = field(default_factory=dict)  # region, purpose, host, exit code, ...
    params: dict[str, str] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)
    data: list[DataUse] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)  # an after-the-fact check (--policy)
    energy: dict[str, str] = field(default_factory=dict)
    system: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evidence: list[tuple[bool, str]] = field(default_factory=list)  # (verified, what) from the attestation
    graph_svg: bytes | None = None
    graph_note: str = ""
    files: list[str] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)  # the ids a violation may name: activities, data, models

    @property
    def duration_s(self) -> float | None:
        from datetime import datetime

        try:
            return (datetime.fromisoformat(self.end) - datetime.fromisoformat(self.start)).total_seconds()
        except (TypeError, ValueError):
            return None

    @property
    def verdict(self) -> str:
        """BLOCKED when an enforced policy stopped a use; DENY when the after-the-fact check found a violation;
        ALLOW when a policy was applied and allowed everything; else 'not checked'."""
        if any(d.verdict == "deny" and d.mode == "enforce" for d in self.decisions):
            return "BLOCKED"
        if self.violations or any(d.verdict == "deny" for d in self.decisions):
            return "DENY"
        return "ALLOW" if self.decisions or self.fields.get("checked") else "not checked"

    def final_metrics(self, limit: int = 4) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in sorted(self.series, key=lambda s: (s.context == "system", s.context, s.name, s.rank)):
            label = f"{s.context}/{s.name}"
            last = s.values[-1] if s.values else s.summary.get("last")
            if label not in out and last is not None and s.context != "system":
                out[label] = fmt_number(last)
            if len(out) >= limit:
                break
        return out


def fmt_number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return clean(v, 200)


def _one(node: Node, local: str, limit: int = 2000) -> str:
    vals = node.values(P + local)
    return ", ".join(clean(v, limit) for v in vals) if vals else ""


def _local(value: Any) -> str:
    """A QName or IRI's last segment (p4t:training -> training)."""
    text = str(value)
    return clean(re.split(r"[#:/]", text)[-1] or text, 100)


def _scalar(v: Any) -> Any:
    """One value of a flat attribute (the first, when there are several)."""
    return (v[0] if v else "") if type(v) is tuple else v


def _fields(node: Node, names: Iterable[str]) -> dict[str, str]:
    return {n: _one(node, n) for n in names if node.values(P + n)}


def _multi(node: Node, names: Iterable[str]) -> dict[str, list[str]]:
    return {n: [clean(v, 500) for v in node.values(P + n)] for n in names if node.values(P + n)}


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


class Collector:
    """Reads one group of files (a run directory, or one document) into ``RunReport``s."""

    def __init__(self, graph: Graph, files: list[str]) -> None:
        self.graph = graph
        self.files = files
        # activity -> its edges (the graph's own objects: a store has millions, a tuple each would add ~100 MB)
        self.used: dict[str, list[Edge]] = {}
        self.generated: dict[str, list[Edge]] = {}
        self.informed: dict[str, list[str]] = {}  # activity -> activities it informed
        self.tags: dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]] = {}
        for e in graph.edges:
            if e.relation == "used":
                self.used.setdefault(e.down, []).append(e)
            elif e.relation == "wasGeneratedBy":
                self.generated.setdefault(e.up, []).append(e)
            elif e.relation == "wasInformedBy":
                self.informed.setdefault(e.up, []).append(e.down)

    def runs(self) -> list[RunReport]:
        by_id: dict[str, list[Node]] = {}
        for node in self.graph.of_type([RUN]):
            rid = _one(node, "runId", 200) or self.graph.short(node.id)
            by_id.setdefault(rid, []).append(node)
        return [self.run(rid, sorted(acts, key=lambda a: _int(_one(a, "rank")))) for rid, acts in by_id.items()]

    def run(self, rid: str, acts: list[Node]) -> RunReport:
        first = acts[0]
        g = self.graph
        starts = [clean(v, 64) for a in acts for v in a.values(PROV + "startTime")]
        ends = [clean(v, 64) for a in acts for v in a.values(PROV + "endTime")]
        statuses = sorted({_one(a, "status", 50) for a in acts} - {""})
        r = RunReport(
            run_id=clean(rid, 200), experiment=_one(first, "experiment", 200),
            name=_one(first, "runName", 200) or clean(g.name(first) or "", 200),
            status="/".join(statuses) or "unknown", start=min(starts, default=""), end=max(ends, default=""),
            ranks=[_one(a, "rank", 20) or "0" for a in acts], command=_one(first, "commandLine", 4000),
            directory=_directory(acts), files=sorted({s for a in acts for s in a.sources}))
        r.fields = {k: v for a in acts for k, v in _fields(a, (
            "host", "computeRegion", "purpose", "intendedUse", "exitCode", "signal", "exceptionType",
            "exceptionMessage", "policyMode", "optimizerSteps", "worldSize", "torchSeed")).items()}
        r.energy = {k: v for a in acts for k, v in _fields(a, ENERGY).items()}
        r.system = {k: v for a in acts for k, v in _fields(a, SYSTEM).items()}
        for a in acts:
            r.subjects.add(g.short(a.id))
            self._inputs(r, a)
            self._outputs(r, a)
            r.decisions += self._decisions(a)
        r.data.sort(key=lambda d: (d.name, d.id))
        self._warnings(r)
        return r

    def _inputs(self, r: RunReport, act: Node) -> None:
        g = self.graph
        known = {d.id: d for d in r.data}
        for ent, attrs in ((e.up, e.attrs) for e in self.used.get(act.id, [])):
            node = g.nodes.get(ent)
            if node is None:
                continue
            roles = {_local(v) for v in attrs.get(PROV + "role", [])}
            types = node.types()
            if MLS_NAMESPACE + "HyperParameterSetting" in types:
                r.params.update({clean(k[len(PARAM_NAMESPACE):], 300): ", ".join(clean(v, 1000) for v in vals)
                                 for k, vals in node.attrs.items() if k.startswith(PARAM_NAMESPACE)})
            elif P + "Environment" in types or P + "Code" in types:
                r.environment.update(_fields(node, ENVIRONMENT))
                r.environment.update({k[len(P):]: ", ".join(clean(v, 500) for v in vals) for k, vals in attrs.items()
                                      if k in (P + "script", P + "scriptSha256")})
            elif P + "Policy" in types:
                r.fields["checked"] = f"{clean(g.name(node) or g.short(ent), 200)} (sha256 {_one(node, 'sha256')[:16]})"
            elif kind_of(node) in ("dataset", "model") or roles & {"training", "validation", "testing", "input"}:
                short = g.short(ent)
                use = known.get(short)
                if use is None:
                    use = known[short] = DataUse(short, clean(g.name(node) or "", 300), _one(node, "identity"),
                                                 _one(node, "sha256") or _one(node, "weightsSha256"))
                    if ent not in self.tags:  # a dataset many runs used is read once
                        self.tags[ent] = _multi(node, TAGS), _multi(node, DATASET_FLAGS)
                    use.tags, use.flags = self.tags[ent]
                    r.data.append(use)
                    r.subjects.add(short)
                use.roles |= roles
                use.batches += sum(_int(v) for v in attrs.get(P + "batches", []))
                use.samples += sum(_int(v) for v in attrs.get(P + "samples", []))
                use.reads += sum(_int(v) for v in attrs.get(P + "reads", []))

    def _outputs(self, r: RunReport, act: Node) -> None:
        g = self.graph
        rank = _one(act, "rank", 20) or "0"
        for ent, attrs in ((e.down, e.attrs) for e in self.generated.get(act.id, [])):
            node = g.nodes.get(ent)
            if node is None:
                continue
            flat = node.flat
            given = dict(zip(flat[::2], flat[1::2], strict=True))  # one pass: thousands of series per document
            if given.get(TYPE) == SERIES or (type(given.get(TYPE)) is tuple and SERIES in given[TYPE]):
                stats = tuple(_scalar(given[P + k]) if P + k in given else None for k in SUMMARY)
                name = given.get(P + "name", given.get(PROV + "label", g.names.get(ent, node.label)))
                r.series.append(Series(clean(_scalar(name), 300),
                                       clean(_scalar(given.get(P + "context", "")), 100), rank, stats=stats))
            elif kind_of(node) == "model":
                def a(local: str, attrs: dict[str, list[Any]] = attrs) -> str:
                    return ", ".join(clean(v, 1000) for v in attrs.get(P + local, []))
                revision = [g.short(u) for u in g.up["wasDerivedFrom"].get(ent, ()) if kind_of(g.nodes[u]) == "model"]
                r.checkpoints.append(Checkpoint(
                    g.short(ent), a("name") or clean(g.name(node) or "", 300), a("path"), a("sha256"),
                    _one(node, "weightsSha256"), a("version") or _one(node, "version"), ", ".join(revision),
                    _multi(node, MODEL_FLAGS), _multi(node, TAGS)))
                r.subjects.add(g.short(ent))

    def _decisions(self, act: Node) -> list[Decision]:
        g = self.graph
        out = []
        for check in self.informed.get(act.id, []):
            for ent in (e.down for e in self.generated.get(check, [])):
                node = g.nodes.get(ent)
                if node is None or P + "PolicyDecision" not in node.types():
                    continue
                datasets = [clean(_named(g, str(d)), 300) for d in
                            node.values(P + "offendingDataset") or node.values(P + "checkedDataset")]
                out.append(Decision(_one(node, "verdict", 20).lower(), _one(node, "mode", 20).lower(),
                                    _one(node, "rule", 300), _one(node, "reason", 2000), _one(node, "trigger", 100),
                                    ", ".join(_local(v) for v in node.values(P + "checkedRole")), datasets,
                                    clean(next(iter(g.nodes[check].values(PROV + "startTime")), ""), 64)))
        return out

    def _warnings(self, r: RunReport) -> None:
        w = r.warnings
        if r.status not in ("FINISHED", "unknown"):
            w.append(f"run status {r.status}" + (f": {r.fields['exceptionType']}" if r.fields.get("exceptionType")
                                                 else ""))
        for c in r.checkpoints:
            if any(v.lower() == "true" for v in c.flags.get("lineageGap", [])):
                w.append(f"checkpoint {c.name or c.id} has no recorded training data (lineage gap)")
            for flag in ("tagConflict", "lineageConflict", "lineageError"):
                w += [f"checkpoint {c.name or c.id}: {flag}: {v}" for v in c.flags.get(flag, [])]
        for d in r.data:
            if d.identity == "unidentified":
                w.append(f"dataset {d.name or d.id} is unidentified: "
                         f"{', '.join(d.flags.get('unidentifiedReason', [])) or 'no content digest'}")
            for flag in ("tagConflict", "lineageConflict", "lineageError"):
                w += [f"dataset {d.name or d.id}: {flag}: {v}" for v in d.flags.get(flag, [])]
        if r.energy.get("energyFallbackReason"):
            w.append(f"energy estimated: {r.energy['energyFallbackReason']}")
        if r.system.get("gpuSamplerOff"):
            w.append(f"GPU not sampled: {r.system['gpuSamplerOff']}")


def _named(g: Graph, iri: str) -> str:
    """``name (id)`` where a run named the data (a blocked dataset is named by the check that read it)."""
    node = g.nodes.get(iri) or g.nodes.get(expand_qname(iri, g.prefixes) or "")
    name = g.name(node) if node is not None else None
    return f"{name} ({g.short(node.id)})" if node is not None and name else g.short(iri)


def _directory(acts: list[Node]) -> Path | None:
    """The run directory: where its files were read from (one directory for every rank), else none."""
    dirs = {Path(s).parent for a in acts for s in a.sources}
    return dirs.pop() if len(dirs) == 1 else None


# -- metric sidecars ---------------------------------------------------------------------------------------------

def recorded_sidecars(graph: Graph) -> dict[str, str]:
    """file name -> the sha256 the run recorded for its metrics sidecar."""
    out = {}
    for node in graph.of_type([P + "SidecarFile"]):
        path, digest = _one(node, "path", 300), _one(node, "sha256", 80)
        if path and "/" not in path and "\\" not in path and digest:
            out[path] = digest
    return out


def read_metrics(r: RunReport, recorded: dict[str, str]) -> None:
    """The exact values of ``r``'s series from ``rank-N.metrics.csv`` beside its documents, when the file's digest
    is the one the run recorded (a file changed since is not plotted as the run's; a warning says so)."""
    if r.directory is None:
        return
    by_key = {(s.rank, s.context, s.name): s for s in r.series}
    for rank in r.ranks:
        name = f"rank-{rank}.metrics.csv"
        path = r.directory / name
        if not path.exists():
            continue
        try:
            data = read_regular(path, METRICS_CAP)
        except (OSError, Prov4TorchError) as exc:
            r.warnings.append(f"{name}: not read ({clean(exc, 300)}): metric summaries only")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if recorded.get(name) != digest:
            r.warnings.append(f"{name}: its sha256 {digest[:16]}... is not the one the run recorded "
                              f"({recorded.get(name, 'none')[:16]}...): changed after the run; not plotted")
            continue
        _parse_metrics(data, rank, by_key, r)


def _parse_metrics(data: bytes, rank: str, by_key: dict[tuple[str, str, str], Series], r: RunReport) -> None:
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")))
    header = next(reader, None)
    if header != ["name", "context", "step", "timestamp", "value"]:
        r.warnings.append(f"rank-{rank}.metrics.csv: not a prov4torch metrics file (header {clean(header, 200)})")
        return
    for row in reader:
        if len(row) != 5:
            continue
        s = by_key.get((rank, row[1], row[0]))
        if s is None:
            s = by_key[(rank, row[1], row[0])] = Series(clean(row[0], 300), clean(row[1], 100), rank)
            r.series.append(s)
        try:
            step, value = int(row[2]), float(row[4])
        except ValueError:
            continue
        s.add(step, value)


# -- the whole report ----------------------------------------------------------------------------------------------

def groups(paths: Iterable[str | Path]) -> list[list[str]]:
    """The files of each run directory together (a directory's rank files are one run), other files alone."""
    out: dict[str, list[str]] = {}
    for p in expand_dirs(paths):
        key = str(p.parent) if p.name.startswith("rank-") or p.name == "run.prov.json" else str(p)
        out.setdefault(key, []).append(str(p))
    return list(out.values())


def collect(paths: Iterable[str | Path], judge: Judge | None = None, policy_name: str = "",
            draw: Any = None) -> tuple[list[RunReport], dict[str, Any]]:
    """Every run in ``paths``, newest first, and facts about the input (files, counts). ``judge(graph)``: the
    violations of a policy (``governance.evaluate.judge``, so reading files never depends on the policy engine),
    checked on each group after the fact; ``draw(graph, run) -> (svg, note)`` draws a group's lineage."""
    runs: list[RunReport] = []
    info: dict[str, Any] = {"files": [], "nodes": 0, "relations": 0, "other": []}
    for files in groups(paths):
        with no_cycle_collection():
            graph = load_graph(files)
            info["files"] += files
            info["nodes"] += len(graph.nodes)
            info["relations"] += graph.relations
            found = Collector(graph, files).runs()
            violations = list(judge(graph)) if judge is not None else []
            recorded = recorded_sidecars(graph)
            for r in found:
                read_metrics(r, recorded)
                if judge is not None:
                    r.fields["checked"] = f"{policy_name} (after the fact)"
                    r.violations = [{"rule": v.rule, "subject": v.subject, "datasets": list(v.datasets),
                                     "attribute": v.attribute, "reason": v.reason}
                                    for v in violations if v.subject in r.subjects]
                if draw is not None and len(found) == 1:
                    r.graph_svg, r.graph_note = draw(graph, r)
                elif draw is not None:
                    r.graph_note = "not drawn: this document holds several runs (prov4torch render --focus draws one)"
            if not found:
                info["other"].append({"files": files, "nodes": len(graph.nodes), "relations": graph.relations,
                                      "violations": len(violations)})
            runs += found
            del graph
    runs.sort(key=lambda r: (r.start, r.run_id), reverse=True)
    return runs, info
