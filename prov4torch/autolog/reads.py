"""Files the script reads as data by itself -- ``np.memmap``/``np.load``/pandas/pyarrow readers, and ``open()``
under a ``--data`` directory -- each recorded as a dataset named by its content, in the role its use shows:

* read under ``torch.no_grad()`` / ``inference_mode`` (an evaluation loop): ``evaluation``;
* read with gradients on: ``input`` at first; when an optimizer steps after the read, the file was training
  data -- attached again as ``training`` (the policy checks that use then: a deny stops the step's caller) and
  its reads counted there, so ``input`` is left with none and is not written; a file read with gradients on
  that no step ever followed was evaluated: ``evaluation`` at the run's end.

Counts are reads (``p4t:reads``), per file and role. A ``--data`` directory is recorded file by file for its
first ``MAX_FILES_PER_DIR`` files; past that (an image folder), the directory as one dataset, so a run over a
million files does not record a million datasets.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..errors import PolicyViolation
from ..warn import warn
from .scope import record_inside

if TYPE_CHECKING:
    from ..record.run import Run

MAX_FILES_PER_DIR = 256


class FileReads:
    """The data files one run read, and the role each turned out to have."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.ids: dict[tuple[str, str], str] = {}  # (path, role) -> dataset id
        self.reads: dict[tuple[str, str], int] = {}  # (path, role) -> reads counted under it
        self.trained: set[str] = set()  # files an optimizer step followed
        self.pending: set[str] = set()  # read with gradients on since the last step
        self.per_dir: dict[str, set[str]] = {}  # --data directory -> its files recorded one by one
        self.folded: set[str] = set()  # --data directories recorded whole past the limit

    def read(self, path: str) -> None:
        """One read of ``path`` (a file, or a --data directory standing for its files)."""
        if self.run.ended or os.getpid() != self.pid:  # a DataLoader worker's reads: its dataset stands for them
            return
        torch = sys.modules.get("torch")
        grad = torch is None or torch.is_grad_enabled()
        role = "training" if path in self.trained else "input" if grad else "evaluation"
        with self.lock:
            self._count(path, role, 1)
            if role == "input":
                self.pending.add(path)

    def read_under(self, path: str, directory: str) -> None:
        """A read of ``path`` in ``directory`` (a ``--data`` directory, an image's folder): the file itself, or
        past the per-directory limit the directory."""
        with self.lock:
            files = self.per_dir.setdefault(directory, set())
            if path not in files and len(files) >= MAX_FILES_PER_DIR:
                if directory not in self.folded:
                    self.folded.add(directory)
                    warn(f"{directory}: more than {MAX_FILES_PER_DIR} files read as data; the rest are recorded as "
                         "the directory (one dataset, its content digest)")
                target = directory
            else:
                files.add(path)
                target = path
        self.read(target)

    def _count(self, path: str, role: str, n: int) -> None:
        key = (path, role)
        did = self.ids.get(key)
        if did is None:
            did = self.ids[key] = self.run.log_dataset(path, role=role)  # checked by the policy: may raise
        self.reads[key] = self.reads.get(key, 0) + n
        self.run.count_usage(did, role, reads=n)

    def stepped(self) -> None:
        """An optimizer step: every file read with gradients on since the last one was training data (checked by
        the policy now: a deny propagates from the step; any other failure warns)."""
        if self.pending:
            record_inside(self._stepped, "the data files read before an optimizer step")

    def _stepped(self) -> None:
        with self.lock:
            pending, self.pending = sorted(self.pending), set()
            for path in pending:
                self.trained.add(path)
                self._move(path, "input", "training")

    def settle(self) -> None:
        """The run's end: files read with gradients on and never stepped on were evaluated."""
        with self.lock:
            pending, self.pending = sorted(self.pending), set()
        for path in pending:
            try:
                record_inside(lambda path=path: self._move(path, "input", "evaluation"),  # type: ignore[misc]
                              f"the data file {path}")
            except PolicyViolation:
                continue  # recorded as a decision; the run is ending anyway

    def _move(self, path: str, old: str, new: str) -> None:
        n = self.reads.get((path, old), 0)
        if not n:
            return
        self._count(path, new, n)
        self.reads[(path, old)] = 0
        self.run.count_usage(self.ids[(path, old)], old, reads=-n)


def under(path: str, prefixes: list[tuple[str, Any]]) -> str | None:
    """The --data directory ``path`` is in, if any."""
    for prefix, d in prefixes:
        if path.startswith(prefix):
            return str(d)
    return None
