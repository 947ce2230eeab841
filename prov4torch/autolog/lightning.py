"""PyTorch Lightning integration: ``prov4torch.lightning.ProvLogger`` and the callback zero-code mode adds.

    trainer = Trainer(logger=prov4torch.lightning.ProvLogger(experiment="mnist"), ...)

``ProvLogger`` (a Lightning ``Logger``) records the hyper-parameters Lightning saves, every metric it
logs (context from the name: ``val…`` validation, ``test…`` testing, else training) and its checkpoints;
it starts a run if none is active and ends it when training ends. ``ProvLightningCallback`` (added to
every ``Trainer`` under ``prov4torch run``, and by ``ProvLogger``) marks the stage so data gets the role
Lightning gives it (fit: training, validate and the sanity check: validation, test: testing), and records
hparams, the trainer's settings, epochs, global steps and the rank Lightning runs as.

Lightning is imported only by this module, and only when the user imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

try:
    from pytorch_lightning import Callback
    from pytorch_lightning.loggers import Logger
    from pytorch_lightning.utilities import rank_zero_only
except ImportError:  # the unified package
    from lightning.pytorch import Callback  # type: ignore[no-redef]
    from lightning.pytorch.loggers import Logger  # type: ignore[no-redef]
    from lightning.pytorch.utilities import rank_zero_only  # type: ignore[no-redef]

from ..record.datapaths import DataPaths
from ..record.run import ACTIVE, Run
from .argv import redact

__all__ = ["ProvLightningCallback", "ProvLogger", "with_callback"]


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def context_of(name: str) -> str:
    n = name.lower()
    return "validation" if n.startswith(("val", "valid")) else "testing" if n.startswith("test") else "training"


def _log_params(run: Run, params: Mapping[str, Any], prefix: str) -> None:
    for key, value in flatten(params).items():
        name = prefix + "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(key))
        with contextlib.suppress(Exception):  # a value logged differently before: the first one stays
            run.log_param(name, redact(name, value))


class ProvLightningCallback(Callback):
    """Stages, hparams, trainer settings, epochs and steps (see the module docstring)."""

    def __init__(self, run: Run | None = None) -> None:
        self._run = run

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its run (``strategy="ddp_spawn"`` sends the trainer to each process): over there it
        records into that process's run (``ACTIVE``); a run, its locks and threads, cannot travel."""
        return {**self.__dict__, "_run": None}

    @property
    def run(self) -> Run | None:
        run = self._run or ACTIVE.run
        return run if run is not None and not run.ended and not run.disabled else None

    @staticmethod
    def _stage(stage: str | None) -> None:
        if DataPaths.active is not None:
            DataPaths.active.stage = stage

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        run = self.run
        if run is None:
            return
        _log_params(run, dict(getattr(pl_module, "hparams", {}) or {}), "hparams.")
        settings = {"max_epochs": trainer.max_epochs, "accumulate_grad_batches": trainer.accumulate_grad_batches,
                    "precision": str(getattr(trainer, "precision", "")), "num_devices": trainer.num_devices,
                    "strategy": type(trainer.strategy).__name__}
        _log_params(run, settings, "lightning.")
        run.add_run_attributes({"p4t:frameworkRank": int(trainer.global_rank),
                                "p4t:frameworkWorldSize": int(trainer.world_size)})

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage("validation")

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage("training")

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage("validation")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._stage("training" if trainer.training else None)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage("testing")

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage("inference")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._stage(None)
        run = self.run
        if run is not None:
            run.add_run_attributes({"p4t:epochs": int(trainer.current_epoch),
                                    "p4t:globalSteps": int(trainer.global_step)})


def with_callback(kwargs: dict[str, Any], run: Run) -> dict[str, Any]:
    """A Trainer's keyword arguments with a ``ProvLightningCallback`` added to its callbacks."""
    callbacks = list(kwargs.get("callbacks") or [])
    if not any(isinstance(c, ProvLightningCallback) for c in callbacks):
        callbacks.append(ProvLightningCallback(run))
    return {**kwargs, "callbacks": callbacks}


class ProvLogger(Logger):
    """A Lightning logger writing to prov4torch (``start_run`` keyword arguments are accepted)."""

    def __init__(self, **start_run_kwargs: Any) -> None:
        super().__init__()
        self._kwargs = start_run_kwargs
        self._owned: Run | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the run it started (see ``ProvLightningCallback.__getstate__``)."""
        return {**self.__dict__, "_owned": None}

    @property
    def run(self) -> Run:
        import prov4torch

        active = prov4torch.active_run()
        if active is None:
            self._owned = active = prov4torch.start_run(**self._kwargs)
        return active

    @property
    def name(self) -> str:
        return str(self.run.experiment)

    @property
    def version(self) -> str:
        return str(self.run.run_id)

    @property
    def experiment(self) -> Run:
        return self.run

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = vars(params) if hasattr(params, "__dict__") and not isinstance(params, Mapping) else params
        _log_params(self.run, dict(params or {}), "hparams.")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            if name == "epoch":
                continue
            clean = "".join(c if c.isalnum() or c in "_.-/ :" else "_" for c in name)
            self.run.log_metric(clean, value, step=step, context=context_of(name))

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        for path in {getattr(checkpoint_callback, "best_model_path", ""), getattr(checkpoint_callback,
                                                                                   "last_model_path", "")}:
            if path:
                import os

                if os.path.isfile(path):
                    self.run.record_saved(path, None, name="lightning")

    def finalize(self, status: str) -> None:
        if self._owned is not None and not self._owned.ended:
            self._owned.end_run("FINISHED" if status == "success" else "FAILED")
