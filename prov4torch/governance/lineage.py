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

from ..safefs import safe_dir, write_atomic

CARD_DIR = ".lineage"


def card_path(root: Path, sha256: str) -> Path:
    return root / CARD_DIR / f"sha256-{sha256}.json"


def card_keys(card: Mapping[str, Any]) -> list[str]:
    """Every digest a checkpoint can be found by: its file, its weights, its root digest."""
    return [str(k) for k in dict.fromkeys([card.get("sha256"), *card.get("keys", [])]) if k]


def write_card(root: Path, card: Mapping[str, Any]) -> None:
    """Store a checkpoint's lineage card under the output root, findable by each of its digests."""
    text = json.dumps(card, sort_keys=True, indent=1)
    safe_dir(root, CARD_DIR)  # never through a link planted at <root>/.lineage
    for key in card_keys(card):
        write_atomic(card_path(root, key), text)


def read_card(root: Path, *digests: str | None) -> dict[str, Any] | None:
    """The card found under the first of ``digests`` that has one."""
    for digest in digests:
        if not digest:
            continue
        try:
            card = json.loads(card_path(root, digest).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(card, dict):
            return card
    return None


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
    keys = [event.get("weights_sha256"), event.get("root_sha256")]
    return {"model": event["id"], "sha256": event["sha256"], "keys": [k for k in keys if k],
            "name": event.get("name"), "activity": activity,
            "governance": event.get("governance", {}), "upstream": upstream,
            "derivations": sorted({tuple(d) for d in derivations})}

