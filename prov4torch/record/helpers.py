"""Processes a recorded script starts that are not ranks: what they use, and what the policy decided there,
reaches the rank's record.

A ``multiprocessing`` child (fork, spawn or forkserver), an ``os.fork()``, a DataLoader worker is a *helper*
of the rank that started it:

* **fork**: the child inherits the run. At the fork it becomes a helper (``Run.become_helper``): its events
  are written at once (a helper may end with ``os._exit``, and the parent's writer thread and locks did not
  survive the fork) to ``helper-<pid>.of-<rank stem>.journal.jsonl`` in the run directory, its run-scoped
  dataset ids get a scope of their own, and it never writes the rank's document.
* **spawn / forkserver**: a fresh interpreter; under ``prov4torch run`` the run's ``sitecustomize``
  (``autolog.children``) starts a helper run in it, writing the same kind of file, gated by the same policy.

The rank, when it ends (and ``recover``, when it rebuilds a rank), reads its helpers' files: the datasets,
the usage and the policy decisions in them join the rank's record; a use the policy blocked in a helper ends
the run BLOCKED. A line that is not an event is counted (``p4t:journalSkippedLines``), never skipped silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..events import Dataset, DatasetDigest, Decision, Event, Usage, encode
from ..warn import warn
from .journal import read_journal

IMPORTED = (Dataset, DatasetDigest, Decision)  # what a helper's record adds to its rank's (and its usage)
MAX_HELPERS = 1000  # helper files read per rank


def helper_journal(run_dir: Path, stem: str, pid: int) -> Path:
    return run_dir / f"helper-{pid}.of-{stem}.journal.jsonl"


def helper_journals(run_dir: Path, stem: str) -> list[Path]:
    try:
        found = sorted(run_dir.glob(f"helper-*.of-{stem}.journal.jsonl"))
    except OSError:
        return []
    return found[:MAX_HELPERS]


@dataclass
class HelperRecords:
    """What a rank's helpers recorded: events that join its record, the data they consumed (dataset id, role) ->
    totals (summed over helpers), and the lines that were not events."""

    events: list[Event] = field(default_factory=list)
    usage: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    bad_lines: int = 0

    @property
    def blocked(self) -> bool:
        """Whether a helper's policy decision blocked a use (an enforced deny)."""
        return any(isinstance(e, Decision) and e.enforced_deny for e in self.events)


def helper_records(run_dir: Path, stem: str) -> HelperRecords:
    """What the helpers of the rank ``stem`` in ``run_dir`` recorded (see the module docstring)."""
    out = HelperRecords()
    for path in helper_journals(run_dir, stem):
        try:
            found, skipped = read_journal(path)
        except Exception:  # noqa: BLE001 - unreadable (a FIFO planted there, say): counted, never read
            out.bad_lines += 1
            continue
        out.events += [e for e in found if isinstance(e, IMPORTED)]
        out.bad_lines += skipped
        last: dict[tuple[str, str], dict[str, int]] = {}  # a helper's usage events are running totals
        for e in found:
            if isinstance(e, Usage):
                last.update({(e.id, role): totals for role, totals in e.usage.items()})
        for key, totals in last.items():
            summed = out.usage.setdefault(key, {})
            for k, v in totals.items():
                summed[k] = summed.get(k, 0) + v
    return out


class HelperSink:
    """A forked helper's journal: every event appended and written at once, opened at the first one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._warned = False

    def write(self, event: Event) -> None:
        line = (json.dumps(encode(event), allow_nan=False, default=str) + "\n").encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0),
                                   0o644)
            os.write(self._fd, line)
        except OSError as exc:  # the helper's record is lost, never its work
            if self._fd is None or not self._warned:
                self._warned = True
                warn(f"prov4torch: this helper process cannot write {self.path}: {exc.strerror or exc}; what it "
                     "uses is missing from the run's record")
