"""What a run attaches: datasets and checkpoints, with their identity, their roles, and the policy check.

``Inputs`` is the run's bookkeeping of data and checkpoints. It names them (``datasets``,
``checkpoints``), remembers under which roles each dataset was used, knows what a model this run
produces derives from, and asks the runtime policy (``governance.gate``) before anything is used.
Events go to the run through ``record``; the run's document so far comes from ``document``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..governance.gate import RuntimePolicy, RunView
from ..governance.tags import combined
from ..warn import warn
from .checkpoints import Checkpoints, ModelVersion
from .datasets import DatasetIdentifier

HASH_WAIT_S = 600.0
# the roles whose data a model this run produces derives from ("input": data read outside a DataLoader whose
# use could not be told; it counts, so a model is never silently without data)
MODEL_ROLES = {"training", "fine-tuning", "input"}  # how long end_run / log_model wait for background dataset hashing

Record = Callable[[ev.Event], None]


class Inputs:
    def __init__(self, *, datasets: DatasetIdentifier, checkpoints: Checkpoints, policy: RuntimePolicy | None,
                 record: Record, clock: Callable[[], float], document: Callable[[], dict[str, Any]],
                 activity: str, intended_use: str | None) -> None:
        self.datasets = datasets
        self.checkpoints = checkpoints
        self.policy = policy
        self.record = record
        self.clock = clock
        self.document = document
        self.activity = activity
        self.intended_use = intended_use
        self.roles: dict[str, set[str]] = {}  # dataset id -> every role it was attached with
        self.tags_of: dict[tuple[str, str], dict[str, Any]] = {}  # (dataset id, role) -> the tags it was given
        self.governance_of: dict[str, dict[str, Any]] = {}  # dataset id -> its attachments' combined governance
        self.aliases: dict[str, str] = {}  # provisional dataset id -> content id, once hashed
        self.totals: dict[tuple[str, str], dict[str, int]] = {}  # (dataset id, role) -> samples/batches/epochs

    # -- datasets ---------------------------------------------------------------------------------------
    def dataset(self, data: Any, *, name: str | None, role: str, source: str | None, tags: dict[str, Any]) -> str:
        """Attach a dataset (see ``Run.log_dataset``); its id."""
        known = self.datasets.known(data)
        if known is not None and self._attached(known, role, tags):
            return known
        event = self.datasets.identify(data, name=name, role=role, source=source, tags=tags, time=self.clock())
        did = event.id
        if self._attached(did, role, tags):  # the same data (new loader, new object, same content): decided
            return did
        for path in self.datasets.texts.files_of(event.derived_from or []):  # made of a tagged text file's strings:
            self.dataset(path, name=None, role=role, source=None, tags={})  # that file is data in its role too
        before = self.governance_of.get(did)
        if before is not None and event.governance and event.governance != before:
            warn(f"prov4torch: {event.name}: this content was attached before with other tags; both hold (the more "
                 "restrictive combination), and the record says where they disagree")
        if event.governance:
            self.governance_of[did] = combined([g for g in (before, event.governance) if g])
        self.roles.setdefault(did, set()).add(role)
        self.tags_of[(did, role)] = dict(tags)
        self.record(event)
        self._check(event, "log_dataset")
        return did

    def _attached(self, did: str, role: str, tags: dict[str, Any]) -> bool:
        """Already attached under this role, with these tags (or none): no new record, no new decision."""
        return role in self.roles.get(did, ()) and (not tags or self.tags_of.get((did, role)) == tags)

    def count(self, did: str, role: str, samples: int, batches: int, epochs: int, reads: int = 0) -> dict[str, int]:
        """Add to the usage totals of a dataset under a role; the totals (``reads`` only for data read as files)."""
        t = self.totals.setdefault((self.aliases.get(did, did), role), {"samples": 0, "batches": 0, "epochs": 0})
        t["samples"] += samples
        t["batches"] += batches
        t["epochs"] += epochs
        if reads or "reads" in t:
            t["reads"] = t.get("reads", 0) + reads
        return dict(t)

    def digest_done(self, event: ev.DatasetDigest) -> None:
        """Background hashing named a dataset's content (called on the hashing thread)."""
        self.aliases[event.key] = event.id

    def after_fork(self, scope: str) -> None:
        """In a forked helper: its own dataset scope and usage totals (the parent's were copied at the fork)."""
        self.totals = {}
        self.datasets.after_fork(scope)

    # -- checkpoints ------------------------------------------------------------------------------------
    def produced(self, model_or_path: Any, name: str, step: int | None, epoch: int | None,
                 saved: Any) -> ModelVersion:
        self.datasets.wait(HASH_WAIT_S)  # the checkpoint's lineage card names its data by content
        mv, event = self.checkpoints.produced(model_or_path, name, step, epoch, self.model_sources(), saved)
        self.record(event)
        return mv

    def used(self, path: str | os.PathLike[str], loaded: Any) -> str:
        event = self.checkpoints.used(path, loaded)
        self.record(event)
        self._check(event, "load_model")
        return event.id

    # -- lineage and policy -----------------------------------------------------------------------------
    def model_sources(self) -> list[str]:
        """What a model this run produces is derived from: its training datasets, then its base models."""
        blocked = self.policy.blocked_datasets if self.policy is not None else set()
        training = [self.aliases.get(d, d) for d, roles in self.roles.items()
                    if any(r in MODEL_ROLES and self._delivered(d, r) for r in roles) and d not in blocked]
        return training + [m for m in self.checkpoints.base_models if m not in training and m not in blocked]

    def _delivered(self, did: str, role: str) -> bool:
        """Not a role whose batches all turned out to be another's (counted, then taken back to zero)."""
        t = self.totals.get((self.aliases.get(did, did), role))
        return t is None or any(t.values())

    def view(self) -> RunView:
        """The run so far as the policy gate sees it."""
        return RunView(self.document(), self.activity, self.model_sources(), self.intended_use)

    def _check(self, event: ev.Dataset | ev.ModelLoaded, trigger: str) -> None:
        if self.policy is not None:
            role = event.roles[0] if isinstance(event, ev.Dataset) and event.roles else None
            self.policy.check(self.view(), trigger, [event.id], role=role)

    def finish(self) -> None:
        """At the end of the run: the policy's after-the-fact findings, recorded (never raised); the sidecars
        of deleted checkpoints removed."""
        self.checkpoints.tidy()
        if self.policy is not None:
            self.policy.final(self.view())

    def gate(self, dataset_id: str) -> None:
        """Before a batch of ``dataset_id`` is delivered: refuse blocked data."""
        if self.policy is not None:
            self.policy.gate(dataset_id)
