"""log_metric hot-path cost: median ns per call vs. the floor of appending a tuple to a list.

    python benchmarks/bench_log_metric.py [--calls 100000]

Calls are timed in blocks of 100 (perf_counter_ns per call would cost more than the
call); the median of the block means is reported, and ('paired') the median ratio of a block of calls to the
block of the call floor timed just before it, the writer draining between every 50 pairs (outside the timing:
at full speed the hot path outruns the writer, which then throttles it; --no-drain to see that).
Targets (issue 2): <= 500 ns median, within 10x of the floor (an inline append of a tuple); issue 15:
within 2x of the call floor (a function that appends a (name, value, step, time_ns()) tuple to a list);
issue 28: paired <= 1.0x the call floor, and **sustained** <= 1.5x: --sustained calls (700,000) back to back with
the writer running (draining, spooling, writing CSV text when it can), against the same number of call-floor calls,
three interleaved rounds, the median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import prov4torch

BLOCK = 100


def timed_blocks(fn, calls: int) -> list[float]:
    out = []
    perf = time.perf_counter_ns
    for b in range(calls // BLOCK):
        t0 = perf()
        fn(b)
        out.append((perf() - t0) / BLOCK)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--sustained", type=int, default=700_000)
    ap.add_argument("--no-drain", dest="drain", action="store_false",
                    help="paired blocks: let the writer fall behind (logging at full speed, ~2M points/s, is faster "
                         "than it writes: the hot path then waits for it now and then, as documented)")
    args = ap.parse_args()

    sink: list[tuple] = []
    append = sink.append

    def floor_block(b: int) -> None:
        base = b * BLOCK
        for i in range(base, base + BLOCK):
            append(("loss", 0.5, i))

    time_ns = time.time_ns

    def record(name: str, value: float, step: int) -> None:  # issue 15's floor: a call that appends a tuple
        append((name, value, step, time_ns()))

    def call_floor_block(b: int) -> None:
        base = b * BLOCK
        for i in range(base, base + BLOCK):
            record("loss", 0.5, i)

    log_metric = prov4torch.log_metric

    def api_block(b: int) -> None:
        base = b * BLOCK
        for i in range(base, base + BLOCK):
            log_metric("loss", 0.5, i)

    def api_auto_step_block(b: int) -> None:
        for _ in range(BLOCK):
            log_metric("loss", 0.5)

    with tempfile.TemporaryDirectory() as tmp, prov4torch.start_run(out_dir=tmp) as run:
        method = run.log_metric

        def method_block(b: int) -> None:
            base = b * BLOCK
            for i in range(base, base + BLOCK):
                method("loss", 0.5, i)

        # warm up, then interleave the measurements so drift hits all equally
        for fn in (floor_block, call_floor_block, api_block, method_block, api_auto_step_block):
            timed_blocks(fn, 10 * BLOCK)
        results: dict[str, list[float]] = {"floor": [], "call floor": [], "prov4torch.log_metric": [],
                                           "Run.log_metric": [], "log_metric, no step": []}
        for _ in range(10):
            results["floor"] += timed_blocks(floor_block, args.calls // 10)
            results["call floor"] += timed_blocks(call_floor_block, args.calls // 10)
            results["prov4torch.log_metric"] += timed_blocks(api_block, args.calls // 10)
            results["Run.log_metric"] += timed_blocks(method_block, args.calls // 10)
            results["log_metric, no step"] += timed_blocks(api_auto_step_block, args.calls // 10)
            sink.clear()
        # paired: each block of calls right after a block of the call floor, the ratio per pair (drift between
        # rounds, the writer thread's turns and frequency changes hit both members of a pair alike)
        paired: dict[str, list[float]] = {name: [] for name in list(results)[2:]}
        blocks = {"prov4torch.log_metric": api_block, "Run.log_metric": method_block,
                  "log_metric, no step": api_auto_step_block}
        perf = time.perf_counter_ns
        for b in range(args.calls // BLOCK):
            for name, fn in blocks.items():
                t0 = perf()
                call_floor_block(b)
                t1 = perf()
                fn(b)
                t2 = perf()
                paired[name].append((t2 - t1) / max(t1 - t0, 1))
            if b % 50 == 49:  # outside the timed blocks: the writer drains what was logged (its own cost is
                sink.clear()  # benchmarks/bench_writer.py's; here it would make the hot path wait for it)
                if args.drain:
                    run.flush()
        sustained = []
        for _ in range(3):  # back to back, the writer running as it will (nothing drained outside the timing)
            sink.clear()
            t0 = perf()
            for i in range(args.sustained):
                record("loss", 0.5, i)
            t1 = perf()
            sink.clear()
            run.flush()
            t2 = perf()
            for i in range(args.sustained):
                log_metric("loss", 0.5, i)
            t3 = perf()
            sustained.append((t3 - t2) / (t1 - t0))
            run.flush()
    floor, call_floor = statistics.median(results["floor"]), statistics.median(results["call floor"])
    print(f"{'what':28} {'median ns':>10} {'p90 ns':>8} {'x floor':>8} {'x call floor':>13} {'paired':>7}")
    for name, times in results.items():
        med = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        pair = f"{statistics.median(paired[name]):7.2f}" if name in paired else ""
        print(f"{name:28} {med:10.0f} {p90:8.0f} {med / floor:8.1f} {med / call_floor:13.2f} {pair}")
    print(f"sustained, {args.sustained:,} calls back to back, x call floor: "
          f"{' '.join(f'{r:.2f}' for r in sustained)} (median {statistics.median(sustained):.2f})")


if __name__ == "__main__":
    main()
