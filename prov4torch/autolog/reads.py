"""Files the script reads as data by itself -- ``np.memmap``/``np.load``/pandas/pyarrow readers, and ``open()``
under a ``--data`` directory -- each recorded as a dataset named by its content, in the role its use shows (the
rules of ``record.roles``, for files):

* read with gradients on: ``input`` at first; when an optimizer steps after the read, the file was training
  data -- attached again as ``training`` (the policy checks that use then: a deny stops the step's caller) and
  its reads counted there, so ``input`` is left with none and is not written; a file read with gradients on
  that no step ever followed was evaluated: ``evaluation`` at the run's end. Training data read again under
  ``torch.no_grad()`` (a training-loss estimate) is still training data;
* read under ``torch.no_grad()`` / ``inference_mode`` (an evaluation loop): ``evaluation`` -- testing data, unless
  an optimizer step follows the read (the loop goes on training, so the metric could steer it: an early stop, a
  best-checkpoint choice, nanoGPT's ``estimate_loss``): then it was validation data, attached again as
  ``validation`` (checked by the policy then), and so is every later read of it without gradients;
* read with gradients on before the run's first optimizer step (a corpus tokenized whole at start, as
  pytorch/examples' word_language_model does with ``train.txt``/``valid.txt``/``test.txt``), a file whose name
  -- or, in a ``--data`` directory, whose folders there (``data/test/``) -- says its split (``split_of``:
  ``valid``, ``val``, ``dev``, ``test``...) has that role; nothing else is known
  of data loaded into memory before training starts. Once training has begun, behaviour decides: a file read
  with gradients on and then stepped on is training data whatever its name.

Counts are reads (``p4t:reads``), per file and role. A ``--data`` directory is recorded file by file for its
first ``MAX_FILES_PER_DIR`` files; past that (an image folder), the directory as one dataset, so a run over a
million files does not record a million datasets. A process the script forks (not a DataLoader worker, whose
dataset stands for its reads) records its own reads, as a helper of the run.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import PolicyViolation
from ..record.datapaths import in_loader_worker
from ..warn import warn
from .scope import record_inside

if TYPE_CHECKING:
    from ..record.run import Run

MAX_FILES_PER_DIR = 256
TRAINED = frozenset({"training", "fine-tuning", "input"})  # roles of data a step may have trained on


class FileReads:
    """The data files one run read, and the role each turned out to have."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.prefixes: list[tuple[str, Any]] = []  # the --data directories (``OpenWatch`` sets them)
        self._fresh()

    def _fresh(self) -> None:
        """Empty state, for this process (a forked helper starts its own: its records go to its own journal)."""
        self.pid = os.getpid()
        self.lock = threading.RLock()  # a new one: a lock held by another thread at the fork stays held
        self.ids: dict[tuple[str, str], str] = {}  # (path, role) -> dataset id
        self.reads: dict[tuple[str, str], int] = {}  # (path, role) -> reads counted under it
        self.trained: set[str] = set()  # files an optimizer step followed
        # tagged files the script opened itself, read with gradients on: judged when a step follows, unless a dataset
        # attached by then stands for them (``tagged``)
        self.deferred: dict[str, int] = {}
        self.pending: set[str] = set()  # read with gradients on since the last step
        self.evaluated: set[str] = set()  # read without gradients since the last step (not training data)
        self.validating: set[str] = set()  # evaluated files a step followed: every later evaluation is validation
        self.steps = 0  # optimizer steps seen: before the first, a file's name may say its split
        self.per_dir: dict[str, set[str]] = {}  # --data directory -> its files recorded one by one
        self.folded: set[str] = set()  # --data directories recorded whole past the limit
        self.folders: dict[str, str] = {}  # a --data file -> its folders from the directory's parent (split names)

    def read(self, path: str) -> None:
        """One read of ``path`` (a file, or a --data directory standing for its files)."""
        if self.run.ended:
            return
        if os.getpid() != self.pid:
            if in_loader_worker():
                return  # a DataLoader worker's reads: its dataset stands for them
            self._fresh()
        torch = sys.modules.get("torch")
        grad = torch is None or torch.is_grad_enabled()
        with self.lock:
            if self.prefixes and path not in self.folders:  # a file in a --data folder: its folders there
                directory = under(path, self.prefixes)  # may name its split (by open() or a reader)
                if directory is not None:
                    self.folders[path] = os.path.dirname(os.path.relpath(path, os.path.dirname(directory)))
            role = self._role(path, grad)
            self._count(path, role, 1)
            if role == "input":
                self.pending.add(path)
            elif role == "evaluation":
                self.evaluated.add(path)

    def tagged(self, path: str) -> None:
        """A read of a file tags are declared for, opened by the script itself (``open()``): data, in the role its
        use shows. Read with gradients on and no split in its name, what it is for is not known yet: a dataset of
        its content may come to stand for it (the file read in a ``Dataset``'s ``__init__``, a dataset of its
        strings, one naming its path), or the script trains on what it read (karpathy's ``bigram.py`` encodes
        ``input.txt`` into a tensor). So it is judged at the next optimizer step, as training data, unless such a
        dataset was attached by then (or any data to train on: ``_undeferred``); at the run's end, as evaluation
        data."""
        if self.run.ended or (os.getpid() != self.pid and in_loader_worker()):
            return
        torch = sys.modules.get("torch")
        if os.getpid() == self.pid and (torch is None or torch.is_grad_enabled()) and self._role(path, True) == "input":
            with self.lock:
                self.deferred[path] = self.deferred.get(path, 0) + 1
            return
        self.read_under(path, os.path.dirname(path))

    def _undeferred(self) -> list[tuple[str, int]]:
        """The deferred reads no attached dataset stands for (taken): none if the run attached data to train on
        (a DataLoader's, a dataset of the script's own) other than such files -- the step trained on that, and
        which dataset a file went into is not known (pytorch's MNIST example parses its gzip files into tensor
        datasets) -- else those no dataset names or was made of."""
        with self.lock:
            deferred, self.deferred = self.deferred, {}
        files = set(self.ids.values())
        inputs = self.run.inputs
        if any(roles & TRAINED for did, roles in list(inputs.roles.items()) if did not in files):
            return []
        represented = inputs.datasets.represented
        return [(path, n) for path, n in sorted(deferred.items())
                if path not in represented and os.path.realpath(path) not in represented]

    def _role(self, path: str, grad: bool) -> str:
        if path in self.trained:
            return "training"
        if grad and not self.steps and path not in self.pending:
            named = split_of(path, self.folders.get(path, ""))  # loaded before training began: its name
            if named is not None:
                return named
        if grad or path in self.pending:
            return "input"
        return "validation" if path in self.validating else "evaluation"

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
        """An optimizer step: every file read with gradients on since the last one was training data, every file
        read without them validation data (checked by the policy now: a deny propagates from the step; any other
        failure warns)."""
        self.steps += 1
        if self.pending or self.evaluated or self.deferred:
            record_inside(self._stepped, "the data files read before an optimizer step")

    def _stepped(self) -> None:
        for path, n in self._undeferred():  # trained on what was read from them (checked now: may raise)
            with self.lock:
                self.trained.add(path)
                self._count(path, "training", n)
        with self.lock:
            pending, self.pending = sorted(self.pending), set()
            evaluated, self.evaluated = sorted(self.evaluated), set()
            for path in pending:
                self.trained.add(path)
                self._move(path, "input", "training")
            for path in evaluated:  # training data's loss, estimated before its first step, is training's
                if path not in self.trained:
                    self.validating.add(path)
                self._move(path, "evaluation", "training" if path in self.trained else "validation")

    def settle(self) -> None:
        """The run's end: files read with gradients on and never stepped on were evaluated."""
        with self.lock:
            pending, self.pending = sorted(self.pending), set()
        moves: list[tuple[str, Callable[[], None]]] = [
            (p, functools.partial(self._move, p, "input", "evaluation")) for p in pending]
        moves += [(p, functools.partial(self._count, p, "evaluation", n)) for p, n in self._undeferred()]
        for path, move in moves:
            try:
                record_inside(move, f"the data file {path}")
            except PolicyViolation:
                continue  # recorded as a decision; the run is ending anyway

    def _move(self, path: str, old: str, new: str) -> None:
        n = self.reads.get((path, old), 0)
        if not n:
            return
        self._count(path, new, n)
        self.reads[(path, old)] = 0
        self.run.count_usage(self.ids[(path, old)], old, reads=-n)


_SPLITS = {"val": "validation", "valid": "validation", "validation": "validation", "dev": "validation",
           "test": "testing", "testing": "testing"}


def split_of(path: str, folders: str = "") -> str | None:
    """The split a data file's name says it holds -- ``valid.txt``, ``val.bin``, ``test-00000.parquet``,
    ``wiki.test.tokens`` -- or, for a file in a ``--data`` directory, its folders there (``folders``: the path from
    the directory's parent: ``data/test/part-0.csv``, ``test/d.csv`` when ``--data test``), as a role
    (``validation``, ``testing``); None for anything else (training data, no split named, or two named). Only
    whole words count (``contest.csv`` names none); folders above the ``--data`` directory never do."""
    words = set(re.split(r"[^a-z]+", f"{folders} {os.path.basename(path)}".lower()))
    found = {_SPLITS[w] for w in words if w in _SPLITS}
    return found.pop() if len(found) == 1 and "train" not in words else None


def under(path: str, prefixes: list[tuple[str, Any]]) -> str | None:
    """The --data directory ``path`` is in, if any."""
    for prefix, d in prefixes:
        if path.startswith(prefix):
            return str(d)
    return None
