"""Content identity: the same bytes give the same id in every run, so lineage joins across runs.

* **Files** are hashed streamed (SHA-256), any size, and remembered in a ``DigestCache`` by
  path, size, mtime and inode, so a second run costs a ``stat``.
* **Several files** (a directory, a sharded checkpoint) get one digest per file and a *root
  digest*: SHA-256 over the raw per-file digests in the order of their relative POSIX names,
  the root digest of the OpenSSF model-signing manifest, so a later signing step can reuse it.
* **Weights** (a module, a state dict, a checkpoint holding one, a safetensors file) get a
  digest of their tensors, independent of the file format and name: for each tensor in name
  order, ``name NUL dtype NUL shape NUL`` then its bytes (C order, little-endian).
* **In-memory datasets** are hashed completely from what they hold: tensors, arrays, lists of
  numbers or strings, and the files they name (settings alone -- a length, a seed, a split name -- are not
  data). Never through ``__getitem__`` (which may draw
  random numbers or decode images), never through ``repr``. ``None`` when nothing
  content-like can be reached: the caller then says so in the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    InvalidValueError,
    OverBudget,
    Prov4TorchError,
    UnreadableContentError,
)
from ..safefs import file_kind, file_sha256, safe_dir

CHUNK = 1 << 20
MANIFEST_METHOD = "sha256-manifest"  # OpenSSF model-signing root digest over per-file digests
MAX_DEPTH = 4  # how deep dataset attributes are followed (Subset -> ConcatDataset -> ...)
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


@dataclass(frozen=True)
class FileDigest:
    name: str  # relative POSIX path inside the checkpoint/dataset (or the file name)
    sha256: str
    size: int


@dataclass(frozen=True)
class Digest:
    """A content digest: ``sha256`` names the content; ``files`` lists the files behind it."""

    sha256: str
    size: int
    method: str
    files: tuple[FileDigest, ...] = ()
    covers: tuple[str, ...] = ()  # for objects: the attributes the digest was computed over
    skipped: tuple[str, ...] = ()  # for objects: data attributes that could not be hashed (said in the record)


# -- files -----------------------------------------------------------------------------------------

class DigestCache:
    """File digests remembered across runs (SQLite under the output root); never raises.

    Files under ``MIN_CACHED`` bytes are hashed again rather than looked up (cheaper than a query);
    each thread keeps its own connection.
    """

    MIN_CACHED = 1 << 20

    def __init__(self, path: Path | None, root: Path | None = None) -> None:
        self.path = path
        self.root = root or (path.parent if path else None)
        self._local = threading.local()
        self._broken = path is None

    def _connect(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            assert self.path is not None and self.root is not None
            safe_dir(self.root, *self.path.parent.relative_to(self.root).parts)
            if self.path.is_symlink():
                raise OSError(f"{self.path} is a link")
            con = sqlite3.connect(self.path, timeout=5)
            con.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                        "inode INTEGER, sha256 TEXT)")
            self._local.con = con
        return con

    def get(self, path: str, st: os.stat_result) -> str | None:
        if self._broken or st.st_size < self.MIN_CACHED:
            return None
        try:
            row = self._connect().execute("SELECT size, mtime_ns, inode, sha256 FROM files WHERE path = ?",
                                          (path,)).fetchone()
        except (sqlite3.Error, OSError, ValueError, Prov4TorchError):
            self._broken = True
            return None
        if row and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return str(row[3])
        return None

    def put(self, path: str, st: os.stat_result, sha256: str) -> None:
        if self._broken or st.st_size < self.MIN_CACHED:
            return
        try:
            con = self._connect()
            with con:
                con.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                            (path, st.st_size, st.st_mtime_ns, st.st_ino, sha256))
        except (sqlite3.Error, OSError, ValueError, Prov4TorchError):
            self._broken = True


NO_CACHE = DigestCache(None)


def file_digest(path: Path, cache: DigestCache = NO_CACHE, name: str | None = None) -> FileDigest:
    st = path.stat()
    key = str(path.resolve())
    sha = cache.get(key, st)
    if sha is None:
        sha = file_sha256(path)  # a FIFO or device is never read (it would block or never end)
        cache.put(key, st, sha)
    return FileDigest(name or path.name, sha, st.st_size)


def root_digest(files: Iterable[FileDigest]) -> str:
    """The OpenSSF model-signing root digest: SHA-256 over the raw digests in name order."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        h.update(bytes.fromhex(f.sha256))
    return h.hexdigest()


IGNORED_SUFFIXES = (".lineage.json",)  # prov4torch's own lineage sidecars are not part of the content


MAX_PROBLEMS = 20  # unreadable entries named in an error (the count is always given)


def _entry_problem(path: Path) -> str | None:
    """Why a directory entry cannot be part of a content digest (None: a regular file, links followed)."""
    import stat

    try:
        st = path.stat()
    except OSError as exc:
        what = "a symbolic link that loops" if exc.errno == 40 else (
            "a dangling symbolic link" if path.is_symlink() else "unreadable")
        return f"{what} ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "a link to a directory (not followed)" if path.is_symlink() else None
    if not stat.S_ISREG(st.st_mode):
        return file_kind(st.st_mode)
    return None


def _walk(root: Path) -> Iterator[Path]:
    """The regular files under ``root`` in name order; an entry that is not one (a FIFO, socket, device, a
    dangling or looping link, a link to a directory, a file that cannot be read) makes the whole content
    unidentifiable: ``UnreadableContentError`` names them, after the walk, so no entry is ever opened."""
    problems: list[str] = []
    found: list[Path] = []

    def failed(exc: OSError) -> None:
        problems.append(f"{exc.filename}: unreadable directory ({exc.strerror or exc})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed):
        for d in list(dirnames):
            p = Path(dirpath) / d
            if not d.startswith(".") and p.is_symlink():
                problems.append(f"{p}: {_entry_problem(p) or 'a link to a directory (not followed)'}")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES):
                p = Path(dirpath) / name
                problem = _entry_problem(p)
                if problem is None and not os.access(p, os.R_OK):
                    problem = "permission denied"
                if problem is not None:
                    problems.append(f"{p}: {problem}")
                else:
                    found.append(p)
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS])
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise UnreadableContentError(f"{root}: {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} cannot "
                                     f"be read as data: {shown}{more}", problems)
    yield from found


def digest_files(paths: Iterable[Path], base: Path, cache: DigestCache = NO_CACHE) -> Digest:
    """Several files as one content: per-file digests (named relative to ``base``) and their root digest."""
    files = tuple(sorted((file_digest(p, cache, p.relative_to(base).as_posix()) for p in paths),
                         key=lambda f: f.name))
    return Digest(root_digest(files), sum(f.size for f in files), MANIFEST_METHOD, files)


def digest_path(path: str | os.PathLike[str], cache: DigestCache = NO_CACHE) -> Digest:
    """A file (its SHA-256) or a directory tree (per-file digests and their root digest)."""
    p = Path(path)
    try:
        if p.is_dir():
            return digest_files(list(_walk(p)), p, cache)
        if os.path.lexists(p):
            problem = _entry_problem(p)
            if problem is not None:
                raise UnreadableContentError(f"{p}: {problem}: it cannot be read as data", [f"{p}: {problem}"])
            f = file_digest(p, cache)
            return Digest(f.sha256, f.size, "sha256-file", (f,))
    except UnreadableContentError:
        raise
    except OSError as exc:
        raise UnreadableContentError(f"cannot read {p}: {exc.strerror or exc}", [f"{p}: {exc.strerror or exc}"]) \
            from exc
    raise InvalidValueError(f"{p} does not exist: give an existing file or directory", value=str(p))


# -- tensors and weights ---------------------------------------------------------------------------

def _torch() -> Any:
    return sys.modules.get("torch")


def is_tensor(v: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(v, torch.Tensor)


def is_array(v: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(v, np.ndarray)


def tensor_bytes(t: Any) -> memoryview | None:
    """A tensor's bytes in C order (None for tensors without readable storage: meta, sparse, quantized)."""
    torch = _torch()
    try:
        t = t.detach()
        if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
            return None
        if t.device.type != "cpu":
            t = t.cpu()
        flat = t.contiguous().reshape(-1)
        return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")
    except (RuntimeError, TypeError, ValueError):
        return None


def _tensor_header(name: str, dtype: str, shape: Iterable[int]) -> bytes:
    return f"{name}\0{dtype}\0{','.join(map(str, shape))}\0".encode()


def state_dict_of(obj: Any) -> Mapping[str, Any] | None:
    """The tensors of the weights ``obj`` holds: a module, a state dict, or a checkpoint dict with one.

    Nested state dicts (``{"encoder": {...}}``) are flattened with dotted names; a checkpoint
    that holds a ``state_dict``/``model``/``model_state_dict`` entry gives that entry.
    """
    if hasattr(obj, "state_dict") and callable(obj.state_dict) and not isinstance(obj, Mapping):
        try:
            obj = obj.state_dict()
        except Exception:  # noqa: BLE001 - a user object's own failure: no weights to hash
            return None
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model_state_dict", "model", "module"):
        inner = obj.get(key) if all(isinstance(k, str) for k in obj) else None
        if isinstance(inner, Mapping) or (inner is not None and hasattr(inner, "state_dict")):
            found = state_dict_of(inner)
            if found:
                return found
    flat: dict[str, Any] = {}

    def collect(prefix: str, m: Mapping[Any, Any], depth: int) -> bool:
        for k, v in m.items():
            if not isinstance(k, str):
                return False
            if is_tensor(v):
                flat[prefix + k] = v
            elif isinstance(v, Mapping) and depth < MAX_DEPTH:
                if not collect(f"{prefix}{k}.", v, depth + 1):
                    return False
            else:
                return False  # not only weights: an optimizer state, a trainer state, data
        return True

    return flat if collect("", obj, 0) and flat else None


def weights_digest(obj: Any) -> str | None:
    """The weights digest of a module/state dict (see the module docstring), or None."""
    sd = state_dict_of(obj)
    if not sd:
        return None
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name]
        data = tensor_bytes(t)
        if data is None:
            return None
        h.update(_tensor_header(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)))
        h.update(data)
    return h.hexdigest()


def safetensors_weights_digest(paths: Iterable[Path]) -> str | None:
    """The weights digest of one or several (sharded) safetensors files, read without torch."""
    entries: list[tuple[str, str, list[int], Path, int, int]] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > 100 * CHUNK:
                    return None
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
            if dtype is None:
                return None
            start, end = info["data_offsets"]
            entries.append((name, dtype, info["shape"], path, base + start, end - start))
    if not entries:
        return None
    h = hashlib.sha256()
    for name, dtype, shape, path, offset, length in sorted(entries):
        h.update(_tensor_header(name, dtype, shape))
        with open(path, "rb") as fh:
            fh.seek(offset)
            left = length
            while left > 0:
                block = fh.read(min(CHUNK, left))
                if not block:
                    return None
                h.update(block)
                left -= len(block)
    return h.hexdigest()


# -- in-memory datasets ----------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))
TEXT_IS_DATA = 256  # a str attribute this long (or with a newline) is data, not a setting
# the budget for hashing Python objects (files, tensors and arrays are hashed whatever their size): past it the
# dataset is unidentified, with the reason
MAX_CONTENT_BYTES = 4 << 30
HASH_BUDGET_S = 60.0
MAX_OBJECTS = 5_000_000
OBJECT_COST = 1024  # what one Python object weighs in estimated_bytes (hashing time, not memory)


def data_members(obj: Any) -> dict[str, Any] | None:
    """An object's data members: its ``__dict__`` and ``__slots__`` (None for what has neither: builtins)."""
    out: dict[str, Any] = {}
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        out.update(d)
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()) if isinstance(getattr(cls, "__slots__", ()), (tuple, list)) else ():
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out[name] = getattr(obj, name)
    if not out and not isinstance(d, dict):
        return None
    return out


class _Hasher:
    """Feeds the content-like parts of an object into one SHA-256, never calling ``__getitem__``."""

    def __init__(self, cache: DigestCache) -> None:
        self.h = hashlib.sha256()
        self.size = 0
        self.cache = cache
        self.files: list[FileDigest] = []
        self._seen: set[int] = set()
        self.data = 0  # how many values of data (not settings: a lone number or string) were fed
        self.deadline = time.monotonic() + HASH_BUDGET_S

    def feed(self, tag: str, data: bytes | memoryview, setting: bool = False) -> None:
        if self.size > MAX_CONTENT_BYTES or time.monotonic() > self.deadline:
            raise OverBudget(f"more than {MAX_CONTENT_BYTES >> 30} GiB or {HASH_BUDGET_S:g} s of Python objects")
        self.h.update(f"{tag}\0{len(data)}\0".encode())
        self.h.update(data)
        self.size += len(data)
        self.data += not setting

    def value(self, path: str, v: Any, depth: int) -> bool:
        """Hash ``v`` if it is content; False (nothing fed) when it is not."""
        if is_tensor(v):
            data = tensor_bytes(v)
            if data is None:
                return False
            self.feed(f"{path}:tensor:{str(v.dtype).removeprefix('torch.')}:{tuple(v.shape)}", data)
            return True
        if is_array(v):
            if v.dtype.hasobject:
                return self.value(path, v.tolist(), depth)
            data = v if v.flags.c_contiguous else v.copy(order="C")
            try:
                raw: memoryview | bytes = memoryview(data).cast("B")  # no copy
            except (TypeError, ValueError):  # formats memoryview cannot cast (complex, structured)
                raw = data.tobytes()
            self.feed(f"{path}:array:{v.dtype.str}:{v.shape}", raw)
            return True
        if isinstance(v, (bytes, bytearray)):
            self.feed(f"{path}:bytes", bytes(v))
            return True
        if isinstance(v, range):
            self.feed(f"{path}:range", f"{v.start},{v.stop},{v.step}".encode())
            return True
        if isinstance(v, _SCALARS):
            # a lone number or short name on the dataset itself is a setting (a length, a seed, a split); a
            # text (the char-level pattern: the corpus in one str) or a value inside a collection is data
            setting = depth <= 1 and not (isinstance(v, str) and (len(v) >= TEXT_IS_DATA or "\n" in v))
            self.feed(f"{path}:scalar", json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                      setting=setting)
            return True
        if isinstance(v, str) and len(v) < 4096 and os.path.isfile(v):
            f = file_digest(Path(v), self.cache)
            self.files.append(f)
            self.feed(f"{path}:file", bytes.fromhex(f.sha256))
            return True
        if isinstance(v, (list, tuple)) and v:
            return self.sequence(path, v, depth)
        if isinstance(v, (set, frozenset)) and v and all(isinstance(x, _SCALARS) for x in v):
            items = sorted(v, key=lambda x: (type(x).__name__, json.dumps(x)))  # one order in every process
            self.feed(f"{path}:set", json.dumps(items, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            return True
        if isinstance(v, Mapping) and v and all(isinstance(k, _SCALARS) for k in v):
            keys = sorted(v, key=lambda k: (type(k).__name__, json.dumps(k)))
            return all(self.value(f"{path}.{json.dumps(k)}", v[k], depth + 1) for k in keys)
        if depth < MAX_DEPTH and not callable(v) and id(v) not in self._seen and data_members(v) is not None:
            self._seen.add(id(v))
            return self.attributes(path, v, depth + 1) > 0
        return False

    def sequence(self, path: str, v: list[Any] | tuple[Any, ...], depth: int) -> bool:
        if all(isinstance(x, _SCALARS) for x in v):
            self.feed(f"{path}:list", json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            return True
        if len(v) > MAX_OBJECTS:
            raise OverBudget(f"{len(v):,} items in {path or 'the dataset'} (more than {MAX_OBJECTS:,} objects "
                             "are not hashed one by one)")
        if all(isinstance(x, (list, tuple)) and all(isinstance(y, _SCALARS) for y in x) for x in v):
            self.feed(f"{path}:rows", json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            # lists of (path, label) pairs (ImageFolder's samples): the files' content too
            for i, row in enumerate(v):
                for x in row:
                    if isinstance(x, str) and os.path.isfile(x):
                        f = file_digest(Path(x), self.cache)
                        self.files.append(f)
                        self.feed(f"{path}[{i}]:file", bytes.fromhex(f.sha256))
            return True
        return all(self.value(f"{path}[{i}]", x, depth + 1) for i, x in enumerate(v))

    def attributes(self, path: str, obj: Any, depth: int) -> int:
        """Hash every content-like attribute (``__dict__`` and ``__slots__``; Subset/Concat members); how many."""
        hashed = 0
        members = data_members(obj) or {}
        self.feed(f"{path}:class", type(obj).__qualname__.encode(), setting=True)
        for name in sorted(members):
            if name.startswith("__"):
                continue
            v = members[name]
            if callable(v) and not is_tensor(v):
                continue  # transforms, collate functions, loaders
            if self.value(f"{path}.{name}", v, depth):
                hashed += 1
        return hashed


def _arrow_files(obj: Any) -> list[Path] | None:
    """The Arrow files behind a Hugging Face ``datasets.Dataset`` (its ``cache_files``; [] for one held in memory),
    None for anything else or when a file is gone."""
    files = getattr(obj, "cache_files", None)
    if not isinstance(files, list) or not hasattr(obj, "data") or not callable(getattr(obj, "with_format", None)):
        return None
    if not files:
        return []  # held in memory: no files, its table is the content
    paths = [Path(f["filename"]) for f in files if isinstance(f, dict) and isinstance(f.get("filename"), str)]
    return paths if paths and all(p.is_file() for p in paths) else None


def arrow_digest(obj: Any, cache: DigestCache = NO_CACHE) -> Digest | None:
    """A Hugging Face dataset's content: the Arrow files it reads (the index file of a selection included), or,
    for one held in memory, every buffer of its Arrow table (and of its indices)."""
    paths = _arrow_files(obj)
    if paths is None:
        return None
    if paths:
        base = Path(os.path.commonpath([str(p.parent) for p in paths]))
        return digest_files(paths, base, cache)
    hasher = _Hasher(cache)
    for label, table in (("data", getattr(obj.data, "table", obj.data)), ("indices", getattr(obj, "_indices", None))):
        table = getattr(table, "table", table)
        if table is None or not hasattr(table, "to_batches"):
            continue
        hasher.feed(f"{label}.schema", str(table.schema).encode())
        for batch in table.to_batches():
            for i, column in enumerate(batch.columns):
                for buf in column.buffers():
                    if buf is not None:
                        hasher.feed(f"{label}.{i}", memoryview(buf))
    return Digest(hasher.h.hexdigest(), hasher.size, "sha256-content", (), ("arrow table",), ())


def dataset_digest(obj: Any, cache: DigestCache = NO_CACHE) -> Digest | None:
    """A complete content digest of an in-memory dataset (see the module docstring), or None."""
    arrow = arrow_digest(obj, cache)
    if arrow is not None:
        return arrow
    hasher = _Hasher(cache)
    covered: list[str] = []
    skipped: list[str] = []
    if is_tensor(obj) or is_array(obj) or isinstance(obj, (list, tuple)):
        if hasher.value("", obj, 0):
            covered.append("(value)")
    else:
        attrs = data_members(obj) or {}
        for n in sorted(attrs):
            if n.startswith("__") or callable(attrs[n]) or attrs[n] is None:
                continue
            (covered if hasher.value(f".{n}", attrs[n], 1) else skipped).append(n)
    if not covered or not hasher.data:  # settings alone (a length, a seed, a split name) are not its data:
        return None  # two generators with n=2000 would share an id
    return Digest(hasher.h.hexdigest(), hasher.size, "sha256-content", tuple(hasher.files), tuple(covered),
                  tuple(skipped))


def estimated_bytes(obj: Any, depth: int = 0) -> int:
    """A cheap estimate of how much ``dataset_digest`` would read (to decide: now or in the background)."""
    arrow_files = _arrow_files(obj)
    if arrow_files:
        return sum(p.stat().st_size for p in arrow_files)
    if arrow_files is not None:
        return int(getattr(obj.data, "nbytes", 0) or 0)
    if is_tensor(obj):
        return int(obj.numel() * obj.element_size())
    if is_array(obj):
        return int(obj.nbytes)
    if isinstance(obj, (list, tuple)):
        return 16 * len(obj) + (sum(estimated_bytes(x, depth + 1) for x in obj[:64]) * len(obj) // 64
                                if obj and not isinstance(obj[0], _SCALARS) and depth < MAX_DEPTH else 0)
    if isinstance(obj, str) and len(obj) < 4096:
        with contextlib.suppress(OSError):
            if os.path.isfile(obj):
                return os.stat(obj).st_size
        return len(obj)
    if depth < MAX_DEPTH and hasattr(obj, "__dict__") and not callable(obj):
        # a Python object costs ~10 us to hash, whatever its size: counted as 1 KiB, so a list of 64k+ of them
        # is hashed on the background thread, not at the DataLoader's first batch
        return (OBJECT_COST if depth else 0) + sum(estimated_bytes(v, depth + 1) for v in vars(obj).values())
    return 0
