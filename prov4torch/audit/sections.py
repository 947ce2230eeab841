"""``prov4torch report``: the sections of the page -- the runs table, one section per run, the comparison -- and
the command's entry point (``write_report``)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError, Prov4TorchError
from ..safefs import check_output, write_atomic
from .graph import Graph
from .page import (
    MAX_ROWS,
    MAX_SECTIONS,
    Payload,
    Raw,
    anchor,
    badge,
    esc,
    fmt_duration,
    kv_table,
    page,
    series_block,
    table,
    tags_text,
)
from .render import Judge
from .report import RunReport, Series, collect, fmt_number

CHECKPOINT_HASH_LIMIT = 2 << 30  # a checkpoint larger than this is not hashed for the page (verify does it)
GRAPH_NODE_LIMIT = 1500  # a run's lineage is drawn up to this many nodes (beyond, `render --focus` draws a part)


@dataclass
class Written:
    path: Path
    runs: int
    sections: int
    size: int
    exact_bytes: int
    seconds: float


def as_float(v: Any) -> float | None:
    """A number a document claims, or None when it is not one."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def key_params(runs: list[RunReport], limit: int = 4) -> list[str]:
    """The parameters worth a column: those that differ between runs first, then the rest, by name."""
    names = sorted({k for r in runs for k in r.params})
    differing = [n for n in names if len({r.params.get(n) for r in runs}) > 1]
    return (differing + [n for n in names if n not in differing])[:limit]


def runs_table(runs: list[RunReport]) -> str:
    keys = key_params(runs)
    rows: list[tuple[Any, ...]] = []
    for i, r in enumerate(runs):
        shown = esc(r.name or r.run_id) + (f"<br><small>{esc(r.run_id)}</small>" if r.name else "")
        name = Raw(f'<a href="#{anchor(r, i)}">{shown}</a>' if i < MAX_SECTIONS else shown)
        params = "; ".join(f"{k}={r.params[k]}" for k in keys if k in r.params)
        finals = "; ".join(f"{k}={v}" for k, v in r.final_metrics().items())
        energy = as_float(r.energy.get("energyKWh"))
        duration = r.duration_s
        kwh = (f"{energy:.3g} kWh", energy) if energy is not None else ""
        rows.append((r.experiment, (name, r.name or r.run_id), r.status, (r.start[:19].replace("T", " "), r.start),
                     (fmt_duration(duration), "" if duration is None else duration), len(r.ranks), params, finals,
                     kwh, (badge(r.verdict), r.verdict)))
    note = (f'<p class="muted">{len(runs) - MAX_SECTIONS:,} more runs are listed without a section (a page holds '
            f"{MAX_SECTIONS}); report their directories to see them.</p>" if len(runs) > MAX_SECTIONS else "")
    return ('<section id="runs"><h2>Runs</h2><p><label>Filter runs: <input type="search" data-filter="runs-table" '
            'data-count="runs-count"></label> <span id="runs-count" class="muted" aria-live="polite">'
            f'{len(runs)} runs</span></p>'
            + table(("experiment", "run", "status", "start", "duration", "ranks", "key parameters", "final metrics",
                     "energy", "verdict"), rows, "sortable", "runs-table") + note + "</section>")


def run_section(r: RunReport, i: int, payload: Payload) -> str:
    head = (f'<section class="run" id="{anchor(r, i)}"><h2>Run {esc(r.experiment + " / " if r.experiment else "")}'
            f'{esc(r.name or r.run_id)} {badge(r.verdict)}</h2>'
            f'<p>Status <strong>{esc(r.status)}</strong>; started {esc(r.start or "?")}, '
            f'{esc(fmt_duration(r.duration_s) or "no end recorded")}; '
            f'{len(r.ranks)} rank(s); run id <code>{esc(r.run_id)}</code></p>')
    if r.command:
        head += f"<h3>Command line</h3><pre><code>{esc(r.command)}</code></pre>"
    facts = {k: v for k, v in r.fields.items() if k != "checked"}
    parts = [head, kv_table(facts, "run"), _warnings(r), _governance(r), _evidence(r),
             "<h3>Parameters</h3>" + (kv_table(r.params) or '<p class="muted">none recorded</p>'),
             _metrics(r, i, payload), _resources(r, i, payload), _datasets(r), _checkpoints(r), _graph(r),
             "<h3>Environment</h3>" + (kv_table(r.environment) or '<p class="muted">none recorded</p>'),
             f'<p class="muted">From {esc(", ".join(r.files))}</p></section>']
    return "".join(parts)


def _warnings(r: RunReport) -> str:
    if not r.warnings:
        return ""
    return ('<h3>Warnings</h3><ul class="warnings">' + "".join(f'<li class="warn">{esc(w)}</li>' for w in r.warnings)
            + "</ul>")


def _governance(r: RunReport) -> str:
    out = ["<h3>Policy decisions</h3>"]
    if r.fields.get("checked"):
        out.append(f"<p>Policy: {esc(r.fields['checked'])}. Verdict: {badge(r.verdict)}</p>")
    prevented = [d for d in r.decisions if d.verdict == "deny" and d.mode == "enforce"]
    if prevented:
        out.append(f'<p class="warn">{len(prevented)} use(s) prevented at runtime: the enforced policy stopped them '
                   "before the data reached the model.</p>")
    if r.decisions:
        rows = [(badge(d.verdict.upper() if d.verdict else "?"), d.mode, d.rule, d.reason, d.role,
                 ", ".join(d.datasets), d.trigger, d.time) for d in r.decisions[:MAX_ROWS]]
        out.append(table(("verdict", "mode", "rule", "reason", "role", "data", "trigger", "time"), rows,
                         caption="decisions recorded while the run went on"))
        out.append(_more(len(r.decisions), "decisions"))
    elif not r.fields.get("checked"):
        out.append('<p class="muted">No policy was applied to this run (prov4torch run --policy, or report '
                   "--policy to check it now).</p>")
    if r.violations:
        found = [(v["rule"], v["subject"], v["reason"], ", ".join(v["datasets"]), v["attribute"])
                 for v in r.violations[:MAX_ROWS]]
        out.append(table(("rule", "subject", "reason", "data", "attribute"), found,
                         caption="violations found after the fact"))
        out.append(_more(len(r.violations), "violations"))
    return "".join(out)


def _more(n: int, what: str) -> str:
    return (f'<p class="muted">... and {n - MAX_ROWS:,} more {what} (prov4torch check --json lists every one)</p>'
            if n > MAX_ROWS else "")


def _evidence(r: RunReport) -> str:
    if not r.evidence:
        return ""
    rows = [(badge("verified" if ok else "NOT VERIFIED"), what) for ok, what in r.evidence]
    return "<h3>Signatures</h3>" + table(("result", "what"), rows, caption="the run's attestation")


def _metrics(r: RunReport, i: int, payload: Payload) -> str:
    series = [s for s in r.series if s.context != "system"]
    if not series:
        return '<h3>Metrics</h3><p class="muted">none recorded</p>'
    return "<h3>Metrics</h3>" + _summary_table(series) + _plots(series, f"m{i}", payload)


def _summary_table(series: list[Series]) -> str:
    rows: list[tuple[Any, ...]] = []
    for s in sorted(series, key=lambda s: (s.context, s.name, s.rank)):
        sm = s.summary
        rows.append((s.context, s.name, s.rank, fmt_number(sm.get("count", len(s.values))),
                     fmt_number(sm.get("first", s.values[0] if s.values else "")),
                     fmt_number(sm.get("last", s.values[-1] if s.values else "")),
                     fmt_number(sm.get("min", "")), fmt_number(sm.get("max", ""))))
    return table(("context", "name", "rank", "count", "first", "last", "min", "max"), rows,
                 caption="as recorded in the PROV document")


def _plots(series: list[Series], prefix: str, payload: Payload) -> str:
    grouped: dict[tuple[str, str], list[Series]] = {}
    for s in series:
        if len(s.values) > 1:  # one value is a number in the table above, not a plot
            grouped.setdefault(s.key, []).append(s)
    if not grouped:
        if any(s.values for s in series):
            return ""
        return ('<p class="muted">No values to plot: the metrics sidecar (rank-N.metrics.csv) was not found beside '
                "the document, or was changed after the run.</p>")
    figures = []
    for j, (key, group) in enumerate(sorted(grouped.items())):
        labels = [f"rank {s.rank}" for s in group]
        figures.append(series_block(f"{key[0]} / {key[1]}", group, payload, f"{prefix}-{j}", labels))
    return f'<div class="series-grid">{"".join(figures)}</div>'


def _resources(r: RunReport, i: int, payload: Payload) -> str:
    system = [s for s in r.series if s.context == "system"]
    body = kv_table(r.energy, "energy and CO2") + kv_table(r.system, "system and GPU")
    plots = _plots(system, f"s{i}", payload) if any(len(s.values) > 1 for s in system) else ""
    if plots:
        body += "<h4>System series</h4>" + plots
    return "<h3>System, GPU, energy</h3>" + (body or '<p class="muted">none recorded</p>')


def _datasets(r: RunReport) -> str:
    if not r.data:
        return '<h3>Data</h3><p class="muted">No dataset recorded as used by this run.</p>'
    rows = [(d.name, Raw(f"<code>{esc(d.id)}</code>"), d.identity, ", ".join(sorted(d.roles)), d.batches or "",
             d.samples or "", d.reads or "", tags_text(d)) for d in r.data]
    return "<h3>Data</h3>" + table(("name", "id", "identity", "roles", "batches", "samples", "file reads", "tags"),
                                   rows)


def _checkpoints(r: RunReport) -> str:
    if not r.checkpoints:
        return ""
    rows: list[tuple[Any, ...]] = []
    for c in r.checkpoints:
        flags = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(c.flags.items()))
        rows.append((c.name, c.path, Raw(f"<code>{esc(c.sha256)}</code>"), Raw(f"<code>{esc(c.weights)}</code>"),
                     c.version, c.revision_of, flags, c.signature))
    return "<h3>Checkpoints</h3>" + table(("name", "path", "file sha256", "weights sha256", "version",
                                           "derived from model", "lineage", "signature"), rows)


def _graph(r: RunReport) -> str:
    if r.graph_svg:
        data = base64.b64encode(r.graph_svg).decode()
        alt = (f"Lineage graph of run {r.name or r.run_id}: {len(r.data)} dataset(s) used, "
               f"{len(r.checkpoints)} checkpoint(s) saved")
        return (f'<h3>Lineage</h3><figure><img class="graph" alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">'
                f"<figcaption>The audit graph (prov4torch render) of this run.</figcaption></figure>")
    return f'<h3>Lineage</h3><p class="muted">{esc(r.graph_note or "not drawn")}</p>' if r.graph_note else ""


# -- comparison ----------------------------------------------------------------------------------------------------

def compare_section(runs: list[RunReport], payload: Payload) -> str:
    names = [f"{r.name or r.run_id} ({r.run_id[:8]})" for r in runs]
    params = sorted({k for r in runs for k in r.params})
    prow = []
    for k in params:
        vals = [r.params.get(k, "") for r in runs]
        differs = len(set(vals)) > 1
        prow.append(Raw(f'<tr{" class=diff" if differs else ""}><th scope="row">{esc(k)}</th>'
                        + "".join(f"<td>{esc(v)}</td>" for v in vals)
                        + f"<td>{'differs' if differs else ''}</td></tr>"))
    heads = "".join(f'<th scope="col">{esc(n)}</th>' for n in ("parameter", *names, "diff"))
    ptable = f"<table><thead><tr>{heads}</tr></thead><tbody>{''.join(prow)}</tbody></table>"
    data_ids = sorted({d.id for r in runs for d in r.data})
    drows = []
    for did in data_ids:
        uses = [next((d for d in r.data if d.id == did), None) for r in runs]
        label = next(d.name for d in uses if d is not None)
        cells = [", ".join(sorted(d.roles)) if d else "not used" for d in uses]
        drows.append((label, Raw(f"<code>{esc(did)}</code>"), *cells, "differs" if len(set(cells)) > 1 else ""))
    overlay: list[Series] = []
    labels: dict[int, str] = {}
    for n, r in zip(names, runs, strict=True):
        for s in r.series:
            if s.context != "system" and s.values:
                overlay.append(s)
                labels[id(s)] = f"{n} rank {s.rank}"
    return ('<section id="compare"><h2>Comparison</h2><h3>Parameters</h3>' + ptable
            + "<h3>Data</h3>" + table(("name", "id", *names, "diff"), drows)
            + "<h3>Metrics, overlaid</h3>" + _overlay(overlay, labels, payload) + "</section>")


def _overlay(series: list[Series], labels: dict[int, str], payload: Payload) -> str:
    grouped: dict[tuple[str, str], list[Series]] = {}
    for s in series:
        grouped.setdefault(s.key, []).append(s)
    if not grouped:
        return '<p class="muted">No metric values to overlay.</p>'
    return '<div class="series-grid">' + "".join(
        series_block(f"{k[0]} / {k[1]}", g, payload, f"c-{j}", [labels[id(s)] for s in g])
        for j, (k, g) in enumerate(sorted(grouped.items()))) + "</div>"


# -- the command ---------------------------------------------------------------------------------------------------

def draw_lineage(graph: Graph, run: RunReport, timeout_s: float = 30.0) -> tuple[bytes | None, str]:
    """The run's audit graph as SVG (the ``render`` drawing), or why not."""
    from .render import build_dot, run_graphviz

    if len(graph.nodes) > GRAPH_NODE_LIMIT:
        return None, (f"not drawn: {len(graph.nodes):,} nodes (over {GRAPH_NODE_LIMIT:,}); prov4torch render "
                      "--focus ID draws one neighbourhood")
    try:
        return run_graphviz(build_dot(graph), "svg", timeout_s), ""
    except Prov4TorchError as exc:
        return None, f"not drawn: {exc}"


def attach_evidence(runs: list[RunReport], keys: list[Any]) -> None:
    """The signature status of each run's attestation and of each checkpoint's signed lineage card."""
    from ..evidence import attest

    for r in runs[:MAX_SECTIONS]:
        for c in r.checkpoints:
            c.signature = checkpoint_signature(c.path, keys)
        if r.directory is not None and (r.directory / attest.ATTESTATION).exists():
            r.evidence = [(f.ok, f.line()) for f in attest.verify_run_dir(r.directory, keys)]
        elif r.directory is not None:
            r.evidence = [(False, "no attestation beside the run: it was not signed (prov4torch keys init)")]


def checkpoint_signature(path: str, keys: list[Any]) -> str:
    """One line: the checkpoint's lineage card verified (signature and the file's bytes), or why not."""
    from ..evidence import attest

    if not path or "," in path:
        return ""
    ckpt = Path(path)
    card = ckpt.with_name(ckpt.name + ".lineage.json")
    try:
        if not card.is_file() or not ckpt.is_file():
            return "no lineage card beside the checkpoint" if ckpt.is_file() else "checkpoint not found here"
        if ckpt.stat().st_size > CHECKPOINT_HASH_LIMIT:
            return f"not checked here (over {CHECKPOINT_HASH_LIMIT >> 30} GiB): prov4torch verify {path}"
    except OSError as exc:
        return f"not readable: {exc}"
    findings = attest.verify_sidecar(ckpt, card, keys)
    return "verified" if all(f.ok for f in findings) else "NOT VERIFIED: " + "; ".join(
        f"{f.what}: {f.detail}" for f in findings if not f.ok)


def write_report(paths: Iterable[str | Path], out: str | Path, *, compare: bool = False,
                 judge: Judge | None = None, policy_name: str = "", keys: list[Any] | None = None,
                 graph: bool = True) -> Written:
    """Write the report of ``paths`` (run directories, PROV files, output roots) to ``out``, atomically.
    ``judge``: a policy as a function of a graph (``governance.evaluate.judge``), checked after the fact;
    ``keys``: the public keys a run's attestation is verified against."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidValueError(f"{out}: the report is an HTML page; give a path ending in .html", value=str(out))
    check_output(out)
    runs, info = collect(paths, judge, policy_name, draw_lineage if graph else None)
    if compare and len(runs) < 2:
        raise InvalidValueError(f"--compare needs two runs or more; {len(runs)} found in the paths given",
                                value=len(runs))
    attach_evidence(runs, keys or [])
    payload = Payload()
    body = [_inputs(info, runs)]
    if compare:
        body.append(compare_section(runs, payload))
    if runs:
        body.append(runs_table(runs))
    body += [run_section(r, i, payload) for i, r in enumerate(runs[:MAX_SECTIONS])]
    title = "prov4torch report: " + (", ".join(r.name or r.run_id for r in runs[:3]) if runs else "documents")
    text = page(title + (" ..." if len(runs) > 3 else ""), "".join(body), payload)
    write_atomic(out, text)
    return Written(out, len(runs), min(len(runs), MAX_SECTIONS), len(text.encode()), payload.spent,
                   time.perf_counter() - t0)


def _inputs(info: dict[str, Any], runs: list[RunReport]) -> str:
    files = info["files"]
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    blocked = sum(r.verdict == "BLOCKED" for r in runs)
    lines = [f"<p>{len(runs):,} run(s) from {len(files):,} file(s): {esc(shown)}; {info['nodes']:,} records, "
             f"{info['relations']:,} relations.</p>"]
    if blocked:
        lines.append(f'<p class="warn">{blocked} run(s) BLOCKED by an enforced policy.</p>')
    for o in info["other"]:
        lines.append(f'<p class="muted">{esc(", ".join(o["files"]))}: no prov4torch run in it ({o["nodes"]:,} '
                     f'records); {o["violations"]} violation(s) of the policy given.</p>')
    return '<section id="inputs"><h2>What this report covers</h2>' + "".join(lines) + "</section>"
