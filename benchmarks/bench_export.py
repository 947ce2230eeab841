"""`prov4torch export`: time and peak memory per format, each in a fresh process (as the command runs), for a run
directory (the MNIST example's, or any you give) and for a ~50 MB lineage document (gen_lineage_doc.py).

    python benchmarks/bench_export.py [--run RUN_DIR] [--runs 4300] [--formats cyclonedx,spdx,...]

Without --run, the MNIST example is run once (UCI digits fallback, 1 epoch) under `prov4torch run`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMATS = ("cyclonedx", "spdx", "openlineage", "prov-o", "prov-o-turtle", "prov-o-jsonld", "annex-iv")
OUT = {"annex-iv": "pack", "openlineage": "events.jsonl"}


def timed(target: str, fmt: str, out: Path) -> str:
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", sys.executable, "-m", "prov4torch_cli.app", "export",
                        target, "--format", fmt, "-o", str(out)], capture_output=True, text=True, check=False)
    m = re.search(r"TIME ([\d.]+) (\d+)", r.stderr)
    if r.returncode != 0 or m is None:
        return f"failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.is_dir() else out.stat().st_size
    return f"{float(m.group(1)):6.2f} s, peak {int(m.group(2)) / 1024:6.0f} MB, {size / 1e6:6.2f} MB written"


def mnist(root: Path) -> str:
    subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "run", "--out", str(root / "runs"), "--experiment",
                    "mnist", "--run-id", "bench", str(HERE.parent / "examples" / "mnist" / "train.py"),
                    "--data-dir", str(root / "none"), "--epochs", "1", "--out", str(root / "ckpt")],
                   check=True, capture_output=True)
    return str(root / "runs" / "mnist" / "bench")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--runs", type=int, default=4300)
    ap.add_argument("--formats", default=",".join(FORMATS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = args.run or mnist(root)
        doc = root / "lineage.json"
        subprocess.run([sys.executable, str(HERE / "gen_lineage_doc.py"), str(doc), "--runs", str(args.runs)],
                       check=True, capture_output=True)
        for label, target in (("run", run), (f"{doc.stat().st_size / 1e6:.0f} MB document", str(doc))):
            for fmt in args.formats.split(","):
                if fmt == "annex-iv" and target == str(doc):
                    continue  # a pack of 4,300 runs' report is the report benchmark's business
                print(f"{label:>16} {fmt:>14}: {timed(target, fmt, root / f'{label[:3]}-{OUT.get(fmt, fmt)}')}",
                      flush=True)


if __name__ == "__main__":
    main()
