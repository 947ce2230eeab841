"""The journal's events: one frozen dataclass per kind, one ``encode``/``decode`` pair.

A rank's journal (``rank-K.journal.jsonl``) is the contract between recording, the policy gate (which
records its decisions), ``recover`` and the document builder: one JSON object per line, ``"t"`` naming
the kind and ``"v"`` the version of its shape (``EVENT_VERSION``; a line without one is version 1).

    Event
    ├── Start          the run's identity and this process's (always first)
    ├── Context        code, environment, package list (gathered off the training thread)
    ├── EnvInfo        facts found later (GPU models from NVML)
    ├── Launcher       this process started the job's ranks and trained nothing itself
    ├── Identity       the world size learnt after the start (a process group initialised later)
    ├── PolicyAdopted  the script's own policy, enforced from its start_run (under prov4torch run, none given)
    ├── Param, Tag     one hyperparameter, one run tag
    ├── Attrs          attributes for the rank activity (sampler summaries), already PROV-encoded
    ├── Dataset        data attached under a role, with its identity and governance
    ├── DatasetDigest  background hashing named a provisional dataset's content
    ├── Usage          samples/batches/epochs/reads consumed from a dataset under a role (totals)
    ├── Artifact       a file or directory the run wrote (or read: ``used``)
    ├── ModelSaved     a checkpoint the run produced, with its lineage
    ├── ModelLoaded    a checkpoint the run used, with the lineage it brings
    ├── Decision       a policy check and its verdict
    ├── Signal         a signal arrived
    └── End            how the run ended (always last)

``decode`` trusts nothing: a journal is a file on disk that a crash can tear and anyone can edit. A line of
an unknown kind, a newer version, a missing field or a value of the wrong type raises ``MalformedEventError``
naming the kind and field; readers count those (``recover`` and ``p4t:journalSkippedEvents`` say how many),
they never pass silently. ``encode`` writes only fields that differ from their defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from .errors import MalformedEventError

EVENT_VERSION = 1
END_STATUSES = ("FINISHED", "FAILED", "KILLED", "BLOCKED")  # how a run ends (an ``End`` event says which)
STATUSES = (*END_STATUSES, "INCOMPLETE")  # and a run rebuilt by ``recover`` that never ended
MIN_TIME, MAX_TIME = 0.0, 7_258_118_400.0  # event times (Unix seconds) accepted: 1970 .. 2200

JsonObject = dict[str, Any]  # a JSON object whose inner shape is another contract's (tags, PROV attributes)


def valid_time(t: Any) -> bool:
    return isinstance(t, (int, float)) and not isinstance(t, bool) and MIN_TIME <= t <= MAX_TIME


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    KIND: ClassVar[str] = ""
    v: int = EVENT_VERSION
    time: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Start(Event):
    KIND: ClassVar[str] = "start"
    run_id: str
    run_name: str | None = None
    experiment: str | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    attempt: int | None = None
    previous_attempt: str | None = None
    region: str | None = None
    purpose: str | None = None
    intended_use: str | None = None
    policy: JsonObject | None = None  # id, name, version, sha256, source, mode
    launched_by: str | None = None
    host: str | None = None
    pid: int | None = None
    user: str | None = None
    command_line: str | None = None
    prov4torch: str | None = None
    torch_seed: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Context(Event):
    KIND: ClassVar[str] = "context"
    code: JsonObject = field(default_factory=dict)
    environment: JsonObject = field(default_factory=dict)
    packages: JsonObject = field(default_factory=dict)  # path, count, sha256 of the package-list sidecar


@dataclass(frozen=True, kw_only=True, slots=True)
class EnvInfo(Event):
    KIND: ClassVar[str] = "env"
    info: JsonObject


@dataclass(frozen=True, kw_only=True, slots=True)
class Launcher(Event):
    KIND: ClassVar[str] = "launcher"


@dataclass(frozen=True, kw_only=True, slots=True)
class Identity(Event):
    KIND: ClassVar[str] = "identity"
    world_size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyAdopted(Event):
    KIND: ClassVar[str] = "policy"
    policy: JsonObject  # as ``Start.policy``


@dataclass(frozen=True, kw_only=True, slots=True)
class Param(Event):
    KIND: ClassVar[str] = "param"
    key: str
    value: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Tag(Event):
    KIND: ClassVar[str] = "tag"
    key: str
    value: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Attrs(Event):
    KIND: ClassVar[str] = "attrs"
    attrs: JsonObject


@dataclass(frozen=True, kw_only=True, slots=True)
class ContentFields(Event):
    """What a digest says of data: shared by ``Dataset`` and ``DatasetDigest``."""

    sha256: str | None = None
    size: int | None = None
    digest_method: str | None = None
    identity: str = "content"  # content, declared, unidentified, pending
    files: list[list[Any]] | None = None  # [name, sha256, size] per file
    file_count: int | None = None
    covers: list[str] | None = None
    skipped: list[str] | None = None
    unidentified_reason: str | None = None


CONTENT_FIELDS = ("sha256", "size", "digest_method", "identity", "files", "file_count", "covers", "skipped",
                  "unidentified_reason")


@dataclass(frozen=True, kw_only=True, slots=True)
class Dataset(ContentFields):
    KIND: ClassVar[str] = "dataset"
    id: str
    roles: list[str]
    name: str | None = None
    source: str | None = None
    cls: str | None = None
    length: int | None = None
    tags: JsonObject = field(default_factory=dict)  # PROV-encoded governance attributes
    governance: JsonObject = field(default_factory=dict)  # the same, as the runtime judges them
    tag_conflicts: list[str] | None = None
    tags_from: list[str] | None = None
    derived_from: list[str] | None = None  # the datasets of this run it was made from (a view, a map, a part)


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetDigest(ContentFields):
    KIND: ClassVar[str] = "dataset_digest"
    key: str  # the provisional id
    id: str  # the content id (or a declared / run-scoped one)


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage(Event):
    KIND: ClassVar[str] = "usage"
    id: str
    usage: dict[str, dict[str, int]]  # role -> samples/batches/epochs/reads so far


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact(Event):
    KIND: ClassVar[str] = "artifact"
    id: str
    name: str
    path: str
    kind: str = "artifact"
    used: bool = False
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Checkpoint(Event):
    """What a checkpoint's bytes say: shared by ``ModelSaved`` and ``ModelLoaded``."""

    id: str
    sha256: str | None = None
    size: int | None = None
    weights_sha256: str | None = None
    root_sha256: str | None = None
    files: list[list[Any]] | None = None
    path: str | None = None
    tags: JsonObject = field(default_factory=dict)
    governance: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSaved(Checkpoint):
    KIND: ClassVar[str] = "model"
    name: str
    version: int
    save_error: str | None = None
    step: int | None = None
    epoch: int | None = None
    revision_of: str | None = None
    derived_from: list[str] = field(default_factory=list)
    lineage_gap: bool = False
    sidecar: str | None = None
    sidecar_signed: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelLoaded(Checkpoint):
    KIND: ClassVar[str] = "load"
    lineage_source: str | None = None
    lineage_verified: bool | None = None
    lineage_errors: list[str] | None = None
    lineage_conflicts: list[str] | None = None
    lineage_known: bool = False
    lineage_from: str | None = None
    upstream: dict[str, JsonObject] = field(default_factory=dict)
    derivations: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision(Event):
    KIND: ClassVar[str] = "decision"
    policy_id: str | None = None
    policy_attrs: JsonObject = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    role: str | None = None
    attrs: JsonObject = field(default_factory=dict)  # verdict, rule, reason... PROV-encoded

    @property
    def enforced_deny(self) -> bool:
        """A use the policy blocked (a deny in enforce mode), not one it only recorded."""
        return self.attrs.get("p4t:verdict") == "deny" and self.attrs.get("p4t:mode") == "enforce"


@dataclass(frozen=True, kw_only=True, slots=True)
class Signal(Event):
    KIND: ClassVar[str] = "signal"
    signal: int
    signal_name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class End(Event):
    KIND: ClassVar[str] = "end"
    status: str
    torch_seed: int | None = None
    exit_code: int | None = None
    signal_name: str | None = None
    exception: dict[str, str] | None = None  # type, message


KINDS: dict[str, type[Event]] = {cls.KIND: cls for cls in (
    Start, Context, EnvInfo, Launcher, Identity, PolicyAdopted, Param, Tag, Attrs, Dataset, DatasetDigest, Usage,
    Artifact, ModelSaved, ModelLoaded, Decision, Signal, End)}


# -- the codec -------------------------------------------------------------------------------------------------

_FIELDS: dict[str, tuple[tuple[str, Any, Any], ...]] = {}


def _fields(cls: type[Event]) -> tuple[tuple[str, Any, Any], ...]:
    """(name, type, default or MISSING) of each field, the type resolved from its annotation."""
    known = _FIELDS.get(cls.KIND)
    if known is None:
        hints = typing.get_type_hints(cls)
        known = _FIELDS[cls.KIND] = tuple(
            (f.name, hints[f.name], f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls))
    return known


def encode(event: Event) -> dict[str, Any]:
    """The JSON object of one event: ``t``, ``v``, and every field that differs from its default."""
    out: dict[str, Any] = {"t": event.KIND, "v": event.v}
    for name, _, default in _fields(type(event)):
        value = getattr(event, name)
        if name != "v" and (default is dataclasses.MISSING or value != default):
            out[name] = value
    return out


def decode(obj: Any) -> Event:
    """The event a JSON object describes; ``MalformedEventError`` naming the kind and field if it does not fit."""
    if not isinstance(obj, Mapping):
        raise MalformedEventError(f"an event is a JSON object, got {type(obj).__name__}")
    kind = obj.get("t")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MalformedEventError(f"unknown event kind {str(kind)[:40]!r}")
    version = obj.get("v", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EVENT_VERSION:
        raise MalformedEventError(f"{kind}: version {repr(version)[:20]} is not one this prov4torch reads "
                                  f"(1..{EVENT_VERSION}): upgrade prov4torch")
    values: dict[str, Any] = {}
    for name, hint, default in _fields(cls):
        if name not in obj:
            if default is dataclasses.MISSING:
                raise MalformedEventError(f"{kind}: field {name!r} is missing")
            continue
        value = obj[name]
        if not _fits(value, hint):
            raise MalformedEventError(f"{kind}: field {name!r} is not {_describe(hint)}: {str(value)[:60]!r}")
        values[name] = value
    if values.get("time") is not None and not valid_time(values["time"]):
        raise MalformedEventError(f"{kind}: time {values['time']!r} is outside 1970..2200")
    _check_ranges(cls.KIND, values)
    return cls(**values)


def _check_ranges(kind: str, values: Mapping[str, Any]) -> None:
    for key in ("rank", "world_size", "local_rank", "attempt", "version", "pid"):
        v = values.get(key)
        if v is not None and not 0 <= v < 2**31:
            raise MalformedEventError(f"{kind}: field {key!r} is out of range: {v!r}")
    if kind == "end" and values["status"] not in END_STATUSES:
        raise MalformedEventError(f"end: field 'status' is not one of {', '.join(END_STATUSES)}: "
                                  f"{str(values['status'])[:40]!r}")
    if kind == "identity" and values["world_size"] < 1:
        raise MalformedEventError("identity: field 'world_size' must be at least 1")


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_fits(k, key) and _fits(v, item) for k, v in value.items())
    return False


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
