"""A journal's events replayed into the state they describe (``RunRecord``).

``end_run`` replays the run's own events, ``recover`` the journal a dead process left:
both then build the document from the same kind of record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import MAX_TIMESTAMP, MIN_TIMESTAMP

_CONTEXT_KEYS = ("code", "environment", "packages")


@dataclass
class Sidecar:
    path: str  # relative to the run directory
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


# event times outside this window (Unix seconds) are ignored: 1970 .. 2200 (the window log_metric enforces)
MIN_TIME, MAX_TIME = MIN_TIMESTAMP, MAX_TIMESTAMP


def valid_time(t: Any) -> bool:
    return isinstance(t, (int, float)) and not isinstance(t, bool) and MIN_TIME <= t <= MAX_TIME


@dataclass
class RunRecord:
    """The state a journal describes, replayed from its events in order.

    Replay never raises: an event of the wrong shape (a hand-edited or corrupted journal) is
    skipped and counted in ``skipped``.
    """

    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    run_attrs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # provisional dataset id -> content id
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)  # provisional id -> its content fields
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    env_extra: dict[str, Any] = field(default_factory=dict)
    last_time: float | None = None
    skipped: int = 0

    @classmethod
    def replay(cls, events: Iterable[Mapping[str, Any]]) -> RunRecord:
        rec = cls()
        for ev in events:
            try:
                rec.apply(ev)
            except (KeyError, TypeError, ValueError, AttributeError):
                rec.skipped += 1
        return rec

    def resolve(self, dataset_id: str) -> str:
        """A dataset id as it ends up in the document (a provisional id -> its content id)."""
        return self.aliases.get(dataset_id, dataset_id)

    def apply(self, ev: Mapping[str, Any]) -> None:
        kind = ev.get("t")
        t = ev.get("time")
        if t is not None and not valid_time(t):
            raise ValueError(f"time {t!r} out of range")
        if t is not None:
            self.last_time = max(self.last_time or t, t)
        if kind == "start":
            if not isinstance(ev["run_id"], str):
                raise TypeError("run_id")
            start = dict(ev)
            for key in ("rank", "world_size", "local_rank", "attempt"):
                if start.get(key) is not None and not (isinstance(start[key], int) and 0 <= start[key] < 2**31):
                    raise ValueError(key)
            self.start = start
        elif kind == "context":  # code, environment, packages: gathered after the start
            self.start.update({k: ev[k] for k in _CONTEXT_KEYS if k in ev})
        elif kind == "env":  # facts found later (GPU models from NVML)
            self.env_extra.update(ev["info"])
        elif kind == "end":
            self.end = dict(ev)
        elif kind == "launcher":  # this process started the job's ranks (torch.multiprocessing.spawn)
            self.start["launcher"] = True
        elif kind == "identity":  # learnt after the start (a process group initialised later)
            if isinstance(ev.get("world_size"), int) and ev["world_size"] > 0:
                self.start["world_size"] = ev["world_size"]
        elif kind == "param":
            self.params[str(ev["key"])] = ev["value"]
        elif kind == "tag":
            self.tags[str(ev["key"])] = ev["value"]
        elif kind == "attrs":
            self.run_attrs.update(ev["attrs"])
        elif kind == "dataset":
            raw = str(ev["id"])
            self._dataset(self.resolve(raw), {**ev, **self.digests.get(raw, {})})
        elif kind == "dataset_digest":  # background hashing finished: the provisional id has a content id
            key, final = str(ev["key"]), str(ev["id"])
            self.aliases[key] = final
            fields = {k: v for k, v in ev.items() if k not in ("t", "key")}
            self.digests[key] = fields  # the hash can finish before its dataset's event is in the journal
            rec = self.datasets.pop(key, None)
            if rec is not None:
                self._dataset(final, {**rec, **fields})
        elif kind == "usage":  # samples/batches consumed, updated as training goes
            did = self.resolve(str(ev["id"]))
            if did in self.datasets:
                self.datasets[did].setdefault("usage", {}).update(ev["usage"])
        elif kind == "artifact":
            self.artifacts[str(ev["id"])] = dict(ev)
        elif kind == "model":
            if not isinstance(ev["id"], str):
                raise TypeError("id")
            self.models.append(dict(ev))
        elif kind == "load":
            self.loads.setdefault(str(ev["id"]), dict(ev))
        elif kind == "signal":
            self.signals.append(dict(ev))
        elif kind == "decision":
            self.decisions.append(dict(ev))

    def _dataset(self, did: str, ev: dict[str, Any]) -> None:
        """Attach a dataset; the same data attached again keeps its first record and adds roles and usage."""
        ev["id"] = did
        prev = self.datasets.get(did)
        if prev is not None:
            usage = {**ev.get("usage", {}), **prev.get("usage", {})}
            ev = {**ev, **prev, "roles": sorted(set(prev.get("roles", [])) | set(ev.get("roles", []))), "usage": usage}
        self.datasets[did] = ev
