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

When a run uses a checkpoint, every source is read and trusted in this order (DESIGN §8): this store's own
index; a sidecar signed by a trusted key (a DSSE envelope over an in-toto statement whose subject is the
checkpoint's digest); an unsigned sidecar, or a store or PROV document listed in ``PROV4TORCH_LINEAGE_PATH``
(``os.pathsep``-separated). The strongest source names the lineage; governance is combined restrictively over
all of them, so a lower source never relaxes a higher one, and where they differ the conflict is recorded. A
sidecar is read only if it is a regular file under a size cap, parsed against a strict schema, and must name
the checkpoint's own digest; one that fails any of this (or whose signature does not verify) is an error
recorded on the load, never a reason to relax the verdict.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit import jsonread
from ..audit.graph import DEFAULT_LINEAGE, Graph, Node
from ..audit.load import expand_dirs, load_graph
from ..errors import ConfigError, EvidenceError, MissingExtraError, Prov4TorchError, ProvInputError
from ..evidence import dsse
from ..provjson import MLS_NAMESPACE, NAMESPACE, value
from ..safefs import read_or_raise, write_atomic
from .index import CARD_DIR, INDEX, LineageIndex, card_keys
from .tags import DATASET_TAGS, inherit

SIDECAR_SUFFIX = ".lineage.json"
GOVERNANCE_ATTRS = tuple(attr for attr, _ in DATASET_TAGS.values())


def rebuild_index(store: str | os.PathLike[str], url: str | None = None) -> tuple[int, int]:
    """Rebuild the lineage index of ``store`` (its SQLite file, or the PostgreSQL index ``url`` /
    ``PROV4TORCH_INDEX``) from every ``*.prov.json`` under ``store``: (files, cards)."""
    root = Path(store)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory: give the output root of your runs (PROV4TORCH_DIR)")
    files = sorted(p for p in root.rglob("*.prov.json") if not p.name.startswith("."))
    index = LineageIndex(root, url)
    cards = []
    for doc in files:
        try:
            cards += cards_from_graph(load_graph([doc]))
        except ProvInputError as exc:
            raise ProvInputError(str(exc) if str(doc) in str(exc) else f"{doc}: {exc}", value=str(doc)) from None
    return len(files), index.replace(cards)


# -- sidecars: a DSSE envelope over a lineage statement ---------------------------------------------------

CARD_PREDICATE = "https://w3id.org/prov4torch/lineage-card/v1"
MAX_SIDECAR_BYTES = 16 << 20
MAX_UPSTREAM = 10_000
MAX_DERIVATIONS = 100_000
MAX_TEXT = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + SIDECAR_SUFFIX)


def card_statement(checkpoint: Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto statement a sidecar carries: the checkpoint's digests as subject, the card as predicate."""
    subj = dsse.subject(checkpoint.name, str(card.get("sha256") or ""),
                        {"p4t:weightsSha256": next((k for k in card.get("keys", []) if k != card.get("sha256")), None),
                         "p4t:model": card.get("model")})
    return dsse.statement([subj], CARD_PREDICATE, card)


def card_envelope(checkpoint: Path, card: Mapping[str, Any], signer: Any = None) -> dict[str, Any]:
    """The card as a DSSE envelope over its statement (signed when ``signer`` is given)."""
    return dsse.envelope(card_statement(checkpoint, card), signer)


def write_sidecar(checkpoint: Path, envelope: Mapping[str, Any]) -> Path:
    """A card's envelope (``card_envelope``) beside the checkpoint."""
    path = sidecar_path(checkpoint)
    write_atomic(path, json.dumps(envelope, sort_keys=True, indent=1))
    return path


def sidecar_model(data: Any) -> str | None:
    """The model a parsed sidecar describes, if it is one prov4torch wrote (an envelope of a lineage card, or
    the older plain card); None for anything else."""
    if not isinstance(data, dict):
        return None
    if data.get("prov4torch-lineage"):
        return str(data.get("model"))
    try:
        raw, _, _ = dsse.parse(data, "sidecar")
        stmt = json.loads(raw)
        if isinstance(stmt, dict) and stmt.get("predicateType") == CARD_PREDICATE:
            return str((stmt.get("predicate") or {}).get("model"))
    except (EvidenceError, ValueError, AttributeError, RecursionError):
        pass
    return None


def read_json_file(path: Path, cap: int) -> Any:
    """A JSON file that must be regular and at most ``cap`` bytes (EvidenceError naming it otherwise)."""
    raw = read_or_raise(path, cap, EvidenceError)
    try:
        return jsonread.loads(raw.decode("utf-8"), str(path)).value
    except (UnicodeDecodeError, Prov4TorchError) as exc:
        raise EvidenceError(f"{path}: not JSON: {exc}") from None


def _check_governance(gov: Any, where: str) -> dict[str, Any]:
    if not isinstance(gov, dict) or len(gov) > len(GOVERNANCE_ATTRS):
        raise EvidenceError(f"{where}: governance must be an object of governance attributes")
    for attr, v in gov.items():
        if attr not in GOVERNANCE_ATTRS:
            raise EvidenceError(f"{where}: governance has unknown attribute {str(attr)[:80]!r}")
        items = v if isinstance(v, list) else [v]
        if len(items) > 256 or not all(isinstance(x, (str, bool)) and len(str(x)) <= MAX_TEXT for x in items):
            raise EvidenceError(f"{where}: governance {attr} must be a string, a boolean or a list of them")
        if attr == "p4t:personalData" and not all(isinstance(x, bool) for x in items):
            raise EvidenceError(f"{where}: governance p4t:personalData must be true or false")
        if attr == "p4t:consentExpires":
            try:
                t = _dt.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            except ValueError:
                raise EvidenceError(f"{where}: governance p4t:consentExpires {str(v)[:40]!r} is not a date-time") \
                    from None
            if t.tzinfo is None:
                raise EvidenceError(f"{where}: governance p4t:consentExpires has no timezone")
    return gov


def _text(v: Any, where: str, optional: bool = True) -> None:
    if v is None and optional:
        return
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise EvidenceError(f"{where} must be a string of at most {MAX_TEXT} characters")


def validate_card(card: Any, source: str) -> dict[str, Any]:
    """A lineage card checked against its schema (types, sizes, counts): EvidenceError naming the field."""
    if not isinstance(card, dict):
        raise EvidenceError(f"{source}: a lineage card is a JSON object")
    _text(card.get("model"), f"{source}: model", optional=False)
    if card.get("sha256") is not None and not (isinstance(card["sha256"], str) and _HEX64.match(card["sha256"])):
        raise EvidenceError(f"{source}: sha256 must be 64 lower-case hex digits")
    keys = card.get("keys", [])
    if not isinstance(keys, list) or len(keys) > 16 or not all(isinstance(k, str) and _HEX64.match(k) for k in keys):
        raise EvidenceError(f"{source}: keys must be a list of at most 16 sha256 digests")
    for name in ("name", "activity", "declared"):
        _text(card.get(name), f"{source}: {name}")
    _check_governance(card.get("governance", {}), source)
    upstream = card.get("upstream", {})
    if not isinstance(upstream, dict) or len(upstream) > MAX_UPSTREAM:
        raise EvidenceError(f"{source}: upstream must be an object of at most {MAX_UPSTREAM} datasets")
    for did, up in upstream.items():
        where = f"{source}: upstream {str(did)[:80]!r}"
        _text(did, where, optional=False)
        if not isinstance(up, dict) or set(up) - {"name", "sha256", "tags", "governance", "identity"}:
            raise EvidenceError(f"{where} must be an object of name, sha256, tags, governance, identity")
        for name in ("name", "sha256", "identity"):
            _text(up.get(name), f"{where}: {name}")
        _check_governance(up.get("governance", {}), where)
        tags = up.get("tags", {})
        if not isinstance(tags, dict) or set(tags) - set(GOVERNANCE_ATTRS):
            raise EvidenceError(f"{where}: tags must be an object of governance attributes")
    derivations = card.get("derivations", [])
    if not isinstance(derivations, list) or len(derivations) > MAX_DERIVATIONS or not all(
            isinstance(d, (list, tuple)) and len(d) == 2 and all(isinstance(x, str) and len(x) <= MAX_TEXT for x in d)
            for d in derivations):
        raise EvidenceError(f"{source}: derivations must be a list of [generated, used] id pairs")
    return card


@dataclass
class Claim:
    """A card found for a checkpoint, with how far it is trusted (``TRUST``: lower is stronger)."""

    card: dict[str, Any]
    where: str
    level: int
    signer: str | None = None


TRUST = {0: "index", 1: "signed", 2: "unsigned"}


def read_sidecar(checkpoint: Path, digests: Iterable[str | None], keys: Iterable[Any] = ()) -> Claim | None:
    """The sidecar's card, if there is one for this content: a ``Claim`` at level 1 (signed by a trusted key) or
    2 (unsigned, an older plain card, or a signature that does not verify -- then ``EvidenceError`` is raised
    instead, so the caller records it). A card for other content (stale, or replayed from another checkpoint)
    is an error too. No sidecar: None."""
    path = sidecar_path(checkpoint)
    if not os.path.lexists(path):
        return None
    data = read_json_file(path, MAX_SIDECAR_BYTES)
    wanted = {d for d in digests if d}
    if isinstance(data, dict) and data.get("prov4torch-lineage"):  # the unsigned card of earlier versions
        card = validate_card({k: v for k, v in data.items() if k != "prov4torch-lineage"}, str(path))
        if not set(card_keys(card)) & wanted:
            raise EvidenceError(f"{path}: the card names other content than {checkpoint.name} (stale or replayed)")
        return Claim(card, str(path), 2)
    opened = dsse.open_envelope(data, keys, str(path))
    if opened.statement.get("predicateType") != CARD_PREDICATE:
        raise EvidenceError(f"{path}: not a lineage card (predicateType {opened.statement['predicateType'][:80]!r})")
    card = validate_card(opened.statement["predicate"], str(path))
    named = set(dsse.subject_digests(opened.statement).values()) | set(card_keys(card))
    if not named & wanted or not set(dsse.subject_digests(opened.statement).values()) & wanted:
        raise EvidenceError(f"{path}: the card names other content than {checkpoint.name} (stale or replayed)")
    if opened.signed and not opened.verified:
        raise EvidenceError(f"{path}: {opened.problem}: the card may have been altered")
    return Claim(card, str(path), 1 if opened.verified else 2, ",".join(opened.verified_by) or None)


# -- finding a card: every source, trusted in order -----------------------------------------------------

def search_path() -> list[Path]:
    from .. import env

    raw = env.get(env.LINEAGE_PATH) or ""
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


@dataclass
class Found:
    """The lineage of a checkpoint as every source tells it, combined by trust (``find_lineage``)."""

    card: dict[str, Any] | None = None
    where: str = ""
    level: int | None = None  # the strongest source's TRUST level
    claims: list[Claim] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # sources that could not be read or verified
    conflicts: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.level is not None and self.level <= 1

    @property
    def source(self) -> str:
        return TRUST[self.level] if self.level is not None else "none"


def _other_stores(digests: list[str | None]) -> Iterator[Claim]:
    wanted = {d for d in digests if d}
    for entry in search_path():
        if (entry / CARD_DIR / INDEX).is_file():
            card = LineageIndex(entry, url="").get(*digests)  # that store's own file, not the shared index
            if card is not None:
                yield Claim(card, str(entry / CARD_DIR / INDEX), 2)
        elif entry.exists():
            try:
                for f in expand_dirs([entry]):
                    for card in cards_from_graph(load_graph([f])):
                        if set(card_keys(card)) & wanted:
                            yield Claim(card, str(f), 2)
                            break
            except Prov4TorchError:
                continue


def find_lineage(checkpoint: Path, digests: list[str | None], root: Path, keys: Iterable[Any] = ()) -> Found:
    """Every card of a checkpoint: this store's index (level 0), its sidecar (1 when signed by a trusted key,
    else 2), the stores of PROV4TORCH_LINEAGE_PATH (2). The strongest names the source; governance is combined
    restrictively over all of them (a lower source never relaxes a higher one, and may only add
    restrictions); differing governance is a conflict, recorded. A source that cannot be read or verified is
    an error, recorded; it never relaxes anything."""
    found = Found()
    try:
        index = LineageIndex(root)
        card = index.get(*digests)
        if card is not None:
            found.claims.append(Claim(validate_card(card, index.where), index.where, 0))
    except (EvidenceError, ConfigError, MissingExtraError) as exc:
        found.errors.append(str(exc))
    try:
        claim = read_sidecar(checkpoint, digests, keys)
        if claim is not None:
            found.claims.append(claim)
    except EvidenceError as exc:
        found.errors.append(str(exc))
    if not found.claims:
        for claim in _other_stores(digests):
            try:
                validate_card(claim.card, claim.where)
                found.claims.append(claim)
                break
            except EvidenceError as exc:
                found.errors.append(str(exc))
    if found.claims:
        _combine(found)
    return found


def _combine(found: Found) -> None:
    claims = sorted(found.claims, key=lambda c: c.level)
    best = claims[0]
    card = json.loads(json.dumps(best.card))  # a copy
    for other in claims[1:]:
        if _norm_gov(other.card.get("governance", {})) != _norm_gov(best.card.get("governance", {})):
            found.conflicts.append(
                f"{other.where} ({TRUST[other.level]}) says {_norm_gov(other.card.get('governance', {}))} where "
                f"{best.where} ({TRUST[best.level]}) says {_norm_gov(best.card.get('governance', {}))}")
        for did, up in (other.card.get("upstream") or {}).items():
            card["upstream"].setdefault(did, up)
        card["derivations"] = sorted({tuple(d) for d in [*card.get("derivations", []),
                                                        *other.card.get("derivations", [])]})
    card["governance"] = inherit([c.card.get("governance", {}) for c in claims])
    found.card, found.where, found.level = card, best.where, best.level


def _norm_gov(gov: Mapping[str, Any]) -> dict[str, Any]:
    return {k: sorted(map(str, v)) if isinstance(v, list) else v for k, v in sorted(gov.items())}


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
            try:
                t = _dt.datetime.fromisoformat(str(values[0]).replace("Z", "+00:00"))
            except ValueError:  # dropping it would relax the lineage: the document is refused instead
                raise ProvInputError(f"{node.id}: p4t:consentExpires {str(values[0])[:40]!r} is not a date-time "
                                     "(ISO 8601 with a timezone); fix the document", value=str(values[0])) from None
            if t.tzinfo is None:
                t = t.replace(tzinfo=_dt.UTC)
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
    file_digests: dict[str, list[str]] = {}  # a file's own digest is on the run's generation or usage of a model
    for e in graph.edges:  # one pass (a pass per model was quadratic in a store of many models)
        if e.relation in ("wasGeneratedBy", "used"):
            for end in (e.down, e.up):
                file_digests.setdefault(end, []).extend(str(v) for v in e.attrs.get(NAMESPACE + "sha256", []))
    for model in graph.of_type([MLS_NAMESPACE + "Model"]):
        keys: list[str] = []
        for attr in ("weightsSha256", "sha256", "rootSha256"):
            keys += [str(v) for v in model.values(NAMESPACE + attr)]
        keys += file_digests.get(model.id, [])
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
        derived = graph.up["wasDerivedFrom"]
        derivations = sorted({(graph.short(m), graph.short(u)) for m in members for u in derived.get(m, ())
                              if u in members})
        short = graph.short(model.id)
        if not any(g == short for g, _ in derivations):  # a model derived only through its run's usage
            derivations += [(short, d) for d in upstream]
        cards.append({"model": short, "sha256": keys[0], "keys": sorted(set(keys)),
                      "governance": inherit(u["governance"] for u in upstream.values()),
                      "upstream": upstream, "derivations": sorted(set(derivations))})
    return cards
