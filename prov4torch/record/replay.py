"""A journal's events replayed into the state they describe (``RunRecord``).

``end_run`` replays the run's own events, ``recover`` the journal a dead process left (decoded by
``prov4torch.events.decode``, which refuses what does not fit): both then build the document from the
same kind of record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import provjson
from ..events import (
    CONTENT_FIELDS,
    Artifact,
    Attrs,
    Context,
    Dataset,
    DatasetDigest,
    Decision,
    End,
    EnvInfo,
    Event,
    Identity,
    Launcher,
    ModelLoaded,
    ModelSaved,
    Param,
    PolicyAdopted,
    Signal,
    Start,
    Tag,
    Usage,
    valid_time,
)
from ..governance.tags import attributes_of, combined, tag_conflicts


@dataclass
class Sidecar:
    path: str  # relative to the run directory
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """The state a journal describes, replayed from its events in order.

    Replay never raises: an event whose time is out of range, or a second start, is skipped and counted in
    ``skipped`` (lines ``decode`` refused never become events: their reader counts them).
    """

    start: Start | None = None
    context: Context = field(default_factory=Context)
    end: End | None = None
    launcher: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    run_attrs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    usage: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # dataset id -> role -> totals
    aliases: dict[str, str] = field(default_factory=dict)  # provisional dataset id -> content id
    digests: dict[str, DatasetDigest] = field(default_factory=dict)  # provisional id -> what hashing found
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    models: list[ModelSaved] = field(default_factory=list)
    loads: dict[str, ModelLoaded] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    env_extra: dict[str, Any] = field(default_factory=dict)
    last_time: float | None = None
    skipped: int = 0

    @classmethod
    def replay(cls, events: Iterable[Event]) -> RunRecord:
        rec = cls()
        for ev in events:
            if not rec.apply(ev):
                rec.skipped += 1
        return rec

    def resolve(self, dataset_id: str) -> str:
        """A dataset id as it ends up in the document (a provisional id -> its content id)."""
        return self.aliases.get(dataset_id, dataset_id)

    def apply(self, ev: Event) -> bool:
        """Add one event; False (and nothing changed) for one that cannot apply here."""
        t = ev.time
        if t is not None and not valid_time(t):
            return False
        if isinstance(ev, Start) and self.start is not None:
            return False
        if t is not None:
            self.last_time = max(self.last_time or t, t)
        match ev:
            case Start():
                self.start = ev
            case Context():
                self.context = ev
            case EnvInfo():
                self.env_extra.update(ev.info)
            case End():
                self.end = ev
            case Launcher():
                self.launcher = True
            case Identity():
                if self.start is not None:
                    self.start = dataclasses.replace(self.start, world_size=ev.world_size)
            case PolicyAdopted():  # from then on: the run's policy, and when it came into force
                if self.start is not None and self.start.policy is None:
                    self.start = dataclasses.replace(self.start, policy={**ev.policy, "adopted": t})
            case Param():
                self.params[ev.key] = ev.value
            case Tag():
                self.tags[ev.key] = ev.value
            case Attrs():
                self.run_attrs.update(ev.attrs)
            case Dataset():
                digest = self.digests.get(ev.id)
                self._dataset(self.resolve(ev.id), _with_content(ev, digest) if digest is not None else ev)
            case DatasetDigest():
                self._digest(ev)
            case Usage():
                did = self.resolve(ev.id)
                if did in self.datasets:
                    self.usage.setdefault(did, {}).update(ev.usage)
            case Artifact():
                self.artifacts[ev.id] = ev
            case ModelSaved():
                self.models.append(ev)
            case ModelLoaded():
                self.loads.setdefault(ev.id, ev)
            case Signal():
                self.signals.append(ev)
            case Decision():
                self.decisions.append(ev)
        return True

    def _digest(self, ev: DatasetDigest) -> None:
        """Background hashing finished: the provisional id has a content id (the hash can finish before its
        dataset's event is in the journal)."""
        self.aliases[ev.key] = ev.id
        self.digests[ev.key] = ev
        rec = self.datasets.pop(ev.key, None)
        if rec is not None:
            usage = self.usage.pop(ev.key, None)
            self._dataset(ev.id, _with_content(rec, ev))
            if usage:
                self.usage.setdefault(ev.id, {}).update(usage)

    def _dataset(self, did: str, ev: Dataset) -> None:
        """Attach a dataset; the same data attached again keeps its first record, adds roles, and -- given other
        tags -- holds the restrictive combination of both (``reattached``)."""
        prev = self.datasets.get(did)
        if prev is not None:
            ev = reattached(prev, ev)
        self.datasets[did] = dataclasses.replace(ev, id=did)


def reattached(prev: Dataset, again: Dataset) -> Dataset:
    """The record of data attached again (the same object, or other objects of the same content): its first
    record with every role, and the restrictive combination of each attachment's tags -- a later claim about the
    same content is never dropped (two claims that disagree leave the data under both: consent intersected,
    restrictions and jurisdictions united), and the disagreement is recorded (``p4t:tagConflict``)."""
    roles = sorted(set(prev.roles) | set(again.roles))
    if not again.governance or again.governance == prev.governance:
        return dataclasses.replace(prev, roles=roles)
    governance = combined([g for g in (prev.governance, again.governance) if g])
    conflicts = [*(prev.tag_conflicts or ()), *(again.tag_conflicts or ()),
                 *tag_conflicts([("first attachment", prev.governance), ("attached again", again.governance)])]
    tags_from = sorted({*(prev.tags_from or ()), *(again.tags_from or ())})
    return dataclasses.replace(prev, roles=roles, governance=governance,
                               tags=provjson.attributes(attributes_of(governance)),
                               tag_conflicts=list(dict.fromkeys(conflicts)) or None,
                               tags_from=tags_from or (None if prev.tags_from is None and again.tags_from is None
                                                       else []))


def _with_content(ds: Dataset, digest: DatasetDigest) -> Dataset:
    """A dataset's record with what its digest found (the digest's fields win)."""
    return dataclasses.replace(ds, id=digest.id, **{k: getattr(digest, k) for k in CONTENT_FIELDS})
