"""The lineage index on both backends (issue 29): bulk insert of 10^6 lineage rows (``index rebuild`` of a
store's cards), a depth-50 upstream query, and 16 concurrent writer processes (throughput, failures).

    python benchmarks/bench_index.py [--postgres URL] [--rows 1000000]

Without --postgres it starts a throwaway PostgreSQL server (Debian's initdb/pg_ctl; as the postgres user when
run as root) on a Unix socket and stops it at the end. Absolute times vary with the machine; the figures to
compare are the two backends side by side in one invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prov4torch.governance.index import LineageIndex

WRITER = """
import sys
from pathlib import Path
from prov4torch.governance.index import LineageIndex
url, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
index = LineageIndex(Path(sys.argv[4]), url=url)
for i in range(n):
    model = f"p4t:model/w{me}-{i}"
    index.put({"model": model, "sha256": f"{me:08x}{i:056x}", "derivations": [[model, f"p4t:dataset/d{me}"]]})
"""


def cards(rows: int, depth: int = 50) -> list[dict]:
    """Fine-tune chains of ``depth`` models until ``rows`` derivation rows (each card states its own derivation
    only, so the upstream query must recurse -- real cards also carry their bases' derivations)."""
    out: list[dict] = []
    total, chain = 0, 0
    while total < rows:
        for i in range(depth):
            me, base = f"p4t:model/c{chain}-{i}", (f"p4t:model/c{chain}-{i - 1}" if i else f"p4t:dataset/d{chain}")
            out.append({"model": me, "sha256": f"{chain:032x}{i:032x}", "derivations": [[me, base]]})
            total += 1
        chain += 1
    return out


@contextlib.contextmanager
def postgres():
    def binary(name: str) -> str:
        return shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1]

    base = Path(tempfile.mkdtemp(prefix="p4t-pg-"))
    base.chmod(0o777)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_user, binary("initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, binary("pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-o",
                    f"-k {base} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={base}"
    finally:
        subprocess.run([*as_user, binary("pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def bench(url: str, store: Path, all_cards: list[dict], writers: int, per_writer: int) -> dict[str, float]:
    index = LineageIndex(store, url=url)
    t = time.perf_counter()
    index.replace(all_cards)
    bulk = time.perf_counter() - t
    last = all_cards[49]["model"]
    t = time.perf_counter()
    for _ in range(20):
        up = index.upstream(last)
    query = (time.perf_counter() - t) / 20
    assert len(up) == 50, len(up)
    index.replace([])
    script = store / "w.py"
    script.write_text(WRITER)
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(script), url, str(me), str(per_writer), str(store)],
                              stderr=subprocess.PIPE, text=True) for me in range(writers)]
    failed = sum(p.wait() != 0 for p in procs)
    conc = time.perf_counter() - t
    got = index.counts()[0]
    return {"bulk_s": bulk, "query_ms": query * 1000, "writers_s": conc, "writes_per_s": writers * per_writer / conc,
            "failed_writers": failed, "lost": writers * per_writer - got}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--per-writer", type=int, default=200)
    a = ap.parse_args()
    all_cards = cards(a.rows)
    print(f"{len(all_cards)} cards, {sum(len(c['derivations']) for c in all_cards)} derivation rows in the cards")
    with tempfile.TemporaryDirectory() as tmp, (contextlib.nullcontext(a.postgres) if a.postgres else postgres()) as pg:
        for name, url in (("sqlite", ""), ("postgresql", pg)):
            store = Path(tmp) / name
            store.mkdir()
            r = bench(url, store, all_cards, a.writers, a.per_writer)
            print(f"{name:10s} bulk {r['bulk_s']:.1f} s | depth-50 upstream {r['query_ms']:.2f} ms | "
                  f"{a.writers} writers x {a.per_writer}: {r['writers_s']:.1f} s, {r['writes_per_s']:.0f} cards/s, "
                  f"failed writers {r['failed_writers']}, lost {r['lost']}")


if __name__ == "__main__":
    main()
