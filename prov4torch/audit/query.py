"""Lineage queries across runs: from a focal point, upstream ("what trained this model") or
downstream ("which models did this dataset or code version reach").

IDs may be given as full IRIs, prefixed names, or sha256 digests (whole or a prefix of
at least 8 hex digits); an ambiguous digest is an error listing the candidates. With ``locate`` (the CLI
passes the content digests of a file or directory), an ID may also be the path of a checkpoint or dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError
from ..provjson import MLS_NAMESPACE, NAMESPACE, expand_qname
from .graph import DEFAULT_LINEAGE, Graph, Node
from .load import load_graph, no_cycle_collection
from .text import clean, clean_tree

TYPES = {"dataset": MLS_NAMESPACE + "Dataset", "model": MLS_NAMESPACE + "Model"}
SUMMARY_ATTRS = ("jurisdiction", "originCountry", "personalData", "consentScope", "license", "regulation",
                 "prohibitedPurpose", "consentExpires", "status", "computeRegion", "purpose", "intendedUse", "sha256",
                 "lineageGap", "identity")
_HEX = re.compile(r"^(sha256[:-])?([0-9a-f]{8,64})$")


@dataclass(frozen=True)
class Hit:
    id: str
    label: str
    kind: str  # dataset / model / activity / entity / agent
    distance: int
    attrs: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.label, "iri": self.id, "kind": self.kind, "distance": self.distance,
                "attributes": self.attrs}


def kind_of(node: Node) -> str:
    types = node.types()
    if TYPES["dataset"] in types:
        return "dataset"
    if TYPES["model"] in types:
        return "model"
    for k in ("activity", "agent", "entity", "bundle"):
        if k in node.kinds:
            return k
    return "entity"


def resolve(graph: Graph, text: str, locate: Callable[[str], list[str]] | None = None) -> str:
    """The node a user means: full IRI, prefixed name, (a prefix of) a sha256 digest, or -- with ``locate``,
    which gives the content digests of an existing file or directory (its weights, its bytes), else none --
    a path."""
    if text in graph.nodes:
        return text
    iri = expand_qname(text, graph.prefixes)
    if iri is not None and iri in graph.nodes:
        return iri
    for n in graph.nodes.values():
        if n.label == text:
            return n.id
    m = _HEX.match(text.lower())
    digests = [m.group(2)] if m else locate(text) if locate is not None else []
    for digest in digests:
        found = sorted(digest_matches(graph, digest))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidValueError(f"{text!r} matches {len(found)} records: "
                                    f"{', '.join(graph.short(f) for f in found[:5])}; give more digits or the id")
    named = f"{text} (sha256 {digests[-1][:12]}...)" if digests and not m else text
    raise InvalidValueError(f"{named!r} is not in these files (give a full id, a prefixed name such as "
                            "p4t:model/sha256-..., a sha256 digest, or the checkpoint's path)", value=text)


DIGEST_ATTRS = tuple(NAMESPACE + a for a in ("sha256", "weightsSha256", "rootSha256"))
FILE_DIGEST_ATTRS = (NAMESPACE + "sha256", NAMESPACE + "savedAgainSha256")  # of the files a use or generation names


def digest_matches(graph: Graph, digest: str) -> set[str]:
    """Nodes a sha256 (prefix) names: in their id, their digest attributes, a file digest of theirs, or the
    file digest a run recorded on its generation or usage of them (a checkpoint identified by its weights)."""
    found = {n.id for n in graph.nodes.values()
             if f"sha256-{digest}" in n.id
             or any(str(v).startswith(digest) for a in DIGEST_ATTRS for v in n.values(a))
             or any(str(v).split(" ")[-1].startswith(digest) for v in n.values(NAMESPACE + "fileSha256"))}
    for e in graph.edges:
        if e.relation in ("used", "wasGeneratedBy") and any(
                str(v).startswith(digest) for a in FILE_DIGEST_ATTRS for v in e.attrs.get(a, [])):
            found.add(e.up if e.relation == "used" else e.down)
    return found


def _summary(graph: Graph, node: Node) -> dict[str, Any]:
    out = {}
    for name in SUMMARY_ATTRS:
        values = node.values(NAMESPACE + name)
        if values:
            out[name] = values[0] if len(values) == 1 else values
    label = graph.name(node)
    if label:
        out["label"] = label
    return out


def lineage(paths: Iterable[str | Path], focus: str, *, direction: str = "up", depth: int | None = None,
            kind: str | None = None, relations: Iterable[str] = DEFAULT_LINEAGE,
            locate: Callable[[str], list[str]] | None = None) -> tuple[Hit, list[Hit]]:
    """The focal record and every record up- or downstream of it, nearest first (``locate``: see ``resolve``)."""
    if direction not in ("up", "down"):
        raise InvalidValueError(f"direction must be 'up' or 'down', got {direction!r}")
    if kind is not None and kind not in ("dataset", "model", "activity", "entity", "agent"):
        raise InvalidValueError(f"--type must be dataset, model, activity, entity or agent, got {kind!r}")
    with no_cycle_collection():  # the graph lives and dies inside: never traversed by the cycle collector
        graph = load_graph(paths)
        return query(graph, focus, direction=direction, depth=depth, kind=kind, relations=relations, locate=locate)


def query(graph: Graph, focus: str, *, direction: str = "up", depth: int | None = None, kind: str | None = None,
          relations: Iterable[str] = DEFAULT_LINEAGE,
          locate: Callable[[str], list[str]] | None = None) -> tuple[Hit, list[Hit]]:
    start = resolve(graph, focus, locate)
    reached = graph.walk(start, relations, direction, depth)
    hits = []
    for nid, dist in reached.items():
        node = graph.nodes[nid]
        k = kind_of(node)
        if kind is not None and k != kind:
            continue
        hits.append(Hit(nid, clean(graph.short(nid), 500), k, dist, clean_tree(_summary(graph, node))))
    hits.sort(key=lambda h: (h.distance, h.kind, h.label))
    focal = graph.nodes[start]
    return Hit(start, clean(graph.short(start), 500), kind_of(focal), 0, clean_tree(_summary(graph, focal))), hits
