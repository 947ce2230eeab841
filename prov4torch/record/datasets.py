"""Datasets as a run records them: an id from their content, what they are, their validated tags.

Identity (``p4t:identity`` in the record):

* ``content``: the id is the digest of what the dataset holds (its files, or its tensors, arrays
  and lists, hashed completely; see ``identity.dataset_digest``), shared across runs;
* ``declared``: nothing content-like could be reached, and the user named the data
  (``dataset_id=``): ``p4t:dataset/declared/<id>``;
* ``unidentified``: neither; the id is scoped to this run, so two different datasets never
  share an id silently.

Hashing never calls ``__getitem__`` (no random number is drawn, no sample is decoded). Small
data (up to ``SYNC_LIMIT`` bytes) is hashed at once; larger data on a background thread: the
dataset is recorded (and policy-checked: the gate needs its tags, not its digest) under a
provisional run-scoped id, and a ``dataset_digest`` event names its content id when hashing
ends. The same object attached again (a DataLoader rebuilt every epoch) is not hashed again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import events as ev
from .. import provjson
from ..errors import InvalidValueError, OverBudget, UnreadableContentError
from ..governance.declared import DECLARED, Rule
from ..governance.tags import ROLE, attributes_of, combined, governance_attributes, tag_conflicts
from ..warn import warn
from .identity import Digest, DigestCache, dataset_digest, digest_path, estimated_bytes
from .ids import content_id
from .ids import local as local_name
from .sharedmem import SHARED, Buffer, SharedMemory, buffers
from .texts import MAX_FILE_BYTES as MAX_TEXT_BYTES
from .texts import TextSources

Found = tuple[str, dict[str, Any]]  # tags and where they come from
SYNC_LIMIT = 64 << 20  # bytes hashed on the caller's thread; more goes to the background
MAX_FILES_RECORDED = 1000  # per-file digests kept in the record (the root digest covers them all)


def unwrap(data: Any) -> Any:
    """The dataset behind a DataLoader (or a DataLoader subclass, or a wrapper exposing ``.dataset``)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.utils.data.DataLoader):
        return data.dataset
    return data


def dataset_paths(data: Any) -> list[str]:
    """File paths a dataset object exposes (root, path, file attributes)."""
    found = []
    try:
        attrs = vars(data) if hasattr(data, "__dict__") else {}
    except Exception:  # noqa: BLE001 - a user object that fails when looked at
        return []
    for attr in ("root", "path", "file", "filename", "data_dir", "data_file"):
        v = attrs.get(attr)
        if isinstance(v, (str, os.PathLike)) and os.path.exists(v):
            found.append(str(Path(v).resolve()))
    return found


def _declared_rules(local: list[str], fields: Mapping[str, Any], *, name: str | None, ids: list[str]) -> list[Rule]:
    """The rules of tags declared outside the code (a tags file, Croissant, a card) for data at the paths ``local``
    whose content is ``fields`` (``_digest_fields``): by path -- a folder's files' too --, name, id or content."""
    files = fields.get("files") or []
    return DECLARED.for_dataset(paths=[*local, *(str(Path(local[0]) / f[0]) for f in files if local)], name=name,
                                ids=ids, digests=[fields.get("sha256") or "", *(f[1] for f in files)])


def _digest_fields(d: Digest) -> dict[str, Any]:
    fields: dict[str, Any] = {"sha256": d.sha256, "size": d.size, "digest_method": d.method, "identity": "content"}
    if d.files and (len(d.files) > 1 or d.method != "sha256-file"):
        fields["files"] = [[f.name, f.sha256, f.size] for f in d.files[:MAX_FILES_RECORDED]]
        fields["file_count"] = len(d.files)
    if d.covers:
        fields["covers"] = list(d.covers)
    if d.skipped:
        fields["skipped"] = list(d.skipped)
    return fields


class DatasetIdentifier:
    """Names the datasets of one run; ``on_digest`` receives background results as events."""

    def __init__(self, scope: str, cache: DigestCache, on_digest: Callable[[ev.DatasetDigest], None]) -> None:
        self.scope = scope  # the run's activity id: run-scoped ids live under it
        self.cache = cache
        self.on_digest = on_digest
        self._by_object: dict[int, tuple[Any, str]] = {}  # id(obj) -> (obj kept alive, dataset id)
        self._governance: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(obj) -> (obj, its governance summary)
        self._memory = SharedMemory()  # the tensors and arrays of tagged datasets (``sharedmem``)
        # id(obj) -> (a reference to obj, the governance and the attached datasets it was derived from: ``derive``)
        self._derived: dict[int, tuple[Callable[[], Any], list[tuple[str, dict[str, Any]]], list[str]]] = {}
        # (file, how it was read) -> (its stat, the tags declared for it and where from): matched once while unchanged
        self._read_governance: dict[tuple[str, str], tuple[tuple[int, int, int], list[Found]]] = {}
        self.texts = TextSources()  # tagged text files the script read (``texts``)
        self.represented: set[str] = set()  # files an attached dataset stands for (its path, its strings' file)
        self._count = 0
        # reentrant: a signal handler that ends the run may interrupt the main thread while it holds this lock
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def known(self, data: Any) -> str | None:
        """The id already given to this very object in this run, if any."""
        entry = self._by_object.get(id(unwrap(data)))
        return entry[1] if entry is not None and entry[0] is unwrap(data) else None

    def identify(self, data: Any, *, name: str | None, role: str, source: str | None,
                 tags: Mapping[str, Any], time: float | None = None) -> ev.Dataset:
        """The journal event of one dataset attachment (see the module docstring)."""
        if not isinstance(role, str) or not ROLE.match(role):
            raise InvalidValueError(
                f"role must be a lower-case word such as training/validation/testing, got {role!r}", value=role)
        governance_attributes(tags)  # the code's own tags are checked first: their errors name them
        data = unwrap(data)
        event: dict[str, Any] = {"roles": [role], "time": time}
        if isinstance(data, (str, os.PathLike)):
            p = Path(os.path.abspath(data))
            local = [str(p), str(p.resolve())] if p.resolve() != p else [str(p)]
            event.update(source=source or p.as_uri(), name=name or p.name)
            try:
                event.update(_digest_fields(digest_path(p, self.cache)))
                event["id"] = content_id("dataset", event["sha256"])
            except UnreadableContentError as exc:  # closed, not skipped: recorded, tagged by path, and gated
                event.update(id=self._run_scoped(), identity="unidentified", unidentified_reason=str(exc)[:2000])
                warn(f"prov4torch: {exc}; the dataset is recorded as unidentified and the policy judges it "
                           "as such")
        else:
            local = dataset_paths(data)
            event.update(cls=f"{type(data).__module__}.{type(data).__qualname__}", name=name or type(data).__name__,
                         source=source or (Path(local[0]).as_uri() if len(local) == 1 else None),
                         length=_length(data))
            self._identify_object(data, event, tags.get("dataset_id"))
        # every tag set for this content: the code's, tags declared outside it (a tags file, Croissant, a dataset
        # card) by path, name, id or content, and -- for a wrapper (Subset, ConcatDataset, random_split...) --
        # those of the data it is made of; combined restrictively, a disagreement recorded
        rules = _declared_rules(local, event, name=event.get("name"),
                                ids=[event["id"], *([str(tags["dataset_id"])] if tags.get("dataset_id") else [])])
        sets: list[tuple[str, dict[str, Any]]] = [("the code", summary(governance_attributes(tags)))] if tags else []
        sets += [(rule.source.describe(), summary(governance_attributes(rule.tags))) for rule in rules]
        sources: list[str] = []  # the datasets of this run it was made from: wasDerivedFrom in the record
        held: list[Buffer] | None = None
        if not isinstance(data, (str, os.PathLike)):
            made_of = parts(data)
            sets += self._parts_governance(made_of)
            sources += [did for part in made_of if (did := self._attached_id(part))]
            held = buffers(data) if self._memory.noted else None  # its tensors and arrays (walked once)
            for owner, where, shared in self._memory.shared_with(data, held or []):  # a tagged dataset's (a slice)
                sets.append((where, shared))
                sources += [did for did in [self._attached_id(owner)] if did]
            derived = self._derived.get(id(data))  # a transformation's result (``derive``)
            if derived is not None and derived[0]() is data:
                sets += derived[1]
                sources += derived[2]
            if not sets and self.texts.sources:  # strings the script made of a tagged text file it read: its tags
                found, files = self.texts.found_in(data)
                sets += found
                sources += files
                self.represented.update(self.texts.files_of(files))
        self.represented.update(local)
        governance = combined([g for _, g in sets])
        conflicts = tag_conflicts(sets)
        if conflicts:
            event["tag_conflicts"] = conflicts
            warn(f"prov4torch: {event.get('name')}: its tag sources disagree; the more restrictive tags hold: "
                 + "; ".join(conflicts)[:400])
        tags_from = sorted({where for where, _ in sets if where != "the code"})
        if tags_from or rules:
            event["tags_from"] = tags_from
        if event.get("identity") == "unidentified" and governance.get("p4t:datasetId"):
            declared = governance["p4t:datasetId"]
            declared = declared[0] if isinstance(declared, list) else declared
            event.update(id=f"p4t:dataset/declared/{local_name(str(declared))}", identity="declared")
        sources = sorted(set(sources) - {event["id"]})
        if sources:
            event["derived_from"] = sources
        event["tags"] = provjson.attributes(attributes_of(governance))
        event["governance"] = governance
        with self._lock:
            self._by_object[id(data)] = (data, event["id"])
            self._governance[id(data)] = (data, governance)
        if governance and not isinstance(data, (str, os.PathLike)):
            self._memory.note(data, held if held is not None else buffers(data), f"{event.get('name')} "
                              f"({event['id']})", governance)
        return ev.Dataset(**event)

    def derive(self, result: Any, sources: list[Any]) -> None:
        """``result`` was made from ``sources`` -- datasets (a Hugging Face ``map`` of one, a concatenation), or
        the files a loader converted (``load_dataset("csv", data_files=...)``): it carries their tags. Resolved
        now (a chain of ``map`` results the script drops as it goes keeps what its first link carried); the
        result is held weakly (an intermediate table is not kept alive for the run)."""
        found: list[tuple[str, dict[str, Any]]] = []
        ids: list[str] = []
        for source in sources[:MAX_PARTS]:
            if isinstance(source, (str, os.PathLike)):
                found += self._file_governance(Path(os.path.abspath(source)))
                self.represented.update((os.path.abspath(source), os.path.realpath(source)))  # the result stands for it
                continue
            known = self._governance.get(id(source))
            if known is not None and known[0] is source:
                if known[1]:
                    found.append((f"derived from {type(source).__name__}", known[1]))
                ids += [did for did in [self._attached_id(source)] if did]
                continue
            entry = self._derived.get(id(source))  # itself derived, never attached: what it came from
            if entry is not None and entry[0]() is source:
                found += entry[1]
                ids += entry[2]
        try:
            ref: Callable[[], Any] = weakref.ref(result)
        except TypeError:  # not weakly referable: kept

            def ref() -> Any:
                return result
        with self._lock:
            if len(self._derived) >= MAX_DERIVED:
                self._derived = {k: v for k, v in self._derived.items() if v[0]() is not None}
            if len(self._derived) < MAX_DERIVED:
                self._derived[id(result)] = (ref, found, ids)

    def read_into(self, result: Any, path: str) -> None:
        """``result`` holds what a reader (``np.load``, ``np.loadtxt``, ``pandas.read_csv``) read from the file
        ``path``: its memory carries the tags declared for the file (by path and content), so a tensor made on it
        (``torch.from_numpy``, a slice of it) carries them when attached. Not kept alive (noted ``weakly``)."""
        governance = combined([g for _, g in self._path_governance(path, "built from")])
        if not governance:
            return
        held = buffers(result)
        if held:
            self._memory.note(path, held, f"{os.path.basename(path)} (read from the file)", governance, weakly=True)

    def tagged_file_read(self, path: str, encoding: str | None) -> bool:
        """The script opened the file ``path`` to read text: whether tags are declared for it (by path or content);
        its strings then carry them into the datasets made of them (``texts``)."""
        path = os.path.abspath(path)
        if path in self.texts.sources:
            return True
        # any file the script opens to read is looked at: a large one (a log, an untagged corpus) by its path alone,
        # not hashed at its open()
        found = self._path_governance(path, "text read from", MAX_TEXT_BYTES)
        if not found:
            return False
        dataset_id = None
        with contextlib.suppress(Exception):  # unreadable now: its pieces cannot be read either (nothing matches)
            if os.stat(path).st_size <= MAX_TEXT_BYTES:
                dataset_id = content_id("dataset", digest_path(Path(path), self.cache).sha256)
        if dataset_id is not None:
            self.texts.opened(path, encoding, found, dataset_id)
        return True

    def _path_governance(self, path: str, how: str, hashed_up_to: int | None = None) -> list[Found]:
        """The tags declared for the file ``path`` (by path and content: by path alone past ``hashed_up_to`` bytes),
        remembered while the file is unchanged (a file read again and again: nanoGPT's memmap per batch)."""
        if not DECLARED.rules:
            return []  # no tags declared for any file
        try:
            st = os.stat(path)
        except OSError:
            return []
        key, seen = (os.path.abspath(path), how), (st.st_size, st.st_mtime_ns, len(DECLARED.rules))
        cached = self._read_governance.get(key)
        if cached is not None and cached[0] == seen:
            return cached[1]
        found = self._file_governance(Path(key[0]), how, hashed_up_to is None or st.st_size <= hashed_up_to)
        if len(self._read_governance) < MAX_DERIVED:
            self._read_governance[key] = (seen, found)
        return found

    def memory_governance(self, tensor: Any) -> tuple[str, dict[str, Any]] | None:
        """The tags the memory of ``tensor`` carries (a tagged dataset's, a tagged file's a reader filled) and
        where they come from; None if none (``record.ipc``)."""
        if not self._memory.noted:
            return None
        found = self._memory.shared_with(tensor, buffers(tensor))
        if not found:
            return None
        names = sorted({where.removeprefix(SHARED) for _, where, _ in found})
        return "; ".join(names)[:300], combined([g for _, _, g in found])

    def note_memory(self, tensor: Any, where: str, governance: dict[str, Any]) -> None:
        """``tensor`` (received from another process) carries ``governance``: its memory is noted, kept alive."""
        self._memory.note(where, buffers(tensor), where, governance)  # (noted for ``where``: the tensor itself,
        # attached later, is no other dataset whose memory it shares)

    def _attached_id(self, obj: Any) -> str | None:
        """The id this very object was attached under in this run, if it was."""
        entry = self._by_object.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else None

    def _file_governance(self, path: Path, how: str = "built from", by_content: bool = True) -> list[Found]:
        """Tags declared for a file or folder a dataset was built from, by its path and content."""
        fields: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # unreadable: its path still names it (a failure never drops tags)
            fields = _digest_fields(digest_path(path, self.cache)) if by_content else {}
        rules = _declared_rules([str(path), str(path.resolve())], fields, name=None, ids=[])
        return [(f"{rule.source.describe()} ({how} {path.name})", summary(governance_attributes(rule.tags)))
                for rule in rules]

    def _parts_governance(self, made_of: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        """The governance of the data a wrapper is made of (its ``parts``): parts attached before (the same
        objects), and parts that tags files name by path or name."""
        out = []
        for part in made_of:
            known = self._governance.get(id(part))
            if known is not None and known[0] is part and known[1]:
                out.append((f"part {type(part).__name__}", known[1]))
                continue
            local = dataset_paths(part)
            for rule in DECLARED.for_dataset(paths=local, name=type(part).__name__, ids=[], digests=[]):
                out.append((f"{rule.source.describe()} (part {type(part).__name__})",
                            summary(governance_attributes(rule.tags))))
        return out

    def _identify_object(self, data: Any, event: dict[str, Any], declared: Any) -> None:
        try:
            small = estimated_bytes(data) <= SYNC_LIMIT
        except Exception:  # noqa: BLE001 - a user object that fails when looked at: hashing says what (unidentified)
            small = True
        if small:
            prior = self.known(data)
            if prior is not None and prior.startswith(f"{self.scope}/dataset/"):
                event["id"] = prior  # this very object, attached before without a content id: the same id
            digest = self._digest(data)
            event.update(self._final(digest, declared, event))
            return
        event["id"] = self._run_scoped()
        event["identity"] = "pending"
        key = event["id"]

        def work() -> None:
            self.on_digest(ev.DatasetDigest(key=key, **self._final(self._digest(data), declared, event)))

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="prov4torch-hash")
            self._pending.append(self._pool.submit(work))

    def _digest(self, data: Any) -> Digest | str:
        """The content digest, or why there is none."""
        try:
            digest = dataset_digest(data, self.cache)
        except OverBudget as exc:
            return f"past the hashing budget: {exc}"
        except Exception as exc:  # noqa: BLE001 - a user object's failure: the dataset is unidentified
            warn(f"prov4torch: cannot hash the content of {type(data).__name__}: {exc}; it is recorded as "
                 "unidentified (give dataset_id= to name it)")
            return f"its content could not be read: {type(exc).__name__}: {str(exc)[:200]}"
        if digest is None:
            return ("nothing content-like could be reached: no tensors, arrays, files or plain Python data (a "
                    "generator, a callable, or settings alone)")
        return digest

    def _final(self, digest: Digest | str, declared: Any, event: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(digest, str):
            return {**_digest_fields(digest), "id": content_id("dataset", digest.sha256)}
        if declared:
            return {"id": f"p4t:dataset/declared/{local_name(str(declared))}", "identity": "declared",
                    "unidentified_reason": digest}
        return {"id": event.get("id") or self._run_scoped(), "identity": "unidentified", "unidentified_reason": digest}

    def after_fork(self, scope: str) -> None:
        """In a forked child: run-scoped ids of its own; no lock or hashing thread of the parent's (they did not
        survive the fork)."""
        self.scope = scope
        self._lock = threading.RLock()
        self._pool, self._pending = None, []

    def _run_scoped(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self.scope}/dataset/{self._count}"

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for background hashing; False if some is still running after ``timeout_s``."""
        with self._lock:
            pending, self._pending = self._pending, []
        for f in pending:
            try:
                f.result(timeout=timeout_s)
            except TimeoutError:
                return False
            except Exception:  # noqa: BLE001 - reported by the worker itself
                pass
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


MAX_PARTS = 1000  # component datasets followed below one wrapper (and sources above one derived dataset)
MAX_DERIVED = 100_000  # derivations remembered per run


def parts(data: Any, depth: int = 0) -> list[Any]:
    """The datasets a wrapper is made of, at any depth: ``Subset.dataset`` (``random_split`` too),
    ``ConcatDataset.datasets``, ``ChainDataset.datasets``, any object holding its data in a ``dataset`` or
    ``datasets`` attribute, and any torch ``Dataset`` held in an attribute of another name (``self.base``), or in a
    list, tuple or dict there (read from the instance's own attributes: no property is called)."""
    found: list[Any] = []
    stack = [(data, 0)]
    seen = {id(data)}
    while stack and len(found) < MAX_PARTS:
        obj, level = stack.pop()
        try:
            children = _children(obj)
        except Exception:  # noqa: BLE001 - a user object that fails when looked at has no parts we can name
            continue
        for child in children:
            if child is None or isinstance(child, (str, bytes, int, float)) or id(child) in seen:
                continue
            seen.add(id(child))
            found.append(child)
            if level < 8:
                stack.append((child, level + 1))
    return found


def _children(obj: Any) -> list[Any]:
    attrs = vars(obj) if hasattr(obj, "__dict__") else {}
    torch_data = sys.modules.get("torch.utils.data")
    kinds = (torch_data.Dataset, torch_data.DataLoader) if torch_data is not None else ()
    out: list[Any] = []
    for name, value in attrs.items():
        if name == "dataset":  # duck-typed wrappers keep their data under these names
            out.append(value)
        elif name == "datasets":
            out.extend(value if isinstance(value, (list, tuple)) else [])
        if name in ("dataset", "datasets") or not kinds:
            continue
        values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        out.extend(unwrap(v) for v in itertools.islice(values, MAX_PARTS) if isinstance(v, kinds))
    return out


def summary(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Validated governance attributes as the run keeps them (an expiry as an ISO string in UTC)."""
    return {k: (v.astimezone(_dt.UTC).isoformat() if isinstance(v, _dt.datetime) else v) for k, v in attrs.items()}


def _length(data: Any) -> int | None:
    try:
        n = len(data)
    except Exception:  # noqa: BLE001 - iterable datasets, user objects whose __len__ fails
        return None
    return n if isinstance(n, int) else None
