"""`prov4torch report`: page size and generation time for a run of 100k metric points and for a ~50 MB lineage
document, and the page's load time in headless Chromium (when playwright and Chromium are here).

    python benchmarks/bench_report.py [--points 100000] [--runs 4300]

Targets (issue 26): each page <= 2 MB and generated in <= 5 s. Each generation runs in a fresh process (as the
command does), so the time includes reading the documents.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

MAKE_RUN = """
import sys, prov4torch
with prov4torch.start_run(experiment="bench", run_name="long", out_dir=sys.argv[1]) as run:
    prov4torch.log_params({"lr": 0.1})
    for i in range(int(sys.argv[2])):
        prov4torch.log_metric("loss", 1.0 / (1 + i) + (i % 7) * 1e-3, step=i)
print(run.prov_path.parent)
"""

TIME_REPORT = """
import json, sys, time
t = time.perf_counter()
from prov4torch.audit.sections import write_report
w = write_report([sys.argv[1]], sys.argv[2], graph=False)
print(json.dumps({"seconds": time.perf_counter() - t, "size": w.size, "runs": w.runs, "exact": w.exact_bytes}))
"""


def timed(target: str, out: Path) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", TIME_REPORT, target, str(out)], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout)


def load_ms(page: Path) -> float | None:
    exe = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if exe is None:
        return None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        tab = browser.new_page()
        t = time.perf_counter()
        tab.goto(page.resolve().as_uri(), wait_until="load")
        ms = (time.perf_counter() - t) * 1000
        browser.close()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=4300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = subprocess.run([sys.executable, "-c", MAKE_RUN, str(root / "store"), str(args.points)],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        doc = root / "lineage.json"
        subprocess.run([sys.executable, str(HERE / "gen_lineage_doc.py"), str(doc), "--runs", str(args.runs)],
                       check=True, capture_output=True)
        for name, target in ((f"run of {args.points:,} metric points", run_dir),
                             (f"lineage document of {doc.stat().st_size / 1e6:.1f} MB ({args.runs:,} runs)", str(doc))):
            page = root / "page.html"
            got = timed(target, page)
            ms = load_ms(page)
            ok = got["size"] <= 2_000_000 and got["seconds"] <= 5.0
            loaded = f"{ms:.0f} ms to load in Chromium" if ms is not None else "no browser here"
            print(f"{name}: {got['size'] / 1e6:.2f} MB (exact values {got['exact'] / 1e6:.2f} MB), "
                  f"{got['seconds']:.2f} s to generate, "
                  f"{loaded}"
                  f" -- target <= 2 MB and <= 5 s: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
