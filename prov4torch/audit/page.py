"""One self-contained HTML page from ``audit.report``'s runs: no network access when opened (styles, script,
plots, the lineage drawing and the data are inside; a Content-Security-Policy forbids every fetch and every
script but the page's own, by hash), readable without JavaScript (tables, verdicts, plots are static SVG drawn
here), accessible (headings, table headers, text alternatives on figures). The script only sorts and filters
the runs table and builds a series' exact-values table on demand.

Every string from a document is escaped here (``esc``) -- names, tags, parameters, reasons -- so markup in a
document shows as text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import math
import re
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .._version import __version__
from .report import DataUse, RunReport, Series

MAX_POINTS = 1000  # a series longer than this is decimated for display (min and max of each bucket)
EXACT_BUDGET = 1_200_000  # bytes of exact values embedded across the page; past it, the sidecar file says
MAX_SECTIONS = 50  # run sections in one page (the runs table lists every run)
MAX_ROWS = 500  # rows of a decision or violation table per run (the count says how many more)
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
W, H, ML, MR, MT, MB = 640, 220, 64, 12, 10, 28  # plot size and margins (left, right, top, bottom)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def anchor(run: RunReport, i: int) -> str:
    return f"run-{i}-" + re.sub(r"[^A-Za-z0-9_-]", "-", run.run_id)[:60]


# -- plots ---------------------------------------------------------------------------------------------------------

def decimate(steps: Sequence[int], values: Sequence[float], limit: int = MAX_POINTS) -> tuple[list[int], list[float]]:
    """At most ``limit`` points that keep the shape: the smallest and largest value of each of ``limit / 2``
    buckets, in step order; non-finite values left out."""
    pts = [(s, v) for s, v in zip(steps, values, strict=False) if math.isfinite(v)]
    if len(pts) <= limit:
        return [p[0] for p in pts], [p[1] for p in pts]
    buckets = limit // 2
    size = len(pts) / buckets
    xs, ys = [], []
    for b in range(buckets):
        chunk = pts[int(b * size): int((b + 1) * size)]
        if not chunk:
            continue
        lo, hi = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        for p in sorted({lo, hi}):
            xs.append(p[0])
            ys.append(p[1])
    return xs, ys


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(n + 2) if first + i * step <= hi + step * 1e-9]


def plot(title: str, lines: list[tuple[str, list[int], list[float]]]) -> str:
    """An SVG line plot of ``lines`` ((label, steps, values), already decimated), with axes and a text
    alternative; a series of one point is a dot."""
    xs = [x for _, s, _ in lines for x in s]
    ys = [y for _, _, v in lines for y in v]
    if not xs:
        return f'<p class="muted">{esc(title)}: no finite values to draw.</p>'
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) or 1) * 0.05, y1 + (abs(y1) or 1) * 0.05

    def px(x: float) -> float:
        return round(ML + (x - x0) / (x1 - x0) * (W - ML - MR), 1)

    def py(y: float) -> float:
        return round(MT + (1 - (y - y0) / (y1 - y0)) * (H - MT - MB), 1)

    parts = [f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
             f'<rect x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}" class="frame"/>']
    for t in ticks(y0, y1):
        parts.append(f'<line x1="{ML}" x2="{W - MR}" y1="{py(t)}" y2="{py(t)}" class="grid"/>'
                     f'<text x="{ML - 4}" y="{py(t) + 3}" text-anchor="end">{esc(f"{t:.4g}")}</text>')
    for t in ticks(x0, x1):
        parts.append(f'<text x="{px(t)}" y="{H - 10}" text-anchor="middle">{esc(f"{t:.6g}")}</text>')
    for i, (_, steps, values) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        if len(steps) == 1:
            parts.append(f'<circle cx="{px(steps[0])}" cy="{py(values[0])}" r="3" fill="{colour}"/>')
        elif steps:
            pts = " ".join(f"{px(x)},{py(y)}" for x, y in zip(steps, values, strict=True))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
    parts.append("</svg>")
    return "".join(parts)


def legend(labels: Iterable[str]) -> str:
    items = "".join(f'<li><span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}"></span>{esc(lab)}'
                    f"</li>" for i, lab in enumerate(labels))
    return f'<ul class="legend">{items}</ul>'


# -- exact values --------------------------------------------------------------------------------------------------

class Payload:
    """The exact values embedded for on-demand tables: float64 little-endian in base64 (about half the bytes of
    decimal text), steps as a range when consecutive, within ``EXACT_BUDGET`` for the whole page."""

    def __init__(self, budget: int = EXACT_BUDGET) -> None:
        self.left = budget
        self.blocks: list[str] = []
        self.spent = 0

    def add(self, series: Series, block_id: str) -> bool:
        steps = series.steps
        consecutive = all(b - a == 1 for a, b in itertools.pairwise(steps))
        body: dict[str, Any] = {"v": base64.b64encode(struct.pack(f"<{len(series.values)}d",
                                                                   *series.values)).decode()}
        body.update({"s0": steps[0], "n": len(steps)} if consecutive and steps else {"s": steps})
        text = json.dumps(body, separators=(",", ":"))
        if len(text) > self.left:
            return False
        self.left -= len(text)
        self.spent += len(text)
        self.blocks.append(f'<script type="application/json" id="{block_id}">{text}</script>')
        return True


def series_block(title: str, series: list[Series], payload: Payload, prefix: str, labels: list[str]) -> str:
    """One figure: the plot of these series (one line each), a legend, what decimation did, and for each series
    a details element whose table of exact values the script builds when opened."""
    lines, notes, exact = [], [], []
    for i, s in enumerate(series):
        xs, ys = decimate(s.steps, s.values)
        lines.append((labels[i], xs, ys))
        finite = sum(1 for v in s.values if math.isfinite(v))
        if len(s.values) - finite:
            notes.append(f"{labels[i]}: {len(s.values) - finite} non-finite value(s) not drawn")
        if finite > len(xs):
            notes.append(f"{labels[i]}: {finite:,} points drawn as {len(xs):,} (decimated for display: the smallest "
                         f"and largest value of each of {MAX_POINTS // 2} step buckets)")
        block_id = f"{prefix}-{i}"
        source = f"rank-{s.rank}.metrics.csv"
        if s.values and payload.add(s, block_id):
            exact.append(f'<details data-series="{block_id}"><summary>Exact values of {esc(labels[i])} '
                         f'({len(s.values):,} points)</summary><div class="exact"><p class="muted">The table needs '
                         f'JavaScript; the values are also in {esc(source)}.</p></div></details>')
        elif s.values:
            exact.append(f'<p class="muted">Exact values of {esc(labels[i])}: not embedded (the page keeps under '
                         f'{EXACT_BUDGET // 1000:,} kB of them); they are in {esc(source)}.</p>')
    caption = esc(title) + "".join(f"<br><small>{esc(n)}</small>" for n in notes)
    return (f'<figure class="series">{plot(title, lines)}{legend(labels)}<figcaption>{caption}</figcaption>'
            f'{"".join(exact)}</figure>')


# -- tables --------------------------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "", tid: str = "",
          caption: str = "") -> str:
    """A table with a header row (``scope="col"``); cells are escaped text, or ``Raw`` markup made here."""
    head = "".join(f'<th scope="col">{_sort_button(h) if "sortable" in cls else esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    attrs = (f' class="{cls}"' if cls else "") + (f' id="{tid}"' if tid else "")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table{attrs}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw(str):
    """Markup this module made (never text from a document)."""


def _sort_button(h: str) -> str:
    return f'<button type="button" class="sort">{esc(h)}</button>'


def _cell(c: Any) -> str:
    if isinstance(c, tuple) and str(c[1]) != str(c[0]):  # (shown, sort key)
        return f'<td data-v="{esc(c[1])}">{c[0] if isinstance(c[0], Raw) else esc(c[0])}</td>'
    c = c[0] if isinstance(c, tuple) else c
    return f"<td>{c if isinstance(c, Raw) else esc(c)}</td>"


def kv_table(items: dict[str, Any], caption: str = "") -> str:
    return table(("name", "value"), sorted(items.items()), "kv", caption=caption) if items else ""


def fmt_duration(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def badge(verdict: str) -> Raw:
    cls = {"BLOCKED": "bad", "DENY": "bad", "ALLOW": "good"}.get(verdict, "muted")
    return Raw(f'<span class="badge {cls}">{esc(verdict)}</span>')


def tags_text(d: DataUse) -> str:
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(d.tags.items()))


# -- the page ------------------------------------------------------------------------------------------------------

CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--bad:#b3261e;--good:#1a7f37}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--fg);
 background:var(--bg);margin:0 auto;max-width:1100px;padding:0 16px 48px}
h1{font-size:1.5rem;margin:20px 0 4px}h2{font-size:1.25rem;border-bottom:1px solid var(--line);
 padding-bottom:4px;margin-top:36px}h3{font-size:1.05rem;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px;max-width:100%;display:block;overflow-x:auto}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top;overflow-wrap:break-word}
#runs-table td:nth-child(n+3):nth-child(-n+6),#runs-table td:nth-child(n+9){white-space:nowrap}
th{background:#f6f8fa}caption{text-align:left;color:var(--muted);padding:2px 0}
.kv td:first-child{white-space:nowrap;font-family:ui-monospace,monospace}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
pre{background:#f6f8fa;padding:8px;white-space:pre-wrap;overflow-wrap:anywhere}
.muted{color:var(--muted)}.badge{font-weight:600;padding:1px 6px;border-radius:3px;border:1px solid}
.badge.bad{color:var(--bad)}.badge.good{color:var(--good)}.badge.muted{color:var(--muted)}
.warn{color:var(--bad)}button.sort{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer}
th[aria-sort=ascending] button.sort::after{content:" \\25B2"}
th[aria-sort=descending] button.sort::after{content:" \\25BC"}
svg.plot{max-width:100%;height:auto}svg.plot text{font-size:10px;fill:var(--muted)}
svg.plot .frame{fill:none;stroke:var(--line)}svg.plot .grid{stroke:#eaeef2}
figure{margin:8px 0 16px}figcaption{color:var(--muted);font-size:12px}
.legend{list-style:none;padding:0;margin:2px 0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.series-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:8px 20px}
tr.diff td{background:#fff8c5}img.graph{max-width:100%;height:auto;border:1px solid var(--line)}
input[type=search]{font:inherit;padding:3px 6px;width:260px}
"""

SCRIPT = """
(function () {
  "use strict";
  function cellKey(row, i) {
    var c = row.cells[i]; var v = c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent;
    var n = Number(v); return v !== "" && !isNaN(n) ? n : v.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (t) {
    t.querySelectorAll("thead th").forEach(function (th, i) {
      var b = th.querySelector("button.sort"); if (!b) return;
      b.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        t.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(t.tBodies[0].rows);
        rows.sort(function (a, b) {
          var x = cellKey(a, i), y = cellKey(b, i);
          var c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return asc ? c : -c;
        });
        rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
      });
    });
  });
  document.querySelectorAll("input[data-filter]").forEach(function (inp) {
    var t = document.getElementById(inp.getAttribute("data-filter"));
    var out = document.getElementById(inp.getAttribute("data-count"));
    inp.addEventListener("input", function () {
      var q = inp.value.toLowerCase(), shown = 0;
      Array.prototype.forEach.call(t.tBodies[0].rows, function (r) {
        var ok = r.textContent.toLowerCase().indexOf(q) >= 0; r.hidden = !ok; if (ok) shown++;
      });
      if (out) out.textContent = shown + " of " + t.tBodies[0].rows.length + " runs shown";
    });
  });
  function decode(b64) {
    var bin = atob(b64), buf = new ArrayBuffer(bin.length), u = new Uint8Array(buf), i;
    for (i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    var dv = new DataView(buf), out = new Array(bin.length / 8);
    for (i = 0; i < out.length; i++) out[i] = dv.getFloat64(i * 8, true);
    return out;
  }
  function build(d) {
    var s = JSON.parse(document.getElementById(d.getAttribute("data-series")).textContent);
    var values = decode(s.v), box = d.querySelector(".exact"), shown = 0, PAGE = 1000;
    box.textContent = "";
    var t = document.createElement("table"), head = t.createTHead().insertRow(), body = t.createTBody();
    ["step", "value"].forEach(function (h) { var th = document.createElement("th"); th.scope = "col";
      th.textContent = h; head.appendChild(th); });
    var more = document.createElement("button"); more.type = "button";
    function page() {
      var end = Math.min(values.length, shown + PAGE);
      for (; shown < end; shown++) {
        var r = body.insertRow();
        r.insertCell().textContent = String(s.s ? s.s[shown] : s.s0 + shown);
        r.insertCell().textContent = String(values[shown]);
      }
      more.hidden = shown >= values.length;
      more.textContent = "show " + Math.min(PAGE, values.length - shown) + " more of " + values.length;
    }
    more.addEventListener("click", page);
    box.appendChild(t); box.appendChild(more); page();
  }
  document.querySelectorAll("details[data-series]").forEach(function (d) {
    d.addEventListener("toggle", function () {
      if (d.open && !d.hasAttribute("data-built")) { d.setAttribute("data-built", ""); build(d); }
    });
  });
})();
"""


def script_hash() -> str:
    return base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


def page(title: str, body: str, payload: Payload) -> str:
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash()}'; "
           "base-uri 'none'; form-action 'none'")
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f'<header><h1>{esc(title)}</h1><p class="muted">Made by prov4torch {esc(__version__)} on {made}. '
            f"Everything on this page is inside this file; it opens offline.</p></header>"
            f"<main>{body}</main>{''.join(payload.blocks)}<script>{SCRIPT}</script></body></html>\n")
