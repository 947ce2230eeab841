"""Files the script opens itself: data directories named with ``--data``, and checkpoints that travel
through an in-memory buffer.

* ``prov4torch run --data DIR``: each file the script opens for reading under ``DIR`` (``open()``,
  ``Path.open()``, fsspec's local files) is a dataset of the run, named by its content, in the role its use
  shows (``autolog.reads``); past ``reads.MAX_FILES_PER_DIR`` files, ``DIR`` as one dataset.
* a text file the script opens for reading that a tags file (or Croissant, a card) names is data, in the role its
  use shows, as under ``--data``; its strings carry those tags into the datasets made of them (``record.texts``);
* ``torch.save(obj, io.BytesIO())`` followed by writing the bytes to a file (Lightning through fsspec, many
  scripts by hand): the buffer's digest and what it held are noted at the save; files the script then opens
  for binary writing are remembered, and when the run ends the one whose bytes are the buffer's is recorded
  as that checkpoint (or run state). The reverse, ``torch.load(io.BytesIO(f.read()))``: the buffer's digest
  is matched against the files the script opened for binary reading, and the file is recorded as loaded.

One wrapper of ``open``/``io.open`` serves both; it returns exactly what the original returns (the same
object), and does nothing more than a set lookup unless ``--data`` is given or a buffer is pending.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import inspect
import io
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import env
from ..governance.declared import DECLARED
from ..record.checkpoints import classify
from ..record.datapaths import DataPaths, in_loader_worker
from ..safefs import file_sha256
from .reads import FileReads, under
from .scope import Patcher, busy, record_inside, record_once

if TYPE_CHECKING:
    from ..record.run import Run

MAX_PENDING = 64  # buffers whose destination is still unknown
MAX_CANDIDATES = 4096  # files opened for binary writing / reading, remembered for matching


def buffer_digest(buf: Any) -> tuple[str, int] | None:
    """sha256 and size of an in-memory binary buffer (``BytesIO``), without copying it."""
    getbuffer = getattr(buf, "getbuffer", None)
    if getbuffer is None:
        return None
    try:
        with getbuffer() as view:
            return hashlib.sha256(view).hexdigest(), view.nbytes
    except (BufferError, ValueError, TypeError):
        return None


def _file_sha256(path: str) -> str | None:
    try:
        return file_sha256(path)  # by fd (the open() hook lets an fd by), never a FIFO
    except OSError:
        return None


class OpenWatch:
    """The ``open()`` hook of one run (see the module docstring)."""

    active: OpenWatch | None = None

    def __init__(self, run: Run, reads: FileReads) -> None:
        self.run = run
        self.reads = reads
        dirs = [Path(d).resolve() for d in (env.get(env.DATA_DIRS) or "").split(os.pathsep) if d]
        self.prefixes = [(str(d) + os.sep, d) for d in dirs]
        reads.prefixes = self.prefixes  # a reader's file (numpy, pandas) in one of them: its folders name its split
        self.pending: OrderedDict[str, tuple[int, str]] = OrderedDict()  # sha256 -> (size, kind) saved to a buffer
        self.written: OrderedDict[str, None] = OrderedDict()  # files opened for binary writing since
        self.read: OrderedDict[str, None] = OrderedDict()  # files opened for binary reading

    def install(self, p: Patcher) -> None:
        watch = self

        def make(original: Any) -> Any:
            @functools.wraps(original)
            def open_(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
                result = original(file, mode, *a, **k)
                if isinstance(file, (str, os.PathLike)) and isinstance(mode, str) and not busy():
                    try:
                        watch.opened(file, mode, k.get("encoding", a[1] if len(a) > 1 else None))
                    except BaseException:  # a policy refusing the data: the file is not handed over
                        result.close()
                        raise
                return result
            return open_

        p.replace(builtins, "open", make)
        p.replace(io, "open", make)  # Path.open() goes through io.open
        OpenWatch.active = self
        p.add(self._deactivate)
        self.run.on_end(lambda _run: self.sweep())

    def _deactivate(self) -> None:
        if OpenWatch.active is self:
            OpenWatch.active = None

    def opened(self, file: Any, mode: str, encoding: Any = None) -> None:
        binary = "b" in mode
        reading = "r" in mode and not any(c in mode for c in "wxa+")
        if not binary and reading and DECLARED.rules:
            path = os.path.abspath(os.fspath(file))
            if not (self.prefixes and under(path, self.prefixes)):  # (a --data file: below)
                record_once(functools.partial(self.tagged_read, path, encoding if isinstance(encoding, str) else None),
                            f"the data file {path}")
        if binary and self.pending and any(c in mode for c in "wxa+"):
            _remember(self.written, os.path.abspath(os.fspath(file)))
        elif binary and "r" in mode:
            path = os.path.abspath(os.fspath(file))
            if path in self.written:
                self.sweep()  # written, now read back: its save comes first in the record
            _remember(self.read, path)
        if self.prefixes and reading:
            path = os.path.abspath(os.fspath(file))
            directory = under(path, self.prefixes)
            if directory is not None:
                record_once(functools.partial(self.reads.read_under, path, directory), f"the data file {path}")

    def tagged_read(self, path: str, encoding: str | None) -> None:
        """A text file the script opened for reading: when tags are declared for it (a tags file, Croissant, a
        card), it is data, recorded in the role its use shows as a ``--data`` file is (read, then trained on:
        training data, checked by the policy at the optimizer's step), and its strings carry its tags into the
        datasets made of them (``record.texts``). Not inside a dataset's ``__getitem__`` (the dataset stands for
        what its items read), in DataLoader workers, nor on prov4torch's own threads. Binary reads have their
        readers' hooks (numpy, pandas, torch.load, PIL) or are parsed by the script's own code into data a dataset
        stands for (a pickled vocabulary, gzip files of images)."""
        # first what needs no look at the file: a dataset's items opening their files (an image or review folder
        # read per item) must not pay for matching, nor hashing, each file
        if threading.current_thread().name.startswith("prov4torch") or in_loader_worker():
            return
        if DataPaths.active is not None and DataPaths.active.inside_item():
            return
        datasets = self.run.inputs.datasets
        if not datasets.tagged_file_read(path, encoding):
            return
        if _in_dataset_init():  # a dataset reading its data as it is made: that dataset stands for the file
            datasets.represented.add(path)
            return
        self.reads.tagged(path)

    # -- checkpoints through buffers ---------------------------------------------------------------------
    def saved_to_buffer(self, buf: Any, obj: Any) -> None:
        """``torch.save(obj, buf)`` into a buffer: remember its digest and what it holds."""
        found = buffer_digest(buf)
        if found is None or found[1] == 0:
            return
        sha, size = found
        self.pending[sha] = (size, classify(obj))
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def loaded_from_buffer(self, buf: Any, obj: Any) -> None:
        """``torch.load(buf)`` of a buffer: the file it was read from, if the script opened it."""
        found = buffer_digest(buf)
        if found is None:
            return
        sha, size = found
        for path in reversed(self.read):
            if _size(path) == size and _file_sha256(path) == sha:
                record_inside(functools.partial(self.run.record_loaded, path, obj), f"the loaded file {path}")
                return

    def sweep(self) -> None:
        """Files written with a pending buffer's bytes are recorded as saved (when one is read back, and at the
        end of the run)."""
        if not self.pending or not self.written:
            return
        sizes = {size for size, _kind in self.pending.values()}
        for path in list(self.written):
            if _size(path) not in sizes:
                continue
            sha = _file_sha256(path)
            if sha is None or sha not in self.pending:
                continue
            del self.written[path]
            kind = self.pending[sha][1]  # kept: the same bytes may be written to another file too
            if kind == "model":
                record_inside(functools.partial(self.run.log_model, path), f"the checkpoint {path}")
            else:
                record_inside(functools.partial(self.run.log_artifact, path, kind=kind), f"the file {path}")


def _in_dataset_init(depth: int = 40) -> bool:
    """Whether a torch ``Dataset``'s ``__init__`` is running on this thread's stack (looked at on the opening of
    a tagged file only)."""
    data = sys.modules.get("torch.utils.data")
    base = getattr(data, "Dataset", None)
    if base is None:
        return False
    frame = inspect.currentframe()
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), base):
            return True
        frame = frame.f_back
    return False


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _remember(seen: OrderedDict[str, None], path: str) -> None:
    seen[path] = None
    seen.move_to_end(path)
    while len(seen) > MAX_CANDIDATES:
        seen.popitem(last=False)
