"""Governance that follows data in memory: a dataset whose tensors or arrays *are* (share memory with) those of a
tagged dataset carries that dataset's tags.

A dataset's content id covers the whole of it, so a slice of a tagged tensor (``x[:32]``), the same tensors in a
class of the user's own (``self.x = tagged.tensors[0]``), or a NumPy array seen as a tensor (``torch.from_numpy``)
is new content with an id of its own -- and, without this, no tags. Here every tensor and array reachable from a
tagged dataset (its attributes and collections, as ``identity`` hashes them; never ``__getitem__``, never a
property) is noted by the memory it views: its device and the address range of its whole storage (a NumPy array's
base). A dataset attached later inherits the tags of every noted dataset whose memory one of its own tensors or
arrays overlaps. The noted tensors are kept alive (as the run keeps its tagged datasets), so an address is never
reused by other data while it is noted.

Memory a reader filled from a tagged file (``np.load``, ``np.loadtxt``, ``pandas.read_csv``; noted ``weakly``)
carries the file's tags the same way -- a tensor made on it (``torch.from_numpy(arr[:, :2])``) is that file's data. Such
memory is not kept alive (a script that drops the array frees it): its note goes when it does, before any later
look, so a reused address never inherits it.

Arrow tables count as such memory too: a Hugging Face dataset's ``filter``, ``shuffle``, ``train_test_split`` or
``select`` keeps its table (or a slice of it) and adds indices, and carries its tags. A copy (``x[:32].clone()``,
``x.numpy().copy()``) or a transformation (``Dataset.map``) is new memory and is not followed here; its content id
still matches when it copies a whole dataset.
"""

from __future__ import annotations

import bisect
import itertools
import sys
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from .identity import data_members

MAX_VISITS = 10_000  # objects looked at below one dataset
MAX_DEPTH = 8
MAX_NOTED = 100_000  # buffers noted per run
MAX_COLUMNS = 1_000  # columns of a pandas frame looked at


@dataclass(frozen=True, slots=True)
class Buffer:
    """The memory one tensor or array views: its device and the address range of its whole storage."""

    device: str
    start: int
    end: int
    owner: Any  # the tensor or array (kept alive: see the module docstring)


def buffers(data: Any) -> list[Buffer]:
    """The tensors and arrays reachable from ``data`` (attributes, lists, tuples, dict values; bounded). An object
    that fails to be looked at (a user class raising from ``__getattribute__``) is skipped, never raised."""
    out: list[Buffer] = []
    queue: deque[tuple[Any, int]] = deque([(data, 0)])  # breadth first: a long list does not hide a sibling
    seen: set[int] = set()
    while queue and len(seen) < MAX_VISITS:
        obj, depth = queue.popleft()
        if id(obj) in seen or obj is None or type(obj) in _SCALARS:
            continue
        seen.add(id(obj))
        try:
            found, items = _look(obj, depth)
        except Exception:  # noqa: BLE001 - a hostile object is not memory we can name
            continue
        out.extend(found)
        room = MAX_VISITS - len(queue)  # the queue is bounded too: a list of lists never fills memory
        queue.extend((v, depth + 1) for v in items[:max(room, 0)])
    return out


_SCALARS = {str, bytes, bytearray, int, float, complex, range, bool}


def _look(obj: Any, depth: int) -> tuple[list[Buffer], list[Any]]:
    """The memory ``obj`` views, or the members to look into."""
    found = _buffers(obj)
    if found is not None:
        return found, []
    if depth >= MAX_DEPTH:
        return [], []
    if isinstance(obj, (list, tuple)):
        return [], list(obj[:MAX_VISITS])
    if isinstance(obj, dict):
        return [], list(itertools.islice(obj.values(), MAX_VISITS))
    if callable(obj) or type(obj).__module__ in ("builtins", "types"):
        return [], []
    members = data_members(obj)
    return [], [v for k, v in (members or {}).items() if not k.startswith("__")]


def _buffers(obj: Any) -> list[Buffer] | None:
    """The memory ``obj`` views if it is a tensor, an array or an Arrow table/batch/array; None if it is none of
    these (a container or object, to look into)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        try:
            storage = obj.untyped_storage()
            start, size = storage.data_ptr(), storage.nbytes()
        except Exception:  # noqa: BLE001 - sparse, nested, or meta tensors have no plain storage
            return []
        return [Buffer(str(obj.device), start, start + size, obj)] if start and size else []
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        try:
            start = int(root.__array_interface__["data"][0])
        except (AttributeError, KeyError, TypeError, ValueError):
            return []
        size = int(root.nbytes)  # its owner is the array that owns the memory: alive as long as any view of it
        return [Buffer("cpu", start, start + size, root)] if start and size else []
    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(obj, (pa.Table, pa.RecordBatch, pa.ChunkedArray, pa.Array)):
        return _arrow_buffers(pa, obj)
    pd = sys.modules.get("pandas")
    if pd is not None and np is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return _pandas_buffers(np, obj)
    return None


def _pandas_buffers(np: Any, obj: Any) -> list[Buffer]:
    """A pandas frame's or series' columns as NumPy sees them without a copy (``df.values`` and
    ``torch.from_numpy(df.to_numpy())`` of a one-dtype frame view the same block). Columns that are not NumPy
    memory are skipped; bounded."""
    columns = [obj] if obj.ndim == 1 else [obj.iloc[:, i] for i in range(min(obj.shape[1], MAX_COLUMNS))]
    out: dict[tuple[str, int, int], Buffer] = {}
    for column in columns:
        try:
            array = column.to_numpy(copy=False)
        except Exception:  # noqa: BLE001 - an extension dtype that will not say
            continue
        if isinstance(array, np.ndarray) and array.dtype != object:
            for b in _buffers(array) or []:  # owned by the block's array: a frame dropped for its .values
                out.setdefault((b.device, b.start, b.end), b)  # leaves the memory, and its note, alive
    return list(out.values())


def _arrow_buffers(pa: Any, obj: Any) -> list[Buffer]:
    """An Arrow table's (a Hugging Face dataset's ``filter``, ``shuffle``, ``train_test_split`` and ``select``
    keep its table and add indices: the same memory) -- every buffer of every chunk of every column, bounded."""
    columns = obj.columns if isinstance(obj, (pa.Table, pa.RecordBatch)) else [obj]
    out: list[Buffer] = []
    for column in columns:
        for chunk in (column.chunks if isinstance(column, pa.ChunkedArray) else [column]):
            for b in chunk.buffers():
                if b is not None and b.size and b.address:
                    out.append(Buffer("cpu", b.address, b.address + b.size, obj))
            if len(out) >= MAX_VISITS:
                return out
    return out


class SharedMemory:
    """The memory of this run's tagged datasets, and what a later dataset shares with it. The caller walks a
    dataset once (``buffers``, outside any lock) and gives both calls what it found."""

    def __init__(self) -> None:
        # (device, start, end) of a storage -> the tensor or array kept alive, and the tagged datasets viewing it
        self._noted: dict[tuple[str, int, int], tuple[Any, list[tuple[Any, str, dict[str, Any]]]]] = {}
        self._index: dict[str, list[tuple[int, int]]] | None = {}  # device -> sorted (start, end); None: stale
        self._lock = threading.RLock()  # several threads attach; reentrant: a signal handler may end the run in here
        self._freed: list[tuple[str, int, int]] = []  # weakly noted memory since freed (a finalizer appends)

    @property
    def noted(self) -> bool:
        """Some tagged memory is noted: a dataset's buffers are worth comparing."""
        return bool(self._noted)

    def note(self, data: Any, held: list[Buffer], name: str, governance: dict[str, Any], *,
             weakly: bool = False) -> None:
        """``data``, whose tensors and arrays are ``held``, carries ``governance``: remember the memory. Kept alive
        (a dataset's), or ``weakly`` (what a reader filled from a tagged file, ``data`` its path): each such note goes
        when its memory is freed; memory that cannot be watched so is not noted, and untagged data fails closed."""
        if not governance:
            return
        with self._lock:
            self._purge()
            for b in held:
                key = (b.device, b.start, b.end)
                entry = self._noted.get(key)
                if entry is None:
                    if len(self._noted) >= MAX_NOTED:
                        break
                    if weakly:
                        try:
                            weakref.finalize(b.owner, self._freed.append, key)  # list.append: safe in a finalizer
                        except TypeError:  # not weakly referable
                            continue
                    entry = self._noted[key] = (None if weakly else b.owner, [])
                    self._index = None
                elif entry[0] is None and not weakly:  # noted weakly (a reader's): a dataset keeps it now
                    entry = self._noted[key] = (b.owner, entry[1])
                if all(owner is not data for owner, _, _ in entry[1]):
                    entry[1].append((data, name, governance))

    def _purge(self) -> None:
        """Forget weakly noted memory that was freed (under the lock; before any look at the notes)."""
        while self._freed:
            key = self._freed.pop()
            entry = self._noted.get(key)
            if entry is not None and entry[0] is None:
                del self._noted[key]
                self._index = None

    def shared_with(self, data: Any, held: list[Buffer]) -> list[tuple[Any, str, dict[str, Any]]]:
        """Every other tagged dataset whose memory ``data``'s tensors or arrays (``held``) view: (it, where,
        governance)."""
        out: dict[int, tuple[Any, str, dict[str, Any]]] = {}
        with self._lock:
            self._purge()
            if self._index is None:
                index: dict[str, list[tuple[int, int]]] = {}
                for device, start, end in self._noted:
                    index.setdefault(device, []).append((start, end))
                for ranges in index.values():
                    ranges.sort()
                self._index = index
            for b in held:
                ranges = self._index.get(b.device, [])
                # storages are disjoint allocations: the noted ones overlapping [start, end) begin before its end,
                # and only the last few of those can still reach past its start
                hi = bisect.bisect_left(ranges, (b.end, 0))
                for start, end in ranges[max(0, hi - NEIGHBOURS):hi]:
                    if end <= b.start:
                        continue
                    for owner, name, governance in self._noted[(b.device, start, end)][1]:
                        if owner is not data:
                            out.setdefault(id(owner), (owner, f"{SHARED}{name}", governance))
        return list(out.values())


SHARED = "memory shared with "  # how a dataset's tags say they came from another's memory
NEIGHBOURS = 8  # noted ranges looked at below a buffer's end (nested ones: a NumPy base and a tensor on it)
