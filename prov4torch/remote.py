"""Run files on object storage: ``--out s3://bucket/prefix`` (or any ``fsspec`` URL; ``s3fs`` for S3 comes with
the ``remote`` extra).

Writing: ranks keep journaling to a local **spool** directory (``PROV4TORCH_SPOOL``, default
``$XDG_CACHE_HOME/prov4torch/spool/<digest of the URL>``), so a crash loses nothing more than on a local disk;
when a run ends its files are **published**: each uploaded under a temporary key, read back and compared by
sha256, then copied to its final key and read back again (object stores have no atomic rename: a half-written
object never carries a final name), and only then is the local copy dropped. A failed upload keeps the local
copy and says where (``prov4torch upload`` publishes it later). The library publishes each rank's own files at
its end; ``prov4torch run`` publishes the whole run directory once it has merged it.

Reading: ``merge``, ``check``, ``lineage``, ``show``, ``validate``, ``report``, ``export`` and ``render`` accept
URLs: the object, or every file under the prefix, is fetched into a temporary directory first (bounded in files
and bytes) and read as local files are.

Endpoints and credentials are fsspec's and the backend's own: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible server, and so on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import env
from .errors import ConfigError, MissingExtraError
from .safefs import file_sha256

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_COLLAPSED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")  # pathlib made "s3://b/k" into "s3:/b/k"
MAX_FETCH_FILES = 100_000
MAX_FETCH_BYTES = 64 << 30
CHUNK = 1 << 20
UPLOAD_THREADS = 8
S3_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3}}  # unless configured
INTERNAL = ".children"  # the run's own helper files (a sitecustomize for child processes): never published


def is_url(value: str | os.PathLike[str] | None) -> bool:
    """A URL of a remote file system (``file://`` is a local path)."""
    if value is None:
        return False
    m = _URL.match(os.fspath(value))
    return m is not None and m.group(1).lower() != "file"


def as_url(value: str | os.PathLike[str]) -> str | None:
    """``value`` as a remote URL, or None for a local path. A CLI argument parsed as a ``Path`` has lost one
    slash of ``s3://`` (``s3:/bucket/key``): restored, unless a local file of that name exists."""
    text = os.fspath(value)
    if is_url(text):
        return text
    m = _COLLAPSED.match(text)
    if m and m.group(1).lower() not in ("file", "c", "d") and not os.path.exists(text):
        return f"{m.group(1)}://{text[m.end():]}"
    return None


def redact(url: str) -> str:
    """A URL as it may be shown: a password in it replaced."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def bound_for(out: str | os.PathLike[str] | None) -> str | None:
    """The storage URL a run's files are published to: ``out`` (an output directory argument), else
    ``PROV4TORCH_DIR``, when it is one; None for a local directory. Checked now (an unknown scheme or a missing
    extra is one error before the run, not a warning at its end)."""
    url = as_url(out) if out is not None else env.get(env.DIR)
    if not url or not is_url(url):
        return None
    filesystem(url)
    return url


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it."""
    try:
        import fsspec.config
        import fsspec.core
    except ImportError:
        raise MissingExtraError("run files on object storage need fsspec (and s3fs for S3): pip install "
                                "'prov4torch[remote]'") from None
    options: dict[str, Any] = {}
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("s3", "s3a") and "config_kwargs" not in fsspec.config.conf.get(protocol, {}):
        options["config_kwargs"] = S3_TIMEOUTS  # a dead endpoint costs seconds at a run's end, not minutes
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise MissingExtraError(f"{redact(url)}: {exc} (pip install 'prov4torch[remote]' for S3)") from None
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{redact(url)}: not a storage URL fsspec knows ({exc})") from None
    return fs, str(path).rstrip("/")


def spool_root(url: str) -> Path:
    """Where runs bound for ``url`` are written first."""
    configured = env.get(env.SPOOL)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prov4torch" / "spool" / hashlib.sha256(url.encode()).hexdigest()[:16]


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p)])


def _sha256_remote(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Published:
    """What ``publish`` did: files now at their final keys, and the first failure (local copies kept)."""

    url: str
    uploaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None
    kept: Path | None = None

    def note(self) -> str:
        where = redact(self.url)
        if not self.failed and self.error is None:
            return f"published {len(self.uploaded)} file(s) to {where} (each verified by sha256)"
        return (f"could not publish {len(self.failed)} file(s) to {where}: {self.error}; the local copy is kept in "
                f"{self.kept}: publish it later with prov4torch upload {self.kept} {where}")


def publish(local_dir: Path, url: str, names: Iterable[str] | None = None, *, keep: bool = False) -> Published:
    """Upload the files of ``local_dir`` (``names``, else all, recursively) to ``url`` (the same relative
    layout), each verified by sha256 under a temporary key and again at its final key; the local copy of each
    verified file is removed (``keep``: not), and ``local_dir`` too once empty. Never raises for a storage
    failure: the result says what was kept."""
    result = Published(url, kept=local_dir)
    wanted = sorted(names) if names is not None else _files_of(local_dir)
    try:
        fs, base = filesystem(url)
    except (ConfigError, MissingExtraError) as exc:
        result.error, result.failed = str(exc), wanted
        return result
    def one(rel: str) -> tuple[str, str | None]:
        local = local_dir / rel
        if not local.is_file() or local.is_symlink():
            return rel, "skip"
        try:
            _upload_one(fs, local, f"{base}/{rel}")
        except Exception as exc:  # noqa: BLE001 - any failure of the store keeps the local copy
            return rel, _one_line(exc)
        if not keep:
            with contextlib.suppress(OSError):
                local.unlink()
        return rel, None

    # a few at a time: each file is a round trip of four requests (a 512-rank job: 30 s one by one)
    with ThreadPoolExecutor(max_workers=min(UPLOAD_THREADS, max(1, len(wanted)))) as pool:
        for rel, error in pool.map(one, wanted):
            if error == "skip":
                continue
            if error is None:
                result.uploaded.append(rel)
            else:
                result.failed.append(rel)
                result.error = result.error or error
    if not keep and not result.failed:
        shutil.rmtree(local_dir / INTERNAL, ignore_errors=True)
        for d in sorted((p for p in local_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            local_dir.rmdir()
    return result


def _files_of(local_dir: Path) -> list[str]:
    """The files of a run directory, relative to it; hidden ones (prov4torch's own ``.children``) left out."""
    out = []
    for p in local_dir.rglob("*"):
        rel = p.relative_to(local_dir)
        if p.is_file() and not p.is_symlink() and not any(part.startswith(".") for part in rel.parts):
            out.append(str(rel))
    return sorted(out)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _upload_one(fs: Any, local: Path, final: str) -> None:
    digest = file_sha256(local)
    temporary = f"{final}.p4t-upload-{uuid.uuid4().hex[:12]}"
    parent = final.rsplit("/", 1)[0]
    with contextlib.suppress(Exception):
        fs.makedirs(parent, exist_ok=True)  # object stores have no directories; local fsspec targets do
    try:
        fs.put_file(str(local), temporary)
        if _sha256_remote(fs, temporary) != digest:
            raise OSError(f"{temporary}: the uploaded bytes differ from {local} (sha256)")
        fs.copy(temporary, final)
        if _sha256_remote(fs, final) != digest:
            raise OSError(f"{final}: the stored object differs from {local} (sha256)")
    finally:
        with contextlib.suppress(Exception):
            fs.rm_file(temporary)
    fs.invalidate_cache()


def fetch(url: str, dest: Path) -> Path:
    """``url`` (an object, or every object under a prefix) copied into ``dest``: the local path that stands for
    it. Bounded in files and bytes; raises ``ConfigError`` naming the URL when it cannot be read."""
    fs, path = filesystem(url)
    try:
        if fs.isfile(path):
            target = dest / path.rsplit("/", 1)[-1]
            _get(fs, path, target)
            return target
        found = fs.find(path, detail=True)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a backend's own errors (credentials, endpoint) are input errors
        raise ConfigError(f"{redact(url)}: cannot read it: {_one_line(exc)}") from None
    if not found:
        raise ConfigError(f"{redact(url)}: no such object or prefix")
    if len(found) > MAX_FETCH_FILES:
        raise ConfigError(f"{redact(url)}: more than {MAX_FETCH_FILES} objects under it: give a run's prefix")
    total = sum(int(info.get("size") or 0) for info in found.values())
    if total > MAX_FETCH_BYTES:
        raise ConfigError(f"{redact(url)}: {total} bytes under it, over {MAX_FETCH_BYTES}: give a run's prefix")
    root = dest / path.rsplit("/", 1)[-1]
    for key in sorted(found):
        rel = key[len(path):].lstrip("/")
        if not rel or ".p4t-upload-" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
            continue  # an upload in progress, or a key that would leave the directory
        _get(fs, key, root / rel)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _get(fs: Any, key: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs.get_file(key, str(target))
    except Exception as exc:  # noqa: BLE001 - as in fetch
        raise ConfigError(f"{key}: cannot read it: {_one_line(exc)}") from None


# the commands that read run files; an object-store URL among their arguments is fetched first (http(s) URLs are
# left alone: no reader takes one as an input, and options such as a live endpoint do)
READERS = frozenset({"merge", "check", "lineage", "show", "validate", "report", "export", "render", "verify"})
_OUTPUT_OPTIONS = frozenset({"-o", "--out", "--output"})


def _fetchable(token: str) -> bool:
    m = _URL.match(token)
    return m is not None and m.group(1).lower() not in ("file", "http", "https")


@contextlib.contextmanager
def fetched_argv(argv: list[str], wait: Any = None) -> Iterator[list[str]]:
    """``argv`` of a reading command with each object-store URL replaced by a local copy (removed afterwards).
    ``wait(local_dirs) -> bool``, when given, is asked after each fetch whether to fetch again (a merge waiting
    for the ranks of a job on several nodes)."""
    if len(argv) < 2 or argv[1] not in READERS:
        yield argv
        return
    for i, t in enumerate(argv):
        name, eq, value = t.partition("=")
        target = value if eq and name in _OUTPUT_OPTIONS else (t if i >= 2 and argv[i - 1] in _OUTPUT_OPTIONS else "")
        if _fetchable(target):
            raise ConfigError(f"{redact(target)}: {argv[1]} writes a local file; give a local path and publish it "
                              "with prov4torch upload DIR URL")
    spots = [i for i, t in enumerate(argv) if i >= 2 and _fetchable(t) and argv[i - 1] not in _OUTPUT_OPTIONS]
    if not spots:
        yield argv
        return
    tmp = Path(tempfile.mkdtemp(prefix="prov4torch-fetch-"))
    try:
        while True:
            shutil.rmtree(tmp, ignore_errors=True)
            local = {i: fetch(argv[i], tmp / str(i)) for i in spots}
            if wait is None or not wait([p for p in local.values() if p.is_dir()]):
                break
        yield [str(local[i]) if i in local else t for i, t in enumerate(argv)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
