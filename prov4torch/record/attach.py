"""The part of ``Run``'s API that attaches data, checkpoints and artifacts (a mixin of ``Run``).

Every method checks the run is open, then hands the work to the run's ``Inputs`` (identity, roles,
policy) or records an event; the lifecycle and the metric hot path stay in ``run.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..errors import InvalidValueError
from .checkpoints import ModelVersion, classify, model_name
from .identity import digest_path
from .ids import content_id
from .values import reads_user_values

if TYPE_CHECKING:
    from .inputs import Inputs
    from .journal import JournalWriter
    from .replay import RunRecord


class AttachMixin:
    """``log_dataset``, ``log_model``, ``load_model``/``use_model``, ``log_artifact``, and what autolog records."""

    # what it uses of the run it is part of (``Run`` defines them; declared, not stubbed)
    inputs: Inputs
    clock: Any
    _writer: JournalWriter
    _open: bool
    _require_open: Callable[[str], None]
    record_event: Callable[..., None]
    replay: Callable[[], RunRecord]

    @reads_user_values
    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None, *, kind: str = "artifact",
                     used: bool = False) -> str:
        """Record a file or directory this run produced (by sha256; the file is not copied).

        ``kind``: ``artifact``, ``run-state`` (optimizer/scheduler/RNG/trainer state, arguments) or ``data`` (a
        dataset the run wrote, named as datasets are). ``used``: the run read it instead (a resumed state).
        """
        self._require_open("log_artifact")
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidValueError(f"log_artifact takes a path, got {type(path).__name__}", value=path)
        p = Path(path).resolve()
        d = digest_path(p, self.inputs.checkpoints.cache)
        aid = content_id("dataset" if kind == "data" else "artifact", d.sha256)
        self.record_event(ev.Artifact(id=aid, name=name or p.name, path=str(p), kind=kind, used=used, sha256=d.sha256,
                                      size=d.size, time=self.clock()))
        return aid

    def record_saved(self, path: str | os.PathLike[str], saved: Any = None, name: str | None = None) -> str:
        """A file the script wrote with ``saved`` in it, recorded by what it holds (``checkpoints.classify``):
        weights as a model version, data as a dataset it produced, anything else as run state."""
        kind = classify(saved, path) if saved is not None else "model"
        if kind == "model":
            return self.log_model(path, name=name or model_name(path), saved=saved).id
        return self.log_artifact(path, name, kind=kind)

    def record_loaded(self, path: str | os.PathLike[str], loaded: Any = None) -> str:
        """A file the script read, recorded by what it holds: weights as a base model (policy-checked), data as
        a dataset (role ``input``, policy-checked), run state (a resumed optimizer, say) as used."""
        kind = classify(loaded, path) if loaded is not None else "model"
        if kind == "model":
            return self.use_model(path, loaded=loaded)
        if kind == "data":
            did = self.log_dataset(path, role="input")
            self.inputs.datasets.read_into(loaded, os.fspath(path))  # its tensors are the file's data: its tags
            return did
        return self.log_artifact(path, kind=kind, used=True)

    @reads_user_values
    def log_dataset(
        self,
        dataset_or_path: Any,
        name: str | None = None,
        role: str = "training",
        source: str | None = None,
        **tags: Any,
    ) -> str:
        """Record a dataset used by this run; returns its id (see ``record.datasets`` for how it is named).

        The same object (or the same content) attached again under a role it already has is not
        recorded or policy-checked again.
        """
        self._require_open("log_dataset")
        return self.inputs.dataset(dataset_or_path, name=name, role=role, source=source, tags=tags)

    @reads_user_values
    def log_model(
        self,
        model_or_path: Any,
        name: str = "model",
        step: int | None = None,
        epoch: int | None = None,
        *,
        saved: Any = None,
    ) -> ModelVersion:
        """Record a checkpoint: a file path, or a module/state dict saved into the run directory.

        ``saved``: what was written to the path, when the caller has it (its weights are hashed
        from memory instead of re-reading the file).
        """
        self._require_open("log_model")
        return self.inputs.produced(model_or_path, name, step, epoch, saved)

    def load_model(self, path: str | os.PathLike[str], **torch_load_kwargs: Any) -> Any:
        """``torch.load`` a checkpoint and record that this run used it (its content links runs)."""
        import torch

        if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
            self.use_model(path)  # the same clear error as use_model gives
        loaded = torch.load(path, **torch_load_kwargs)
        self.use_model(path, loaded=loaded)
        return loaded

    def use_model(self, path: str | os.PathLike[str], *, loaded: Any = None) -> str:
        """Record that this run used a checkpoint file as its base model (``loaded``: what was read from it)."""
        self._require_open("load_model")
        return self.inputs.used(path, loaded)

    def recorded_work(self) -> bool:
        """Whether the run read data or checkpoints, wrote any, or logged a metric of its own."""
        record = self.replay()
        return bool(record.datasets or record.models or record.loads or record.artifacts
                    or any(context != "system" for _name, context in self._writer.series))

    def model_sources(self) -> list[str]:
        """What a model this run produces is derived from: its training datasets, then its base models."""
        return self.inputs.model_sources()

    def gate(self, dataset_id: str) -> None:
        """Before a tracked DataLoader yields its first batch: refuse blocked data."""
        self.inputs.gate(dataset_id)

    def count_usage(self, dataset_id: str, role: str, samples: int = 0, batches: int = 0, epochs: int = 0,
                    reads: int = 0) -> None:
        """Add samples, batches and epochs consumed from a dataset under a role (totals per dataset and role, so
        a DataLoader rebuilt every epoch, or several loaders over one dataset, add up); ``reads``: reads of a
        file the script read as data itself (``autolog.reads``)."""
        if self._open:
            self.record_event(ev.Usage(id=dataset_id, usage={
                role: self.inputs.count(dataset_id, role, samples, batches, epochs, reads)}))
