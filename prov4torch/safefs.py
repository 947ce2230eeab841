"""Creating files without writing through links or leaving half-written ones (shared by every wing).

* ``open_new``: create a file that must not exist yet, never following a link planted at its name;
* ``write_atomic``: write a temporary file beside the target, fsync, rename (a reader sees the old
  file or the new one, never a torn one); the file gets the mode the umask gives, like any other;
* ``safe_dir``: a directory under a root, refused if it is a link or resolves outside the root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, FileTooLarge, NotRegularFile, Terminated

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def umask_mode(base: int = 0o666) -> int:
    """``base`` as the process umask lets files be created (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` resolves to a place under ``root`` (links followed)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def open_new(path: Path, binary: bool = False) -> IO[Any]:
    """Create ``path`` for appending; it must not exist, and a link at its name is never followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | NOFOLLOW | CLOEXEC, 0o666)
    try:
        return os.fdopen(fd, "ab") if binary else os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def safe_dir(root: Path, *names: str) -> Path:
    """``root/names...``, created if missing; ConfigError if it is a link or leads outside ``root``."""
    d = root.joinpath(*names)
    if d.is_symlink() or (d.exists() and not inside(root, d)):
        raise ConfigError(f"{d} is a link or leads outside {root}: prov4torch does not write through links")
    d.mkdir(parents=True, exist_ok=True)
    return d


def check_output(path: Path) -> Path:
    """An output file path that can be written, checked before any work: ConfigError saying why not."""
    if str(path) in ("", ".") or path.is_dir():
        raise ConfigError(f"{path} is a directory: give the path of a file to write (-o/--out)")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ConfigError(f"{path}: {existing} is not a directory, so the output cannot be written there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: {existing} is not writable; choose another output path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{path} exists and is not writable; choose another output path")
    return path


@contextlib.contextmanager
def cleanup_on_signal() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (SIGINT already raises KeyboardInterrupt), so the
    block's ``finally``/``except`` removes its temporary files; after the block the process exits 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    except Terminated:
        signal.signal(signal.SIGTERM, previous)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- reading: regular files only, bounded, never blocking -------------------------------------------------

def file_kind(mode: int) -> str:
    """A file type in words (``stat.S_IFMT`` of ``mode``)."""
    import stat

    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` open for reading bytes, if it is a regular file (links followed). A FIFO, socket or device is
    never waited on: the open does not block (``O_NONBLOCK``) and its type is checked before any read;
    ``NotRegularFile`` (an ``OSError``) says what it is."""
    import fcntl
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path} is {file_kind(st.st_mode)}, not a regular file: not read")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a regular file's bytes, read a block at a time (``open_regular``: a FIFO is never waited on)."""
    import hashlib

    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def first_json_line(path: str | os.PathLike[str], cap: int = 65536) -> Any:
    """The first line of a regular file (at most ``cap`` bytes of it) as JSON -- a journal's start event; None
    when it cannot be read or is not JSON."""
    import json

    try:
        with open_regular(path) as fh:
            return json.loads(fh.readline(cap) or b"null")
    except (OSError, ValueError):
        return None


def read_or_raise(path: str | os.PathLike[str], cap: int, error: type[Exception], what: str = "",
                  hint: str = "") -> bytes:
    """``read_regular``, with every failure one ``error`` naming the file: special or too large (with ``hint``,
    what to give instead), or unreadable (``what`` it was read as)."""
    try:
        return read_regular(path, cap)
    except (NotRegularFile, FileTooLarge) as exc:
        raise error(f"{exc}{'; ' + hint if hint else ''}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read{' the ' + what if what else ''}: {exc.strerror or exc}") from None


def read_regular(path: str | os.PathLike[str], cap: int) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes (``FileTooLarge`` past it, ``NotRegularFile`` for
    special files); at most ``cap + 1`` bytes are ever read, whatever the file claims to be."""
    with open_regular(path) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise FileTooLarge(f"{path} is larger than {cap} bytes: not read")
    return data
