"""``prov4torch.track(loader)``: a DataLoader whose data is recorded and policy-checked first."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from ..governance.tags import governance_attributes
from .datapaths import TRACKED
from .roles import batch_size
from .run import ACTIVE, Run


class TrackedLoader:
    """A DataLoader whose data is recorded (and policy-checked) before its first batch.

    Iterating it attaches its dataset to the active run (``log_dataset``: digest, tags,
    policy check), refuses to yield a batch of blocked data, and records the samples,
    batches and epochs consumed. Every other attribute is the wrapped loader's.
    """

    def __init__(self, loader: Any, name: str | None = None, role: str = "training", **tags: Any) -> None:
        governance_attributes(tags)  # validate now, not at the first batch
        with contextlib.suppress(TypeError):  # a loader that cannot be weakly referenced is simply not listed
            TRACKED[loader] = self
        self.loader = loader
        self.name = name
        self.role = role
        self.tags = tags
        self.dataset_id: str | None = None
        self.samples = 0
        self.batches = 0
        self.epochs = 0
        self._run_ref: weakref.ref[Any] | None = None  # the run the counts above belong to
        self.iterating = False  # inside __iter__: the data-path hook leaves the counting to this object

    def __getattr__(self, item: str) -> Any:
        return getattr(self.loader, item)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        active = ACTIVE.run
        if active is None or active.ended or active.disabled:
            yield from self.loader
            return
        run: Run = active
        if self._run_ref is None or self._run_ref() is not run:  # a new run (a sweep, a notebook): record it again
            self._run_ref = weakref.ref(run)
            self.dataset_id, self.samples, self.batches, self.epochs = None, 0, 0, 0
        if self.dataset_id is None:
            self.dataset_id = run.log_dataset(self.loader, name=self.name, role=self.role, **self.tags)
        did = self.dataset_id
        samples = batches = 0  # this pass, not yet counted
        finished = False
        self.iterating = True
        try:
            for batch in self.loader:
                run.gate(did)  # before every batch: nothing once the data (or the run) is blocked
                n = batch_size(batch)
                self.samples += n
                self.batches += 1
                samples, batches = samples + n, batches + 1
                if batches == 1 and not run.ended:  # delivered: the record says so from the first batch on
                    run.count_usage(did, self.role, samples, batches)
                    samples = batches = 0
                yield batch
            finished = True
        finally:
            self.iterating = False
            self.epochs += int(finished)
            if not run.ended:
                run.count_usage(did, self.role, samples, batches, int(finished))


def track(loader: Any, name: str | None = None, role: str = "training", **tags: Any) -> TrackedLoader:
    """Wrap a DataLoader so its dataset is recorded and policy-checked before its first batch."""
    return TrackedLoader(loader, name=name, role=role, **tags)

