"""Lineage across runs: lineage cards, what a checkpoint came from, findable by its sha256.

``log_model`` stores a card for every checkpoint it records (its upstream datasets
with their tags, and its derivations, including those inherited from its own base
models); ``load_model`` in a later run reads it, so the fine-tune's record names the
data behind its base model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import provjson

CARD_DIR = ".lineage"


def card_path(root: Path, sha256: str) -> Path:
    return root / CARD_DIR / f"sha256-{sha256}.json"


def write_card(root: Path, card: Mapping[str, Any]) -> None:
    """Store a checkpoint's lineage card under the output root (never next to the user's file)."""
    path = card_path(root, str(card["sha256"]))
    provjson.write_atomic(path, json.dumps(card, sort_keys=True, indent=1))


def read_card(root: Path, sha256: str) -> dict[str, Any] | None:
    path = card_path(root, sha256)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def model_card(event: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]],
               loads: Mapping[str, Mapping[str, Any]], activity: str) -> dict[str, Any]:
    """A produced checkpoint's card: its upstream datasets (with their tags) and derivations,
    including everything inherited from the base models it was fine-tuned from."""
    upstream: dict[str, Any] = {}
    derivations: list[list[str]] = []
    for src in event.get("derived_from", []):
        derivations.append([event["id"], src])
        if src in datasets:
            d = datasets[src]
            upstream[src] = {"name": d.get("name"), "sha256": d.get("sha256"), "tags": d.get("tags", {}),
                             "governance": d.get("governance", {})}
        elif src in loads:
            base = loads[src]
            upstream.update(base.get("upstream", {}))
            derivations.extend(base.get("derivations", []))
    return {"model": event["id"], "sha256": event["sha256"], "name": event.get("name"), "activity": activity,
            "governance": event.get("governance", {}), "upstream": upstream,
            "derivations": sorted({tuple(d) for d in derivations})}

