"""Rebuild PROV-JSON from the journal and metrics file a dead process left behind.

``recover(DIR)`` handles every rank in the run directory: a rank that ended cleanly
and has its ``rank-K.prov.json`` is left alone; any other gets a PROV-JSON rebuilt
from its journal (status INCOMPLETE when no end record was written, else the status
it recorded) and its metrics file. Running it again writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import provjson
from ..errors import JournalError
from ..events import Usage, valid_time
from .document import write_rank
from .helpers import helper_records
from .journal import finish_spool, read_journal, spool_path, summarize_metrics
from .replay import RunRecord, Sidecar

JOURNAL_SUFFIX = ".journal.jsonl"


@dataclass(frozen=True)
class Recovered:
    """What ``recover`` did for one rank: ``action`` is "complete" (left alone) or "rebuilt"."""

    rank_file: Path
    action: str
    status: str
    points: int
    skipped_lines: int
    error: str | None = None  # set when only a minimal document could be rebuilt (and why)


def journals(run_dir: Path) -> list[Path]:
    return sorted([*run_dir.glob(f"rank-*{JOURNAL_SUFFIX}"), *run_dir.glob(f"launcher{JOURNAL_SUFFIX}")])


def recover(run_dir: str | Path) -> list[Recovered]:
    """Recover every rank of one run directory (see module docstring)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise JournalError(f"{d} is not a directory: give the directory of one run (<out>/<experiment>/<run_id>)")
    found = journals(d)
    if not found:
        raise JournalError(
            f"{d} is not a prov4torch run directory (no rank-*{JOURNAL_SUFFIX} in it): "
            "give the directory of one run (<out>/<experiment>/<run_id>)"
        )
    return [_recover_rank(d, j) for j in found]


def _recover_rank(d: Path, journal: Path) -> Recovered:
    stem = journal.name[: -len(JOURNAL_SUFFIX)]
    prov_path = d / f"{stem}.prov.json"
    events, bad = read_journal(journal)
    helpers = helper_records(d, stem)  # what the processes it started recorded (``record.helpers``)
    record = RunRecord.replay([*events, *helpers.events])
    for (did, role), totals in helpers.usage.items():
        own = record.usage.get(record.resolve(did), {}).get(role, {})
        record.apply(Usage(id=did, usage={role: {k: own.get(k, 0) + totals.get(k, 0) for k in {*own, *totals}}}))
    bad += helpers.bad_lines
    if record.start is None:
        raise JournalError(f"{journal}: no start record; it is empty or not a prov4torch journal")
    ended = record.end.status if record.end is not None else "FINISHED"
    if record.end is not None and prov_path.exists():
        return Recovered(prov_path, "complete", ended, -1, bad)
    metrics_path = d / f"{stem}.metrics.csv"
    try:
        finish_spool(metrics_path)  # points a fast loop left in the binary spool become rows first
    except OSError as exc:
        raise JournalError(f"{spool_path(metrics_path)}: {exc.strerror or exc}; move it away to recover "
                           "without the points it holds") from exc
    try:
        stats, csv_sha, points = summarize_metrics(metrics_path)
    except OSError:
        stats, csv_sha, points = {}, "", 0
    last_metric = max((t for s in stats.values() if (t := s.last_time) is not None and valid_time(t)), default=None)
    if last_metric is not None:
        record.last_time = max(record.last_time or last_metric, last_metric)
    sidecars = {}
    if metrics_path.exists() and csv_sha:
        sidecars["metrics"] = Sidecar(metrics_path.name, csv_sha, {"points": points})
    status = None if record.end is not None else "INCOMPLETE"
    extra = provjson.attributes({"p4t:recovered": True, "p4t:journalSkippedLines": bad or None})
    doc, error = write_rank(record, stats.values(), sidecars, prov_path, journal,
                            status_override=status, extra_run_attrs=extra)
    if doc is None:
        raise JournalError(error or f"could not write {prov_path}")
    return Recovered(prov_path, "rebuilt", status or ended, points, bad, error)
