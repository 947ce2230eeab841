"""How records are named: run and rank activities, and content-addressed things.

Every id is unique across runs (qualified by the run id) except content-addressed
ones (datasets, checkpoints, artifacts), which are shared on purpose so lineage
joins across runs.
"""

from __future__ import annotations

from urllib.parse import quote


def local(part: str) -> str:
    """A string made safe as (part of) a qualified name's local part."""
    return quote(str(part), safe="-._~")


def run_activity_id(run_id: str, rank: int, attempt: int | None = None) -> str:
    """The rank's activity; an elastic restart of the rank (attempt 1, 2, ...) is an activity of its own."""
    base = f"p4t:run/{local(run_id)}/rank/{rank}"
    return f"{base}/attempt/{attempt}" if attempt else base


def job_id(run_id: str) -> str:
    return f"p4t:run/{local(run_id)}"


def content_id(kind: str, sha256: str) -> str:
    """Content-addressed id, shared on purpose across runs (datasets, models, artifacts)."""
    return f"p4t:{kind}/sha256-{sha256}"
