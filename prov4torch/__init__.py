"""prov4torch: W3C PROV provenance for PyTorch training, with lineage and policy enforcement.

    import prov4torch

    with prov4torch.start_run(experiment="mnist") as run:
        prov4torch.log_params({"lr": 0.01})
        for step in range(100):
            prov4torch.log_metric("loss", loss, step=step)
        prov4torch.log_model(model, name="cnn")

Every module-level function delegates to the active run (one per process).
``PROV4TORCH_DISABLED=1`` turns every call into a no-op.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from typing import Any

from . import env as _env
from ._version import __version__
from .errors import (
    ConfigError,
    EvidenceError,
    GpuUnavailable,
    InvalidValueError,
    JournalError,
    MalformedEventError,
    MergeConflictError,
    MissingExtraError,
    PolicyViolation,
    PolicyWarning,
    Prov4TorchError,
    ProvInputError,
    RunStateError,
    TelemetryWarning,
    UnreadableContentError,
)
from .governance.declared import declare_checkpoint, load_tags
from .governance.evaluate import check
from .provjson import NAMESPACE
from .record.disabled import DisabledRun as _DisabledRun
from .record.loaders import track
from .record.recover import recover
from .record.run import ACTIVE as _ACTIVE
from .record.run import ModelVersion, Run
from .record.values import TensorType as _TensorType

# the active run's ``appenders`` (``ACTIVE.appenders``, kept here as a global: one lookup fewer on the hot path)
_APPENDERS: dict[str, dict[str, Any]] = _ACTIVE.appenders


def _follow(appenders: dict[str, dict[str, Any]]) -> None:
    global _APPENDERS
    _APPENDERS = appenders


_ACTIVE.follow = _follow

__all__ = [
    "NAMESPACE",
    "ConfigError",
    "EvidenceError",
    "GpuUnavailable",
    "InvalidValueError",
    "JournalError",
    "MalformedEventError",
    "MergeConflictError",
    "MissingExtraError",
    "ModelVersion",
    "PolicyViolation",
    "PolicyWarning",
    "Prov4TorchError",
    "ProvInputError",
    "Run",
    "RunStateError",
    "TelemetryWarning",
    "UnreadableContentError",
    "__version__",
    "active_run",
    "check",
    "declare_checkpoint",
    "end_run",
    "flush",
    "load_model",
    "load_tags",
    "log_artifact",
    "log_dataset",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "recover",
    "set_tag",
    "set_tags",
    "start_run",
    "track",
]


def start_run(
    experiment: str | None = None,
    run_name: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    run_id: str | None = None,
    region: str | None = None,
    purpose: str | None = None,
    intended_use: str | None = None,
    policy: str | os.PathLike[str] | None = None,
    mode: str | None = None,
    system_metrics: bool | None = None,
    energy: bool | str | None = None,
    interval_s: float | None = None,
    tags: Mapping[str, Any] | None = None,
    **options: Any,
) -> Run:
    """Start recording this process as one rank of a run, and make it the active run.

    Output goes to ``<out_dir>/<experiment>/<run_id>/rank-K.*``; ``out_dir`` defaults to
    ``PROV4TORCH_DIR``, else ``$XDG_DATA_HOME/prov4torch/runs`` (never the working directory).
    Raises ``RunStateError`` if a run is already active, ``ConfigError`` if the output
    directory is not writable or the policy is malformed.

    ``policy`` (a TOML file, or ``"default"``) is enforced from now on: ``mode="enforce"``
    (the default) raises ``PolicyViolation`` before any compute on disallowed data and
    ends the run BLOCKED; ``mode="audit"`` records and warns. ``system_metrics`` (psutil,
    NVML) and ``energy`` (codecarbon) sample every ``interval_s`` seconds.
    """
    with _ACTIVE.lock:
        if _ACTIVE.run is not None and _ACTIVE.run.managed and not _ACTIVE.run.ended:
            # under `prov4torch run`: the script joins the run it runs in, and a policy it asks for is enforced
            _ACTIVE.run.adopt_policy(policy, mode)
            return _ACTIVE.run
        if _ACTIVE.run is not None and not _ACTIVE.run.ended:
            raise RunStateError(
                f"run {_ACTIVE.run.run_id} is already active: call end_run() first "
                "(one run per process)"
            )
        if _env.flag(_env.DISABLED, False):
            if policy is not None or _env.get(_env.POLICY):
                raise ConfigError(
                    f"{_env.DISABLED}=1 would switch off the policy {policy or _env.get(_env.POLICY)!r}: "
                    f"unset {_env.DISABLED} to enforce it, or drop the policy to run unrecorded")
            run: Run = _DisabledRun()
        else:
            run = Run(
                experiment=experiment, run_name=run_name, out_dir=out_dir, run_id=run_id,
                region=region, purpose=purpose, intended_use=intended_use, policy=policy, mode=mode,
                system_metrics=system_metrics, energy=energy, interval_s=interval_s, tags=tags, **options,
            )
        _ACTIVE.run = run
        return run


def active_run() -> Run | None:
    """The active run, or None."""
    run = _ACTIVE.run
    return run if run is not None and not run.ended else None


def _run(what: str) -> Run:
    run = _ACTIVE.run
    if run is None:
        if _env.flag(_env.DISABLED, False):
            return _DisabledRun()
        raise RunStateError(f"{what}: no active run; call prov4torch.start_run() first")
    return run


def end_run(status: str = "FINISHED") -> None:
    """End the active run (FINISHED, FAILED, KILLED or BLOCKED) and write its PROV-JSON."""
    _run("end_run").end_run(status)


def log_metric(
    name: str,
    value: Any,
    step: int | None = None,
    context: str = "training",
    timestamp: float | _dt.datetime | None = None,
) -> None:
    """Record one metric point (hot path: no I/O, no device sync, no clock read)."""
    if timestamp is None and (type(step) is int or step is None):
        if type(value) is float:
            try:  # a known series of the active run: Run.log_metric's fast path, one call fewer
                _APPENDERS[context][name]((step, value))  # the writer dates it (``record.metricbuf``)
                return
            except (KeyError, TypeError):
                pass
        elif type(value) is _TensorType.cls and value.is_cpu:  # a CPU loss
            try:
                append = _APPENDERS[context][name]
                number = float(value.item())
            except (KeyError, TypeError, RuntimeError, ValueError):
                pass  # a new series, or Run.log_metric says what is wrong with the value
            else:
                append((step, number))
                return
    run = _ACTIVE.run
    if run is None:
        run = _run("log_metric")
    run.log_metric(name, value, step, context, timestamp)


def log_metrics(
    metrics: Mapping[str, Any],
    step: int | None = None,
    context: str = "training",
    timestamp: float | _dt.datetime | None = None,
) -> None:
    """Record several metric points at one step."""
    _run("log_metrics").log_metrics(metrics, step, context, timestamp)


def log_param(key: str, value: Any) -> None:
    """Record one hyperparameter."""
    _run("log_param").log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    """Record several hyperparameters."""
    _run("log_params").log_params(params)


def set_tag(key: str, value: Any) -> None:
    """Set a run tag."""
    _run("set_tag").set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set several run tags."""
    _run("set_tags").set_tags(tags)


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Record a file or directory the run produced; returns its id."""
    return _run("log_artifact").log_artifact(path, name)


def log_dataset(
    dataset_or_path: Any,
    name: str | None = None,
    role: str = "training",
    source: str | None = None,
    **tags: Any,
) -> str:
    """Record a dataset (path, Dataset or DataLoader) with governance tags; returns its id."""
    return _run("log_dataset").log_dataset(dataset_or_path, name=name, role=role, source=source, **tags)


def log_model(
    model_or_path: Any, name: str = "model", step: int | None = None, epoch: int | None = None
) -> ModelVersion:
    """Record a checkpoint (path, nn.Module or state dict) as a new model version."""
    return _run("log_model").log_model(model_or_path, name=name, step=step, epoch=epoch)


def load_model(path: str | os.PathLike[str], **torch_load_kwargs: Any) -> Any:
    """``torch.load`` a checkpoint and record its use (links this run to the one that made it)."""
    return _run("load_model").load_model(path, **torch_load_kwargs)


def flush() -> None:
    """Write everything buffered to disk now."""
    _run("flush").flush()
