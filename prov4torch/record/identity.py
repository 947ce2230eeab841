"""Content digests: the same bytes give the same id in every run, so lineage joins across runs.

Files are hashed streamed (any size); a directory hashes the sorted list of its
files' relative paths and digests; an in-memory object gets an honest fingerprint
whose method is named next to it (``digest_method``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def digest_path(path: str | os.PathLike[str]) -> tuple[str, int, str]:
    """(sha256 hex, size in bytes, method) of a file or a directory tree."""
    p = Path(path)
    try:
        if p.is_file():
            return sha256_file(p), p.stat().st_size, "sha256-file"
        if p.is_dir():
            h = hashlib.sha256()
            total = 0
            for f in _walk(p):
                rel = f.relative_to(p).as_posix()
                size = f.stat().st_size
                total += size
                h.update(f"{rel}\0{sha256_file(f)}\0{size}\n".encode())
            return h.hexdigest(), total, "sha256-tree"
    except OSError as exc:
        raise InvalidValueError(f"cannot read {p}: {exc.strerror or exc}", value=str(p)) from exc
    raise InvalidValueError(f"{p} does not exist: give an existing file or directory", value=str(p))


def _tensor_bytes(t: Any) -> bytes:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    try:
        return bytes(t.view(-1).view(dtype=__import__("torch").uint8).numpy())
    except Exception:  # noqa: BLE001 - dtypes numpy cannot view
        return repr(t.tolist()).encode()


def fingerprint(obj: Any, samples: int = 64) -> tuple[str, int | None, str]:
    """(sha256 hex, length or None, method) for an in-memory dataset.

    * tensors and ``TensorDataset``: every byte of every tensor plus shapes/dtypes
      (method ``sha256-tensors``) — exact;
    * other sized datasets: class, length and the repr of ``samples`` evenly spread items
      (method ``sha256-sampled``) — a fingerprint, not a full content hash, and said so;
    * anything else: class and repr (``sha256-repr``).
    """
    torch = sys.modules.get("torch")
    h = hashlib.sha256()
    cls = f"{type(obj).__module__}.{type(obj).__qualname__}"
    h.update(cls.encode())
    if torch is not None:
        tensors = None
        if isinstance(obj, torch.Tensor):
            tensors = [obj]
        elif hasattr(obj, "tensors") and all(isinstance(t, torch.Tensor) for t in obj.tensors):
            tensors = list(obj.tensors)
        if tensors is not None:
            for t in tensors:
                h.update(f"{tuple(t.shape)}{t.dtype}".encode())
                h.update(_tensor_bytes(t))
            return h.hexdigest(), int(tensors[0].shape[0]) if tensors[0].dim() else 1, "sha256-tensors"
    length: int | None
    try:
        length = len(obj)
    except TypeError:
        length = None
    if length is not None and hasattr(obj, "__getitem__"):
        h.update(str(length).encode())
        picks = sorted({int(i * (length - 1) / max(samples - 1, 1)) for i in range(min(samples, length))})
        try:
            for i in picks:
                item = obj[i]
                h.update(_item_bytes(item, torch))
            return h.hexdigest(), length, "sha256-sampled"
        except Exception:  # noqa: BLE001 - fall back to repr
            pass
    h.update(repr(obj).encode("utf-8", "replace"))
    return h.hexdigest(), length, "sha256-repr"


def _item_bytes(item: Any, torch: Any) -> bytes:
    if torch is not None and isinstance(item, torch.Tensor):
        return _tensor_bytes(item)
    if isinstance(item, (tuple, list)):
        return b"\x1e".join(_item_bytes(x, torch) for x in item)
    return repr(item).encode("utf-8", "replace")
