"""``prov4torch.track(loader)``: a DataLoader whose data is recorded and policy-checked first."""

from __future__ import annotations

import contextlib
from typing import Any

from ..governance.tags import governance_attributes
from .datapaths import TRACKED, batch_size
from .run import ACTIVE


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

    def __getattr__(self, item: str) -> Any:
        return getattr(self.loader, item)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        run = ACTIVE.run
        if run is None or run.ended or run.disabled:
            yield from self.loader
            return
        if self.dataset_id is None:
            self.dataset_id = run.log_dataset(self.loader, name=self.name, role=self.role, **self.tags)
        run.gate(self.dataset_id)  # raises before the first batch when the data is blocked
        finished = False
        try:
            for batch in self.loader:
                self.samples += batch_size(batch)
                self.batches += 1
                yield batch
            finished = True
        finally:
            self.epochs += int(finished)
            if not run.ended:
                run.attach_loader_usage(self.dataset_id, self.role, {
                    "samples": self.samples, "batches": self.batches, "epochs": self.epochs})


def track(loader: Any, name: str | None = None, role: str = "training", **tags: Any) -> TrackedLoader:
    """Wrap a DataLoader so its dataset is recorded and policy-checked before its first batch."""
    return TrackedLoader(loader, name=name, role=role, **tags)

