"""Audit graphs through Graphviz: datasets, runs, models and agents, with governance tags,
policy violations in red, and the repetitive parts summarised so large runs stay readable.

Summarised unless ``detail=True``: metric series, parameter/environment/sidecar/code entities
and policy-check bookkeeping fold into their run's label; the ranks of one job fold into one
node; an agent linked to many activities is drawn once, without an edge to each. The layout
engine is chosen by size (``dot`` for small graphs, ``sfdp`` for large ones) and run with a
timeout, falling back to ``sfdp`` (measured: ``dot`` needs 17 s on a 302-record graph with a
shared agent and does not finish 602 records in 300 s; ``sfdp`` takes 0.33 s).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.etree import ElementTree

from ..errors import InvalidValueError, MissingExtraError
from ..provjson import MLS_NAMESPACE, NAMESPACE
from ..safefs import check_output
from .graph import DEFAULT_LINEAGE, PROV, Graph, Node
from .load import load_graph, no_cycle_collection
from .query import kind_of, resolve
from .text import clean


class Finding(Protocol):
    """A policy violation as render draws it (``governance.policy.Violation`` is one)."""

    @property
    def rule(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def datasets(self) -> tuple[str, ...]: ...

    @property
    def attribute(self) -> str: ...

    @property
    def reason(self) -> str: ...


Judge = Callable[[Graph], Iterable[Finding]]

P = NAMESPACE
FOLDED_TYPES = {P + "MetricSeries", P + "SidecarFile", P + "Environment", P + "Code",
                MLS_NAMESPACE + "HyperParameterSetting", P + "PolicyCheck", P + "PolicyDecision", PROV + "Bundle",
                P + "Policy", P + "MergeConflicts", P + "DistributedJob"}
EDGES = {  # relation -> (from end, to end, label): arrows point from effect to cause, as in PROV
    "used": ("down", "up", "used"),
    "wasGeneratedBy": ("down", "up", "wasGeneratedBy"),
    "wasDerivedFrom": ("down", "up", "wasDerivedFrom"),
    "wasInformedBy": ("down", "up", "wasInformedBy"),
    "wasAssociatedWith": ("down", "up", "wasAssociatedWith"),
    "wasAttributedTo": ("down", "up", "wasAttributedTo"),
    "actedOnBehalfOf": ("down", "up", "actedOnBehalfOf"),
    "hadMember": ("down", "up", "hadMember"),
    "specializationOf": ("down", "up", "specializationOf"),
    "alternateOf": ("down", "up", "alternateOf"),
    "wasInfluencedBy": ("down", "up", "wasInfluencedBy"),
    "wasStartedBy": ("down", "up", "wasStartedBy"),
    "wasEndedBy": ("down", "up", "wasEndedBy"),
    "wasInvalidatedBy": ("down", "up", "wasInvalidatedBy"),
}
STYLE = {
    "dataset": 'shape=cylinder style=filled fillcolor="#dbe9f6" color="#1f4e79"',
    "model": 'shape=box3d style=filled fillcolor="#dff0d8" color="#2e6b30"',
    "activity": 'shape=box style="rounded,filled" fillcolor="#fff2cc" color="#7f6000"',
    "agent": 'shape=house style=filled fillcolor="#fde2cf" color="#843c0c"',
    "entity": 'shape=ellipse style=filled fillcolor="#eeeeee" color="#555555"',
    "bundle": 'shape=folder style=filled fillcolor="#eeeeee" color="#555555"',
    "implied": 'shape=ellipse style=dashed color="#999999" fontcolor="#555555"',
}
ENGINES = ("dot", "neato", "fdp", "sfdp", "circo", "twopi", "osage", "patchwork")  # Graphviz layout programs
LABEL_LINE_LIMIT = 80  # characters per label line (an ellipsis marks a cut)
LABEL_LINES = 12
RED = "#d62728"
TAGS = ("jurisdiction", "originCountry", "personalData", "consentScope", "license", "consentExpires",
        "prohibitedPurpose", "intendedUse")
SHARED_AGENT_LIMIT = 8  # an agent linked to more activities than this is drawn without its edges
DOT_LIMIT = 400  # nodes + edges above which dot is not tried
EDGE_LABEL_LIMIT = 300
# curved edges with dot; straight ones with sfdp (its spline routing took > 60 s on 464 nodes,
# straight lines 0.5 s)
ENGINE_ARGS = {"dot": ["-Gsplines=true"], "sfdp": ["-Gsplines=line"]}


@dataclass
class Drawing:
    dot: str
    nodes: int
    edges: int
    engine: str
    folded: Counter[str] = field(default_factory=Counter)


def _esc(text: str) -> str:
    """A DOT string: each line cleaned (``text.clean``) and capped, lines joined with DOT's newline."""
    lines = [clean(line, LABEL_LINE_LIMIT) for line in text.split("\n")][:LABEL_LINES]
    return "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)


def _short_value(v: Any) -> str:
    s = clean(v)
    return s[:10] if re.match(r"^\d{4}-\d{2}-\d{2}T", s) else s


def _label(graph: Graph, node: Node, kind: str, extra: list[str]) -> str:
    name = graph.name(node)
    short = graph.short(node.id)
    if len(short) > 48:
        short = short[:22] + "…" + short[-22:]
    lines = [clean(name)] if name else []
    lines.append(short if not name else f"({short})")
    if kind in ("dataset", "model"):
        for t in TAGS:
            vals = node.values(P + t)
            if vals:
                lines.append(f"{t}: {', '.join(_short_value(v) for v in vals)}")
    if kind == "activity":
        for t in ("status", "computeRegion", "purpose"):
            vals = node.values(P + t)
            if vals:
                lines.append(f"{t}: {vals[0]}")
    return "\n".join([*lines, *extra])


def build_dot(graph: Graph, *, violations: Iterable[Finding] = (), focus: str | None = None,
              direction: str = "up", depth: int | None = None, detail: bool = False) -> Drawing:
    """DOT text for ``graph`` (or one lineage neighbourhood of ``focus``)."""
    keep: set[str] | None = None
    if focus is not None:
        start = resolve(graph, focus)
        keep = {start, *graph.walk(start, DEFAULT_LINEAGE, direction, depth)}
    bad_subjects: dict[str, set[str]] = {}
    for v in violations:
        for target in (v.subject, *v.datasets):
            iri = _iri(graph, target)
            if iri:
                bad_subjects.setdefault(iri, set()).add(v.rule)
    fold = _Folding(graph, keep, bad_subjects, detail)
    lines = ["digraph prov {", '  graph [rankdir=RL fontname="Helvetica" fontsize=10 overlap=false '
             'outputorder=edgesfirst];', '  node [fontname="Helvetica" fontsize=9];',
             '  edge [fontname="Helvetica" fontsize=7 color="#777777" fontcolor="#777777"];']
    ids = fold.node_lines(lines)
    seen: dict[tuple[str, str, str], None] = {}
    for edge in graph.edges:
        a, b = fold.rep.get(edge.down), fold.rep.get(edge.up)
        if a is None or b is None or a == b or edge.relation not in EDGES:
            continue
        if edge.up not in fold.crowded and edge.down not in fold.crowded:
            seen.setdefault((a, b, edge.relation), None)
    labelled = len(seen) <= EDGE_LABEL_LIMIT  # beyond that, labels are noise and slow the layout
    for a, b, relation in seen:
        attr = "label" if labelled else "tooltip"
        lines.append(f'  {ids[a]} -> {ids[b]} [{attr}="{EDGES[relation][2]}"];')
    lines.append("}")
    n_nodes, n_edges = len(ids), len(seen)
    engine = "dot" if n_nodes + n_edges <= DOT_LIMIT else "sfdp"
    return Drawing("\n".join(lines) + "\n", n_nodes, n_edges, engine, fold.folded)


class _Folding:
    """What each node is drawn as: metric series, decisions and checks folded into their run, the ranks of a
    job into one node, agents linked to very many records drawn without their edges."""

    def __init__(self, graph: Graph, keep: set[str] | None, bad_subjects: dict[str, set[str]],
                 detail: bool) -> None:
        self.graph, self.keep, self.bad_subjects = graph, keep, bad_subjects
        self.rep: dict[str, str] = {}  # node -> the node it is drawn as
        self.folded: Counter[str] = Counter()
        self.notes: dict[str, Counter[str]] = {}
        self.job_of: dict[str, str] = {}
        if not detail:
            for node in graph.nodes.values():
                if "activity" in node.kinds and MLS_NAMESPACE + "Run" in node.types():
                    world = node.values(P + "worldSize")
                    run_ids = node.values(P + "runId")
                    if world and run_ids and str(world[0]).isdigit() and int(world[0]) > 1:  # a claim: may be junk
                        self.job_of[node.id] = f"{P}run/{run_ids[0]}#ranks"
        for node in graph.nodes.values():
            if keep is not None and node.id not in keep:
                continue
            if not detail and node.types() & FOLDED_TYPES and node.id not in bad_subjects:
                self._fold(node)
                continue
            self.rep[node.id] = self.job_of.get(node.id, node.id)
        self.assoc = Counter(up for rel in ("wasAssociatedWith", "wasAttributedTo", "actedOnBehalfOf")
                             for ups in graph.up[rel].values() for up in ups)
        self.crowded = {a for a, n in self.assoc.items() if n > SHARED_AGENT_LIMIT} if not detail else set()

    def _fold(self, node: Node) -> None:
        owner = _owner(self.graph, node.id)
        for _ in range(5):  # a decision belongs to a check, which belongs to the run: go up
            if owner is None or not self.graph.nodes[owner].types() & FOLDED_TYPES:
                break
            owner = _owner(self.graph, owner)
        if owner is not None:
            owner = self.job_of.get(owner, owner)
            self.notes.setdefault(owner, Counter())[_type_name(node)] += 1
        self.folded[_type_name(node)] += 1

    def node_lines(self, lines: list[str]) -> dict[str, str]:
        """One DOT line per drawn node, appended to ``lines``; the DOT id of each."""
        graph, job_of = self.graph, self.job_of
        ids: dict[str, str] = {}
        ranks: Counter[str] = Counter(job_of[n] for n in job_of if self.keep is None or n in self.keep)
        for target in dict.fromkeys(self.rep.values()):
            ids[target] = f"n{len(ids)}"
            extra = [f"{n} {t}" for t, n in sorted(self.notes.get(target, Counter()).items())]
            if target in graph.nodes:
                node = graph.nodes[target]
                kind = kind_of(node)
                if target in self.crowded:
                    extra.append(f"linked to {self.assoc[target]} records (edges omitted)")
                if not node.kinds:  # named by a relation but never declared: drawn, marked as implied
                    kind = "implied"
                    extra = [*extra, "(not declared)"]
                label = _label(graph, node, kind if kind in STYLE else "entity", extra)
                style = STYLE.get(kind, STYLE["entity"])
            else:  # a folded multi-rank job
                run_id = target[len(P) + 4: -len("#ranks")]
                members = [graph.nodes[n] for n, j in job_of.items() if j == target]
                statuses = Counter(str(m.values(P + "status")[0]) for m in members if m.values(P + "status"))
                label = "\n".join([f"run {run_id}", f"{ranks[target]} ranks",
                                   ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())), *extra])
                style = STYLE["activity"]
            rules = self.bad_subjects.get(target) or set().union(
                *(self.bad_subjects.get(n, set()) for n, j in job_of.items() if j == target))
            if rules:
                label += "\n✖ " + ", ".join(sorted(rules))
                style += f' color="{RED}" fontcolor="{RED}" penwidth=2.5 class="violation"'
            sid = re.sub(r"[^A-Za-z0-9_.:/-]+", "_", graph.short(target) if target in graph.nodes else target)
            lines.append(f'  {ids[target]} [{style} label="{_esc(label)}" tooltip="{sid}" id="{sid}"];')
        return ids


def _iri(graph: Graph, label: str) -> str | None:
    try:
        return resolve(graph, label)
    except InvalidValueError:
        return None


def _type_name(node: Node) -> str:
    for t in sorted(node.types()):
        if t in FOLDED_TYPES:
            name = t.rsplit("#", 1)[-1]
            return {"MetricSeries": "metric series", "HyperParameterSetting": "parameter set",
                    "SidecarFile": "sidecar file", "PolicyCheck": "policy check", "PolicyDecision": "policy decision",
                    "Bundle": "bundle", "DistributedJob": "job activity"}.get(name, name.lower())
    return "entity"


def _owner(graph: Graph, nid: str) -> str | None:
    """The activity a folded record belongs to: its generator, its user, or its informant."""
    for rel in ("wasGeneratedBy", "wasInformedBy"):
        ups = graph.up[rel].get(nid)
        if ups:
            return sorted(ups)[0]
    users = graph.down["used"].get(nid)
    if users:
        return sorted(users)[0]
    return None


def render(paths: Iterable[str | Path], out: str | Path, *, judge: Judge | None = None, focus: str | None = None,
           direction: str = "up", depth: int | None = None, detail: bool = False,
           engine: str | None = None, timeout_s: float = 60.0) -> Drawing:
    """Draw ``paths`` into ``out`` (.svg, .png or .dot); ``judge(graph)`` names violations to draw in red
    (``prov4torch.governance.policy.judge(policy)``)."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png", "dot"):
        raise InvalidValueError(f"{out}: the output must end in .svg, .png or .dot", value=str(out))
    check_output(out)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise InvalidValueError(f"timeout must be a finite positive number of seconds, got {timeout_s!r}",
                                value=timeout_s)
    if engine is not None and engine not in ENGINES:
        raise InvalidValueError(f"engine {engine!r} is not a Graphviz layout engine; choose one of "
                                f"{', '.join(ENGINES)}", value=engine)
    with no_cycle_collection():  # the graph lives and dies inside: never traversed by the cycle collector
        graph = load_graph(paths)
        violations = list(judge(graph)) if judge is not None else []
        drawing = build_dot(graph, violations=violations, focus=focus, direction=direction, depth=depth,
                            detail=detail)
        del graph
    if engine:
        drawing.engine = engine
    if fmt == "dot":
        _write(out, drawing.dot.encode())
        return drawing
    data = run_graphviz(drawing, fmt, timeout_s)
    if fmt == "svg":
        try:  # success means a well-formed picture, whatever the data held
            ElementTree.fromstring(data)
        except ElementTree.ParseError as exc:
            raise InvalidValueError(f"Graphviz wrote an SVG that is not well-formed XML ({exc}); nothing was "
                                    f"written to {out}") from None
    _write(out, data)
    return drawing


def run_graphviz(drawing: Drawing, fmt: str, timeout_s: float) -> bytes:
    """Lay out and draw with Graphviz; a timed-out dot falls back to sfdp."""
    tried = []
    for engine in dict.fromkeys([drawing.engine, "sfdp"]):
        if engine not in ENGINES:
            tried.append(f"{engine}: not a Graphviz layout engine")
            continue
        exe = shutil.which(engine)
        if exe is None:
            tried.append(f"{engine}: not found")
            continue
        try:
            proc = subprocess.run([exe, f"-T{fmt}", *ENGINE_ARGS.get(engine, [])], input=drawing.dot.encode(),
                                  capture_output=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            tried.append(f"{engine}: no layout within {timeout_s:g} s")
            continue
        if proc.returncode == 0 and proc.stdout:
            drawing.engine = engine
            return proc.stdout
        tried.append(f"{engine}: {proc.stderr.decode(errors='replace').strip()[:200] or 'failed'}")
    if all(t.endswith("not found") for t in tried):
        raise MissingExtraError("Graphviz is not installed (no `dot`/`sfdp` on PATH): install it with "
                                "`apt-get install graphviz` (or `brew install graphviz`), or write .dot output")
    raise InvalidValueError("Graphviz could not draw this graph: " + "; ".join(tried))


def _write(out: Path, data: bytes) -> None:
    from ..safefs import write_atomic

    write_atomic(out, data)
