"""Who this process is in a job: rank, world size, local rank, and the shared run id.

Sources, first match wins: torch.distributed when it is initialised, then the
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables torchrun sets, else a single process.
The run id: ``PROV4TORCH_RUN_ID``, then ``TORCHELASTIC_RUN_ID`` (unless torchrun's
placeholder ``none``), then a broadcast from rank 0 when torch.distributed is
initialised, else a new time-ordered UUIDv7.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .. import env

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Identity:
    rank: int
    world_size: int
    local_rank: int


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, then random bits; sorts by time."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = secrets.randbits(74)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b (62 bits)
    return str(uuid.UUID(int=value))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _torch_dist() -> Any:
    """torch.distributed when torch is already imported and a process group exists."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist
    except Exception:  # noqa: BLE001 - identity must never fail
        return None
    return None


def identity() -> Identity:
    """This process's rank, world size and local rank."""
    dist = _torch_dist()
    local_rank = _env_int("LOCAL_RANK", 0)
    if dist is not None:
        return Identity(dist.get_rank(), dist.get_world_size(), local_rank)
    rank = _env_int("RANK", 0)
    world = max(_env_int("WORLD_SIZE", 1), rank + 1)
    return Identity(rank, world, local_rank)


def sanitize_run_id(value: str) -> str:
    """A run id safe in file names and PROV local names."""
    cleaned = _SAFE_ID.sub("-", value.strip()).strip("-.")
    return cleaned or uuid7()


def resolve_run_id(explicit: str | None = None) -> str:
    """The run id every rank of this job agrees on (see module docstring)."""
    for candidate in (explicit, env.get(env.RUN_ID), os.environ.get("TORCHELASTIC_RUN_ID")):
        if candidate and candidate.strip().lower() != "none":
            return sanitize_run_id(candidate)
    dist = _torch_dist()
    if dist is not None and dist.get_world_size() > 1:
        box = [uuid7() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])
    return uuid7()


def rank_prefix(rank: int, attempt: int = 0) -> str:
    """The stem of a rank's files: ``rank-K``, and ``rank-K.attempt-N`` for an elastic restart."""
    return f"rank-{rank}.attempt-{attempt}" if attempt else f"rank-{rank}"


def elastic_attempt() -> int:
    """Which attempt of its rank this process is: torchelastic's restart count (0 for the first)."""
    return max(_env_int("TORCHELASTIC_RESTART_COUNT", 0), 0)
