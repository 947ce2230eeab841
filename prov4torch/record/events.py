"""A journal's events replayed into the state they describe (``RunRecord``).

``end_run`` replays the run's own events, ``recover`` the journal a dead process left:
both then build the document from the same kind of record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_CONTEXT_KEYS = ("code", "environment", "packages")


@dataclass
class Sidecar:
    path: str  # relative to the run directory
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """The state a journal describes, replayed from its events in order."""

    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    run_attrs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    env_extra: dict[str, Any] = field(default_factory=dict)
    last_time: float | None = None

    @classmethod
    def replay(cls, events: Iterable[Mapping[str, Any]]) -> RunRecord:
        rec = cls()
        for ev in events:
            rec.apply(ev)
        return rec

    def apply(self, ev: Mapping[str, Any]) -> None:
        kind = ev.get("t")
        t = ev.get("time")
        if isinstance(t, (int, float)):
            self.last_time = max(self.last_time or t, t)
        if kind == "start":
            self.start = dict(ev)
        elif kind == "context":  # code, environment, packages: gathered after the start
            self.start.update({k: ev[k] for k in _CONTEXT_KEYS if k in ev})
        elif kind == "env":  # facts found later (GPU models from NVML)
            self.env_extra.update(ev.get("info", {}))
        elif kind == "end":
            self.end = dict(ev)
        elif kind == "param":
            self.params[ev["key"]] = ev["value"]
        elif kind == "tag":
            self.tags[ev["key"]] = ev["value"]
        elif kind == "attrs":
            self.run_attrs.update(ev.get("attrs", {}))
        elif kind == "dataset":
            prev = self.datasets.get(ev["id"])
            merged = dict(ev)
            if prev is not None:  # the same data attached again: keep the first record, add roles
                merged = {**prev, "roles": sorted(set(prev.get("roles", [])) | set(ev.get("roles", [])))}
            self.datasets[ev["id"]] = merged
        elif kind == "usage":  # samples/batches consumed, updated as training goes
            if ev["id"] in self.datasets:
                self.datasets[ev["id"]].setdefault("usage", {}).update(ev.get("usage", {}))
        elif kind == "artifact":
            self.artifacts[ev["id"]] = dict(ev)
        elif kind == "model":
            self.models.append(dict(ev))
        elif kind == "load":
            self.loads.setdefault(ev["id"], dict(ev))
        elif kind == "signal":
            self.signals.append(dict(ev))
        elif kind == "decision":
            self.decisions.append(dict(ev))
