"""A run's settings, resolved once: argument > environment (``PROV4TORCH_*``) > default."""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import env
from ..errors import InvalidValueError
from ..remote import bound_for, is_url, spool_root
from .paths import check_segments
from .values import PARAM, check_name

DEFAULT_INTERVAL_S = 5.0  # seconds between sampler readings


def default_root() -> Path:
    """Where runs go when neither ``out_dir`` nor ``PROV4TORCH_DIR`` says: never the cwd (a URL in
    ``PROV4TORCH_DIR``: its local spool, published at the end -- ``prov4torch.remote``)."""
    configured = env.get(env.DIR)
    if configured and is_url(configured):
        return spool_root(configured)
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
    energy: bool | str  # False, True (estimated, free) or "codecarbon" (its live tracker too)
    interval_s: float
    country: str | None
    flush_interval_s: float
    sidecar: bool
    remote: str | None = None  # an object-store URL the run's files are published to at its end (root: the spool)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise InvalidValueError(f"{name} must be a finite positive number of seconds, got {value!r:.60}",
                                value=value)
    return float(value)


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 1000 or "\0" in value:
        raise InvalidValueError(f"{name} must be a non-empty string, got {type(value).__name__} {value!r:.60}",
                                value=value)
    return value


def _energy(value: Any) -> bool | str:
    """``energy=``: False, True (estimated from CPU time with codecarbon's tables: no wait at start or exit), or
    "codecarbon" (its live tracker as well, started off the training thread); else PROV4TORCH_ENERGY."""
    if value is None:
        raw = (env.get(env.ENERGY) or "").strip().lower()
        return "codecarbon" if raw == "codecarbon" else env.flag(env.ENERGY, True)
    if isinstance(value, bool):
        return value
    if value == "codecarbon":
        return "codecarbon"
    raise InvalidValueError(f"energy must be True, False or 'codecarbon', got {value!r:.60}", value=value)


def _flag(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidValueError(f"{name} must be True or False, got {type(value).__name__} {value!r:.60}", value=value)


def _out_dir(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip() or "\0" in str(value):
        raise InvalidValueError(f"out_dir must be a directory path or a storage URL (str or os.PathLike), got "
                                f"{type(value).__name__} {value!r:.60}", value=value)
    if is_url(value):
        return spool_root(os.fspath(value))
    return Path(value).expanduser()


def _policy(value: Any) -> Any:
    if value is None or isinstance(value, (str, os.PathLike)) or type(value).__name__ == "Policy":
        return value
    raise InvalidValueError(f"policy must be a TOML file path or a built-in name such as 'default', got "
                            f"{type(value).__name__} {value!r:.60}", value=value)


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
    energy: bool | str | None = None,
    interval_s: float | None = None,
    energy_country: str | None = None,
    flush_interval_s: float | None = None,
    sidecar: bool | None = None,
) -> Settings:
    """The settings of a new run (see the module docstring for precedence)."""
    root = _out_dir(out_dir)
    system_metrics = _flag("system_metrics", system_metrics)
    energy = _energy(energy)
    sidecar = _flag("sidecar", sidecar)
    return Settings(
        experiment=check_segments("experiment", check_name(
            "experiment", experiment if experiment is not None else env.get(env.EXPERIMENT) or "default", PARAM)),
        root=root if root is not None else default_root(),
        run_name=_text("run_name", run_name) or env.get(env.RUN_NAME),
        region=_text("region", region) or env.get(env.REGION),
        purpose=_text("purpose", purpose) or env.get(env.PURPOSE),
        intended_use=_text("intended_use", intended_use) or env.get(env.INTENDED_USE),
        policy=_policy(policy) if policy is not None else env.get(env.POLICY),
        mode=_text("mode", mode) or env.get(env.POLICY_MODE),
        system_metrics=env.flag(env.SYSTEM_METRICS, True) if system_metrics is None else system_metrics,
        energy=energy,
        interval_s=(_positive("interval_s", interval_s) if interval_s is not None
                    else env.number(env.SAMPLE_INTERVAL, DEFAULT_INTERVAL_S)),
        country=_text("energy_country", energy_country) or env.get(env.COUNTRY),
        flush_interval_s=(_positive("flush_interval_s", flush_interval_s) if flush_interval_s is not None
                          else env.number(env.FLUSH_INTERVAL, 1.0)),
        sidecar=env.flag(env.SIDECAR, True) if sidecar is None else sidecar,
        remote=bound_for(out_dir),
    )


def check_options(options: dict[str, Any]) -> None:
    """Refuse keyword arguments ``resolve`` does not know, naming them and the known ones."""
    known = set(inspect.signature(resolve).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidValueError(f"start_run got unknown argument(s) {', '.join(unknown)}; known: "
                                f"{', '.join(sorted(known | {'run_id', 'tags'}))}", value=unknown[0])
