"""Lineage that travels with the artifact: lineage cards, found by a checkpoint's content digests.

A *card* says what a checkpoint came from: its upstream datasets with their governance tags, its
derivations (including those inherited from its own base models), the run that made it, and its
inherited governance. When a run records a checkpoint, its card is stored

* in a **sidecar** beside the file (``<file>.lineage.json``; a directory checkpoint ``<dir>.lineage.json``),
  so the file alone carries its lineage wherever it is copied (switch off: ``sidecar=False`` /
  ``PROV4TORCH_SIDECAR=0``); prov4torch never writes into the checkpoint itself;
* in the **lineage index** of the store, a SQLite database ``<out>/.lineage/index.sqlite`` keyed by every
  digest of the checkpoint (file, weights, root), rebuildable from the PROV files
  (``prov4torch index rebuild STORE``).

When a run uses a checkpoint, the card is looked for in that order: its sidecar (trusted only if it
names one of the checkpoint's digests), the local index, then every store or PROV document listed in
``PROV4TORCH_LINEAGE_PATH`` (``os.pathsep``-separated).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..audit.graph import DEFAULT_LINEAGE, Graph, Node
from ..audit.load import expand_dirs, load_graph
from ..errors import ConfigError, Prov4TorchError
from ..provjson import MLS_NAMESPACE, NAMESPACE, value
from ..safefs import safe_dir, write_atomic
from .tags import DATASET_TAGS, inherit

CARD_DIR = ".lineage"
INDEX = "index.sqlite"
SIDECAR_SUFFIX = ".lineage.json"
GOVERNANCE_ATTRS = tuple(attr for attr, _ in DATASET_TAGS.values())


def card_keys(card: Mapping[str, Any]) -> list[str]:
    """Every digest a checkpoint can be found by: its file, its weights, its root digest."""
    return [str(k) for k in dict.fromkeys([card.get("sha256"), *card.get("keys", [])]) if k]


# -- the SQLite index ---------------------------------------------------------------------------------

class LineageIndex:
    """``<store>/.lineage/index.sqlite``: cards by digest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / CARD_DIR / INDEX

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.is_file():
            return None
        if create:
            safe_dir(self.root, CARD_DIR)
        if self.path.is_symlink():
            raise ConfigError(f"{self.path} is a link: prov4torch does not write through links")
        con = sqlite3.connect(self.path, timeout=10)
        con.execute("CREATE TABLE IF NOT EXISTS cards (digest TEXT PRIMARY KEY, model TEXT, card TEXT)")
        return con

    def put(self, card: Mapping[str, Any]) -> None:
        text = json.dumps(card, sort_keys=True)
        con = self._connect(create=True)
        assert con is not None
        with contextlib.closing(con), con:
            con.executemany("INSERT OR REPLACE INTO cards VALUES (?, ?, ?)",
                            [(k, str(card.get("model")), text) for k in card_keys(card)])

    def get(self, *digests: str | None) -> dict[str, Any] | None:
        try:
            con = self._connect(create=False)
        except (sqlite3.Error, OSError, Prov4TorchError):
            return None
        if con is None:
            return None
        with contextlib.closing(con):
            for d in digests:
                if d:
                    try:
                        row = con.execute("SELECT card FROM cards WHERE digest = ?", (d,)).fetchone()
                    except sqlite3.Error:
                        return None
                    if row:
                        card = json.loads(row[0])
                        return card if isinstance(card, dict) else None
        return None

    def rebuild(self, documents: Iterable[Path]) -> int:
        """Replace the index with the cards found in ``documents`` (PROV-JSON files); how many cards."""
        cards = [c for doc in documents for c in cards_from_graph(load_graph([doc]))]
        con = self._connect(create=True)
        assert con is not None
        with contextlib.closing(con), con:
            con.execute("DELETE FROM cards")
        for card in cards:
            self.put(card)
        return len(cards)


def rebuild_index(store: str | os.PathLike[str]) -> tuple[int, int]:
    """Rebuild ``<store>/.lineage/index.sqlite`` from every ``*.prov.json`` under ``store``: (files, cards)."""
    root = Path(store)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory: give the output root of your runs (PROV4TORCH_DIR)")
    files = sorted(p for p in root.rglob("*.prov.json") if not p.name.startswith("."))
    return len(files), LineageIndex(root).rebuild(files)


# -- sidecars ---------------------------------------------------------------------------------------

def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + SIDECAR_SUFFIX)


def write_sidecar(checkpoint: Path, card: Mapping[str, Any]) -> Path:
    path = sidecar_path(checkpoint)
    write_atomic(path, json.dumps({"prov4torch-lineage": 1, **card}, sort_keys=True, indent=1))
    return path


def read_sidecar(checkpoint: Path, digests: Iterable[str | None]) -> dict[str, Any] | None:
    """The sidecar's card, if there is one and it names one of ``digests`` (a stale one is ignored)."""
    try:
        card = json.loads(sidecar_path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(card, dict) or not set(card_keys(card)) & {d for d in digests if d}:
        return None
    return card


# -- finding a card -----------------------------------------------------------------------------------

def search_path() -> list[Path]:
    from .. import env

    raw = env.get(env.LINEAGE_PATH) or ""
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def find_card(checkpoint: Path, digests: list[str | None], root: Path) -> tuple[dict[str, Any] | None, str]:
    """(card, where it was found) for a checkpoint: sidecar, local index, then PROV4TORCH_LINEAGE_PATH."""
    card = read_sidecar(checkpoint, digests)
    if card is not None:
        return card, str(sidecar_path(checkpoint))
    card = LineageIndex(root).get(*digests)
    if card is not None:
        return card, str(LineageIndex(root).path)
    wanted = {d for d in digests if d}
    for entry in search_path():
        if (entry / CARD_DIR / INDEX).is_file():
            card = LineageIndex(entry).get(*digests)
            if card is not None:
                return card, str(entry / CARD_DIR / INDEX)
        elif entry.exists():
            try:
                files = list(expand_dirs([entry]))
                for f in files:
                    for card in cards_from_graph(load_graph([f])):
                        if set(card_keys(card)) & wanted:
                            return card, str(f)
            except Prov4TorchError:
                continue
    return None, ""


# -- cards --------------------------------------------------------------------------------------------

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
                             "governance": d.get("governance", {}), "identity": d.get("identity", "content")}
        elif src in loads:
            base = loads[src]
            upstream.update(base.get("upstream", {}))
            derivations.extend(base.get("derivations", []))
    keys = [event.get("weights_sha256"), event.get("root_sha256")]
    return {"model": event["id"], "sha256": event["sha256"], "keys": [k for k in keys if k],
            "name": event.get("name"), "activity": activity,
            "governance": event.get("governance", {}), "upstream": upstream,
            "derivations": sorted({tuple(d) for d in derivations})}


def declared_card(model_id: str, digests: list[str | None], dataset_id: str,
                  governance: Mapping[str, Any], tags: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The card of a third-party checkpoint whose training data was declared (not recorded)."""
    return {"model": model_id, "sha256": next((d for d in digests if d), None), "keys": [d for d in digests if d],
            "declared": source, "governance": dict(governance),
            "upstream": {dataset_id: {"tags": dict(tags), "governance": dict(governance), "identity": "declared"}},
            "derivations": [[model_id, dataset_id]]}


def _encoded(node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dataset node's governance: (encoded PROV attributes, summary as the runtime keeps it)."""
    tags: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for attr in GOVERNANCE_ATTRS:
        values = node.values(NAMESPACE + attr.split(":", 1)[1])
        if not values:
            continue
        if attr == "p4t:consentExpires":
            t = _dt.datetime.fromisoformat(str(values[0]).replace("Z", "+00:00"))
            tags[attr] = value(t)
            summary[attr] = t.astimezone(_dt.UTC).isoformat()
            continue
        tags[attr] = value(values if len(values) > 1 else values[0])
        summary[attr] = values if len(values) > 1 else values[0]
    return tags, summary


def cards_from_graph(graph: Graph) -> list[dict[str, Any]]:
    """A card for every model in a PROV graph (ours or merged), keyed by the digests it records."""
    cards = []
    datasets = {n.id for n in graph.of_type([MLS_NAMESPACE + "Dataset"])}
    for model in graph.of_type([MLS_NAMESPACE + "Model"]):
        keys: list[str] = []
        for attr in ("weightsSha256", "sha256", "rootSha256"):
            keys += [str(v) for v in model.values(NAMESPACE + attr)]
        for e in graph.edges:  # a file's own digest is on the run's generation or usage of the model
            if model.id in (e.down, e.up) and e.relation in ("wasGeneratedBy", "used"):
                keys += [str(v) for v in e.attrs.get(NAMESPACE + "sha256", [])]
        if not keys:
            continue
        reached = graph.walk(model.id, DEFAULT_LINEAGE, "up")
        upstream: dict[str, Any] = {}
        for d in sorted(set(reached) & datasets):
            tags, summary = _encoded(graph.nodes[d])
            upstream[graph.short(d)] = {"tags": tags, "governance": summary, "name": graph.name(graph.nodes[d]),
                                        "identity": str((graph.nodes[d].values(NAMESPACE + "identity") or
                                                         ["content"])[0])}
        members = {model.id, *reached}
        derivations = sorted({(graph.short(e.down), graph.short(e.up)) for e in graph.edges
                              if e.relation == "wasDerivedFrom" and e.down in members and e.up in members})
        short = graph.short(model.id)
        if not any(g == short for g, _ in derivations):  # a model derived only through its run's usage
            derivations += [(short, d) for d in upstream]
        cards.append({"model": short, "sha256": keys[0], "keys": sorted(set(keys)),
                      "governance": inherit(u["governance"] for u in upstream.values()),
                      "upstream": upstream, "derivations": sorted(set(derivations))})
    return cards
