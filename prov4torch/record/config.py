"""A run's settings, resolved once: argument > environment (``PROV4TORCH_*``) > default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import env
from ..errors import InvalidValueError
from .values import PARAM, check_name

DEFAULT_INTERVAL_S = 5.0  # seconds between sampler readings


def default_root() -> Path:
    """Where runs go when neither ``out_dir`` nor ``PROV4TORCH_DIR`` says: never the cwd."""
    configured = env.get(env.DIR)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "prov4torch" / "runs"


@dataclass(frozen=True)
class Settings:
    """Everything ``start_run`` can be told, after precedence and validation."""

    experiment: str
    root: Path
    run_name: str | None
    region: str | None
    purpose: str | None
    intended_use: str | None
    policy: Any
    mode: str | None
    system_metrics: bool
    energy: bool
    interval_s: float
    country: str | None
    flush_interval_s: float


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidValueError(f"{name} must be a positive number of seconds, got {value!r}", value=value)
    return float(value)


def resolve(
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    region: str | None = None,
    purpose: str | None = None,
    intended_use: str | None = None,
    policy: Any = None,
    mode: str | None = None,
    system_metrics: bool | None = None,
    energy: bool | None = None,
    interval_s: float | None = None,
    energy_country: str | None = None,
    flush_interval_s: float | None = None,
) -> Settings:
    """The settings of a new run (see the module docstring for precedence)."""
    return Settings(
        experiment=check_name("experiment", experiment or env.get(env.EXPERIMENT) or "default", PARAM),
        root=Path(out_dir).expanduser() if out_dir is not None else default_root(),
        run_name=run_name or env.get(env.RUN_NAME),
        region=region or env.get(env.REGION),
        purpose=purpose or env.get(env.PURPOSE),
        intended_use=intended_use or env.get(env.INTENDED_USE),
        policy=policy if policy is not None else env.get(env.POLICY),
        mode=mode or env.get(env.POLICY_MODE),
        system_metrics=env.flag(env.SYSTEM_METRICS, True) if system_metrics is None else bool(system_metrics),
        energy=env.flag(env.ENERGY, True) if energy is None else bool(energy),
        interval_s=(_positive("interval_s", interval_s) if interval_s is not None
                    else env.number(env.SAMPLE_INTERVAL, DEFAULT_INTERVAL_S)),
        country=energy_country or env.get(env.COUNTRY),
        flush_interval_s=(_positive("flush_interval_s", flush_interval_s) if flush_interval_s is not None
                          else env.number(env.FLUSH_INTERVAL, 1.0)),
    )
