"""Names of the ``PROV4TORCH_*`` environment variables, in one place.

Configuration precedence everywhere: explicit argument > environment > default.
"""

from __future__ import annotations

import os

DIR = "PROV4TORCH_DIR"  # root output directory (default: $XDG_DATA_HOME/prov4torch/runs)
DISABLED = "PROV4TORCH_DISABLED"  # "1": every API call becomes a no-op
EXPERIMENT = "PROV4TORCH_EXPERIMENT"  # experiment name (default: "default")
RUN_ID = "PROV4TORCH_RUN_ID"  # run id shared by every rank of one job
RUN_NAME = "PROV4TORCH_RUN_NAME"
FLUSH_INTERVAL = "PROV4TORCH_FLUSH_INTERVAL"  # seconds between writer flushes (default 1)
SAMPLE_INTERVAL = "PROV4TORCH_SAMPLE_INTERVAL"  # seconds between sampler readings
SYSTEM_METRICS = "PROV4TORCH_SYSTEM_METRICS"  # "0" turns the psutil/NVML samplers off
ENERGY = "PROV4TORCH_ENERGY"  # "0" turns energy off; "codecarbon" adds codecarbon's live tracker
# "1": a CUDA loss (an autograd result) is read by the writer later instead of copied at the call (issue 28; off by
# default until measured on a GPU: a CUDA graph replay overwrites its outputs without moving their version counter)
METRIC_BY_REFERENCE = "PROV4TORCH_METRIC_BY_REFERENCE"
COUNTRY = "PROV4TORCH_COUNTRY"  # ISO 3166-1 alpha-3 code for codecarbon's grid intensity
POLICY = "PROV4TORCH_POLICY"
POLICY_MODE = "PROV4TORCH_POLICY_MODE"
REGION = "PROV4TORCH_REGION"
PURPOSE = "PROV4TORCH_PURPOSE"
INTENDED_USE = "PROV4TORCH_INTENDED_USE"
LINEAGE_PATH = "PROV4TORCH_LINEAGE_PATH"  # stores / PROV files searched for checkpoints' lineage (os.pathsep)
SPOOL = "PROV4TORCH_SPOOL"  # local directory runs bound for an object-store --out are written to first
INDEX = "PROV4TORCH_INDEX"  # postgresql://... : a shared lineage index (default: the store's SQLite file)
SIDECAR = "PROV4TORCH_SIDECAR"  # "0": no lineage sidecar beside checkpoints
LAUNCHER = "PROV4TORCH_LAUNCHER"  # the activity that started this rank (set for the ranks a script spawns)
PARENT = "PROV4TORCH_PARENT"  # the recording activity whose Python children may be ranks of a job it started
PARENT_DIST = "PROV4TORCH_PARENT_DIST"  # that process's own distributed settings (RANK, MASTER_PORT, ...)
PARENT_STEM = "PROV4TORCH_PARENT_STEM"  # the file stem of that rank (rank-0): its helper processes' journals name it
DATA_DIRS = "PROV4TORCH_DATA_DIRS"  # files opened under these directories are datasets (prov4torch run --data)
DATA_TAGS = "PROV4TORCH_DATA_TAGS"  # tags files loaded at start_run (os.pathsep), as --data-tags does
SIGNING_KEY = "PROV4TORCH_SIGNING_KEY"  # the PEM private key runs and lineage cards are signed with
TRUSTED_KEYS = "PROV4TORCH_TRUSTED_KEYS"  # PEM public keys whose signatures are trusted (os.pathsep)
CHILD_SCRIPT = "PROV4TORCH_CHILD_SCRIPT"  # set for child processes: the script whose re-runs record as ranks
DEBUG = "PROV4TORCH_DEBUG"  # "1": the CLI prints the traceback of an internal error
OPENLINEAGE_URL = "OPENLINEAGE_URL"  # OpenLineage's own variable: where `prov4torch run` sends run events

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def get(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    value = os.environ.get(name)
    return value if value else None


def flag(name: str, default: bool) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off; anything else is the default."""
    value = (os.environ.get(name) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return default


def number(name: str, default: float) -> float:
    """A positive number, or the default when unset or not a positive number."""
    value = get(name)
    if value is None:
        return default
    try:
        parsed = float(value)
    except ValueError:
        return default
    return parsed if parsed > 0 else default
