"""Hugging Face integration: ``prov4torch.hf.ProvCallback``, also added to every ``Trainer`` under
``prov4torch run``.

    trainer = Trainer(model, args, callbacks=[prov4torch.hf.ProvCallback(experiment="bert")], ...)

It records ``TrainingArguments`` (secrets redacted) as ``hf.*`` parameters, every metric the Trainer logs
(``eval_…`` validation, ``test_…`` testing, else training) at its global step, each checkpoint directory it
saves, the epochs, global steps and samples, and the process index and world size the Trainer runs with.
While ``Trainer.evaluate`` runs, data is recorded with role ``validation``; ``Trainer.predict``: ``testing``.
It starts a run if none is active and ends it when training ends. transformers is imported only here.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from ..patching import Patches
from ..record.datapaths import DataPaths
from ..record.run import ACTIVE, Run
from .argv import redact

__all__ = ["ProvCallback", "staged", "with_callback"]


def context_of(name: str) -> str:
    return "validation" if name.startswith("eval_") else "testing" if name.startswith("test_") else "training"


class ProvCallback(TrainerCallback):
    """See the module docstring; ``start_run`` keyword arguments are used when it starts the run."""

    def __init__(self, run: Run | None = None, **start_run_kwargs: Any) -> None:
        self._run = run
        self._kwargs = start_run_kwargs
        self._owned: Run | None = None
        self.epochs = 0

    @property
    def run(self) -> Run | None:
        run = self._run or ACTIVE.run
        if run is None and self._owned is None and not self._run:
            import prov4torch

            self._owned = run = prov4torch.start_run(**self._kwargs)
        return run if run is not None and not run.ended and not run.disabled else None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is None:
            return
        if DataPaths.active is not None:
            DataPaths.active.stage = "training"
        for key, value in sorted(args.to_dict().items()):
            name = "hf." + "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(key))
            v = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
            with contextlib.suppress(Exception):  # logged before with another value: the first one stays
                run.log_param(name, redact(name, v))
        run.add_run_attributes({"p4t:frameworkRank": int(args.process_index),
                                "p4t:frameworkWorldSize": int(args.world_size)})

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        run = self.run
        if run is None or not logs:
            return
        for name, value in logs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "epoch":
                clean = "".join(c if c.isalnum() or c in "_.-/ :" else "_" for c in name)
                run.log_metric(clean, value, step=int(state.global_step), context=context_of(name))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if run is not None and os.path.isdir(checkpoint):
            run.log_model(checkpoint, name="checkpoint", step=int(state.global_step))

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.epochs += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if DataPaths.active is not None:
            DataPaths.active.stage = None
        run = self.run
        if run is None:
            return
        samples = int(state.global_step) * int(args.train_batch_size) * int(args.gradient_accumulation_steps)
        run.add_run_attributes({"p4t:epochs": self.epochs, "p4t:globalSteps": int(state.global_step),
                                "p4t:samplesSeen": samples})
        if self._owned is not None and not self._owned.ended:
            self._owned.end_run()


def with_callback(kwargs: dict[str, Any], run: Run) -> dict[str, Any]:
    """A Trainer's keyword arguments with a ``ProvCallback`` added to its callbacks."""
    callbacks = list(kwargs.get("callbacks") or [])
    if not any(isinstance(c, ProvCallback) for c in callbacks):
        callbacks.append(ProvCallback(run))
    return {**kwargs, "callbacks": callbacks}


def staged(trainer: Any) -> None:
    """While ``evaluate``/``predict`` run, the data they read gets the role validation/testing."""
    patches = Patches()  # for the trainer's lifetime: never restored
    for method, stage in (("evaluate", "validation"), ("predict", "testing")):
        patches.replace(trainer, method, functools.partial(_staged, stage=stage))


def _staged(method: Callable[..., Any], stage: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        paths = DataPaths.active
        previous = paths.stage if paths is not None else None
        if paths is not None:
            paths.stage = stage
        try:
            return method(*args, **kwargs)
        finally:
            if paths is not None:
                paths.stage = previous
    return wrapper
