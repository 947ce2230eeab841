"""`prov4torch report` (issue 26): one self-contained HTML page of a run, a store or a comparison, opened in a real
browser -- headless Chromium (Debian's `chromium`, installed by scripts/bootstrap.sh) driven by playwright.

Each page is checked for: no console error (a Content-Security-Policy violation is one), no request beyond the
file itself, the verdict and every dataset present, the plots drawn, sorting and filtering working, the exact
values built on demand and equal to the metrics sidecar, markup from documents inert. Screenshots go to the
test's temporary directory. Locally the browser tests skip, saying why, only when Chromium is missing; under CI
(CI set) a missing Chromium fails them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from prov4torch.audit.page import decimate, ticks
from prov4torch.audit.sections import write_report

CLI = [sys.executable, "-m", "prov4torch_cli.app"]
PWNED = ["<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=2">',
         '"><svg onload="window.__pwned=3">', "</td></tr></table><h1 id=injected>x</h1>"]

TRAIN = """
import argparse, torch, prov4torch
from torch.utils.data import DataLoader, Dataset

class Rows(Dataset):
    def __init__(self, path):
        self.path = path
        self.rows = [[float(v) for v in line.split(",")] for line in open(path)]
    def __len__(self):
        return len(self.rows)
    def __getitem__(self, i):
        return torch.tensor(self.rows[i][:2]), torch.tensor(self.rows[i][2:])

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=0.05)
ap.add_argument("--note", default="plain")
args = ap.parse_args()
torch.manual_seed(0)
train = DataLoader(Rows("data/train.csv"), batch_size=4)
test = DataLoader(Rows("data/test.csv"), batch_size=4)
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=args.lr)
step = 0
for epoch in range(3):
    for x, y in train:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        step += 1
        prov4torch.log_metric("loss", loss.item(), step=step)
with torch.no_grad():
    for x, y in test:
        prov4torch.log_metric("loss", torch.nn.functional.mse_loss(model(x), y).item(), step=step, context="testing")
torch.save(model.state_dict(), "model.pt")
print("done")
"""

TAGS = """
[[dataset]]
path = "data/train.csv"
dataset_id = "train-rows"
origin_country = "FR"
jurisdiction = "EU"
license = "CC-BY-4.0"
consent_scope = ["training", "testing"]

[[dataset]]
path = "data/test.csv"
dataset_id = "test-rows"
origin_country = "FR"
jurisdiction = "EU"
license = "CC-BY-4.0"
consent_scope = {consent}
"""


def project(root: Path, test_consent: str = '["testing"]') -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.csv").write_text("\n".join(f"{i / 40},{i % 5 / 5},{i * 0.01}" for i in range(40)))
    (root / "data" / "test.csv").write_text("\n".join(f"{i / 12},{i % 3 / 3},{i * 0.02}" for i in range(12)))
    (root / "tags.toml").write_text(TAGS.format(consent=test_consent))
    (root / "train.py").write_text(TRAIN)
    return root


def prov_run(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROV4TORCH_")}
    clean.update({"PROV4TORCH_FLUSH_INTERVAL": "0.2", "XDG_CONFIG_HOME": str(root / "config"), **(env or {})})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=root, timeout=300, env=clean)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root of three real runs under `prov4torch run`: two allowed (different learning rates), one
    blocked by the default policy (its test data's consent is research only); the first with --report."""
    root = project(tmp_path_factory.mktemp("store"))
    common = ["--out", "runs", "--experiment", "demo", "--policy", "default", "--region", "eu-west-1",
              "--purpose", "training", "--data-tags", "tags.toml"]
    r = prov_run(root, "run", *common, "--report", "train.py", "--lr", "0.05")
    assert r.returncode == 0, r.stderr
    assert "report in" in r.stderr
    r = prov_run(root, "run", *common, "train.py", "--lr", "0.01", "--note", PWNED[0],
                 env={"PROV4TORCH_ENERGY": "0"})
    assert r.returncode == 0, r.stderr
    (root / "tags.toml").write_text(TAGS.format(consent='["research"]'))
    r = prov_run(root, "run", *common, "train.py", "--lr", "0.02")
    assert r.returncode == 1 and "done" not in r.stdout, r.stderr
    return root


def run_dirs(store: Path) -> list[Path]:
    return sorted((store / "runs" / "demo").iterdir(), key=lambda p: p.name)


# -- the browser ---------------------------------------------------------------------------------------------------

def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        why = "Chromium and playwright are needed (bash scripts/bootstrap.sh installs both)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


class Opened:
    """A page opened in the browser, with what it logged and asked the network for."""

    def __init__(self, browser: Any, path: Path, shots: Path, javascript: bool = True) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url, wait_until="load")
        self.load_ms = self.page.evaluate(
            "() => { const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd; }")
        self.page.screenshot(path=str(shots), full_page=False)

    def check_clean(self) -> None:
        assert not self.errors, self.errors
        assert all(u == self.url or u.startswith("data:") for u in self.requests), self.requests

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def opened(browser: Any, tmp_path: Path) -> Iterator[Any]:
    pages: list[Opened] = []

    def open_page(path: Path, javascript: bool = True) -> Opened:
        o = Opened(browser, path, tmp_path / f"shot-{len(pages)}.png", javascript)
        pages.append(o)
        return o

    yield open_page
    for o in pages:
        o.close()


def report(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "report", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


# -- a run -----------------------------------------------------------------------------------------------------------

def test_the_report_of_a_real_run_opens_offline_with_its_verdict_data_and_plots(store: Path, opened: Any,
                                                                                tmp_path: Path):
    first = run_dirs(store)[0]
    page_file = first / "report.html"  # written by `prov4torch run --report`
    assert page_file.is_file() and page_file.stat().st_size < 2_000_000
    o = opened(page_file)
    o.check_clean()
    p = o.page
    section = p.locator("section.run").first
    assert "ALLOW" in section.locator("h2").inner_text()
    data = section.locator("h3:text('Data') + table").inner_text()
    assert "train-rows" in data and "test-rows" in data and "training" in data and "testing" in data
    assert "CC-BY-4.0" in data and "consentScope" in data
    # every plot is drawn: a non-empty line for the 30-step training loss
    lines = section.locator("figure", has_text="training / loss").locator("svg.plot polyline")
    assert lines.count() == 1
    assert len(lines.first.get_attribute("points").split()) == 30
    assert "train.py --lr 0.05" in section.locator("h3:text('Command line') + pre").inner_text()
    assert "model.pt" in section.locator("h3:text('Checkpoints') + table").inner_text()
    assert p.locator("img.graph").count() == 1 and p.locator("img.graph").get_attribute("alt")
    # the exact values, built when asked, are the sidecar's
    details = section.locator("figure", has_text="training / loss").locator("details[data-series]")
    details.locator("summary").click()
    cells = details.locator("tbody tr td:nth-child(2)").all_inner_texts()
    with open(first / "rank-0.metrics.csv", newline="") as fh:
        want = [r["value"] for r in csv.DictReader(fh) if r["name"] == "loss" and r["context"] == "training"]
    assert len(want) == 30 and [float(c) for c in cells] == [float(w) for w in want]
    o.check_clean()


def test_the_text_parts_are_readable_without_javascript(store: Path, opened: Any):
    o = opened(run_dirs(store)[0] / "report.html", javascript=False)
    text = o.page.locator("body").inner_text()
    assert "ALLOW" in text and "train-rows" in text and "Parameters" in text
    assert o.page.locator("svg.plot").count() >= 1  # plots are static SVG


# -- a store ---------------------------------------------------------------------------------------------------------

def test_a_store_report_lists_every_run_sorts_filters_and_shows_the_blocked_one(store: Path, opened: Any,
                                                                              tmp_path: Path):
    out = tmp_path / "store.html"
    r = report(store / "runs", "-o", out, cwd=store)
    assert r.returncode == 0, r.stderr
    assert "3 run(s)" in r.stdout
    o = opened(out)
    o.check_clean()
    p = o.page
    rows = p.locator("#runs-table tbody tr")
    assert rows.count() == 3
    verdicts = sorted(p.locator("#runs-table tbody tr td:last-child").all_inner_texts())
    assert verdicts == ["ALLOW", "ALLOW", "BLOCKED"]
    assert "prevented at runtime" in p.locator("section.run", has_text="BLOCKED").first.inner_text()
    # sort by key parameters (the learning rates differ): ascending, then descending
    header = p.locator("#runs-table thead th", has_text="key parameters")
    header.locator("button").click()
    asc = p.locator("#runs-table tbody tr td:nth-child(7)").all_inner_texts()
    assert asc == sorted(asc, key=str.lower) and header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert p.locator("#runs-table tbody tr td:nth-child(7)").all_inner_texts() == asc[::-1]
    # filter: only the blocked run
    p.locator("input[data-filter]").fill("BLOCKED")
    visible = [t for t in p.locator("#runs-table tbody tr:not([hidden])").all_inner_texts()]
    assert len(visible) == 1 and "BLOCKED" in visible[0]
    assert "1 of 3" in p.locator("#runs-count").inner_text()
    # each run links to its section
    p.locator("input[data-filter]").fill("")
    link = p.locator("#runs-table tbody tr a").first
    assert p.locator(link.get_attribute("href")).count() == 1
    o.check_clean()


def test_compare_overlays_metrics_and_diffs_parameters_and_data(store: Path, opened: Any, tmp_path: Path):
    a, b, _ = run_dirs(store)
    out = tmp_path / "compare.html"
    r = report(a, b, "--compare", "-o", out, cwd=store)
    assert r.returncode == 0, r.stderr
    o = opened(out)
    o.check_clean()
    cmp = o.page.locator("#compare")
    lr = cmp.locator("tr", has_text="args.lr")
    assert lr.get_attribute("class") == "diff" and "differs" in lr.inner_text()
    overlay = cmp.locator("figure", has_text="training / loss").locator("svg.plot polyline")
    assert overlay.count() == 2
    r = report(a, "--compare", "-o", tmp_path / "one.html", cwd=store)
    assert r.returncode == 2 and "two runs or more" in r.stderr and "Traceback" not in r.stderr


# -- hostile documents -----------------------------------------------------------------------------------------------

def poison(value: Any, i: list[int]) -> Any:
    """Every string of a document with markup appended (ids and prefixes kept, so it still parses as PROV)."""
    if isinstance(value, dict):
        return {k: poison(v, i) if (k not in ("prov:type", "type") and not k.startswith("prov:")) or
                k == "prov:label" else v for k, v in value.items()}
    if isinstance(value, list):
        return [poison(v, i) for v in value]
    if isinstance(value, str):
        i[0] += 1
        return value + PWNED[i[0] % len(PWNED)]
    return value


@pytest.mark.foreign_prov
def test_markup_in_names_tags_params_and_reasons_is_inert(store: Path, opened: Any, tmp_path: Path):
    src = run_dirs(store)[2]  # the blocked run: decisions with reasons, tags, params
    doc = json.loads((src / "rank-0.prov.json").read_text())
    for section in ("entity", "activity", "agent"):
        doc[section] = {k: poison(v, [0]) for k, v in doc[section].items()}
    for rel in ("used", "wasGeneratedBy"):
        doc[rel] = {k: {a: poison(v, [1]) if a.startswith("p4t:") else v for a, v in body.items()}
                    for k, body in doc.get(rel, {}).items()}
    hostile = tmp_path / "hostile" / "rank-0.prov.json"
    hostile.parent.mkdir()
    hostile.write_text(json.dumps(doc))
    out = tmp_path / "hostile.html"
    r = report(hostile.parent, "-o", out, "--policy", "default", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    o = opened(out)
    p = o.page
    assert p.evaluate("() => window.__pwned") is None
    assert p.locator("#injected").count() == 0
    assert p.locator("script:not([type])").count() == 1  # the page's own, nothing injected
    text = p.locator("body").inner_text()
    assert PWNED[0] in text and "onerror" in text  # shown as text
    o.check_clean()


# -- the page's parts, without a browser -----------------------------------------------------------------------------

def test_decimation_keeps_every_extreme_and_drops_non_finite_values():
    steps = list(range(100_000))
    values = [float(i % 997) for i in steps]
    values[12_345] = 1e9
    values[54_321] = -1e9
    values[7] = float("nan")
    xs, ys = decimate(steps, values)
    assert len(xs) <= 1000 and xs == sorted(xs)
    assert max(ys) == 1e9 and min(ys) == -1e9 and all(y == y for y in ys)
    assert decimate([1, 2], [3.0, float("inf")]) == ([1], [3.0])
    assert ticks(0.0, 1.0)[0] == 0.0 and ticks(0.0, 1.0)[-1] == 1.0 and ticks(5.0, 5.0) == [5.0]


class Texts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_a_report_of_100k_points_is_under_2_mb_with_the_exact_values_embedded(tmp_path: Path):
    import prov4torch

    with prov4torch.start_run(experiment="big", run_name="long") as run:
        prov4torch.log_params({"note": PWNED[1]})
        for i in range(100_000):
            prov4torch.log_metric("loss", 1.0 / (1 + i), step=i)
    written = write_report([run.prov_path.parent], tmp_path / "big.html", graph=False)
    text = (tmp_path / "big.html").read_text()
    assert written.size < 2_000_000 and written.exact_bytes > 800_000  # every value inside, as float64
    assert "decimated for display" in text and "100,000 points" in text
    parser = Texts()
    parser.feed(text)
    assert "img" not in parser.tags  # the param's markup stayed text
    assert text.count("<script>") == 1


@pytest.mark.parametrize("args, message", [
    (["-o", "out.txt"], "ending in .html"),
    (["-o", "out.html", "--policy", "missing.toml"], "missing.toml"),
])
def test_report_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x.prov.json").write_text(json.dumps({"prefix": {}}))
    r = report(tmp_path / "runs", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.html").exists()


def test_a_metrics_sidecar_changed_after_the_run_is_not_plotted_as_the_runs(tmp_path: Path):
    import prov4torch

    with prov4torch.start_run(experiment="e", run_name="r") as run:
        for i in range(5):
            prov4torch.log_metric("loss", float(i), step=i)
    csv_file = run.prov_path.parent / "rank-0.metrics.csv"
    csv_file.write_text(csv_file.read_text().replace(",4.0", ",400.0"))
    write_report([run.prov_path.parent], tmp_path / "r.html", graph=False)
    text = (tmp_path / "r.html").read_text()
    # ("400" alone can occur in a sha256 on the page: the edited value is "400.0", and nothing is plotted)
    assert "changed after the run; not plotted" in text and "400.0" not in text
    assert "<details data-series" not in text and "<polyline" not in text


def test_signature_status_of_the_run_and_its_checkpoint_and_a_changed_byte(tmp_path: Path):
    import torch

    import prov4torch
    from prov4torch.evidence import keys

    keys.init_key()
    ckpt = tmp_path / "model.pt"
    with prov4torch.start_run(experiment="e", run_name="signed") as run:
        torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
        prov4torch.log_model(ckpt, name="m")
    run_dir = run.prov_path.parent
    write_report([run_dir], tmp_path / "ok.html", keys=keys.trusted_keys(), graph=False)
    text = (tmp_path / "ok.html").read_text()
    assert "NOT VERIFIED" not in text and text.count(">verified<") >= 2  # the attestation and the card
    data = bytearray(ckpt.read_bytes())
    data[-10] ^= 1
    ckpt.write_bytes(bytes(data))
    write_report([run_dir], tmp_path / "bad.html", keys=keys.trusted_keys(), graph=False)
    bad = (tmp_path / "bad.html").read_text()
    assert "NOT VERIFIED" in bad and "the file changed" in bad
    write_report([run_dir], tmp_path / "untrusted.html", keys=[], graph=False)
    assert "NOT VERIFIED" in (tmp_path / "untrusted.html").read_text()
