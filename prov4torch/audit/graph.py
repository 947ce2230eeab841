"""The graph the audit commands work on: nodes by expanded IRI, relations as edges and adjacency, iterative
cycle-safe walks. ``load`` reads PROV-JSON into it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..provjson import PREFIXES, PROV_NAMESPACE, XSD_NAMESPACE
from .shape import ELEMENTS as ELEMENTS
from .shape import UPSTREAM as UPSTREAM

PROV = PROV_NAMESPACE
XSD = XSD_NAMESPACE
TYPE = PROV + "type"
NAME = PREFIXES["p4t"] + "name"
NAMED_BY = ("used", "wasGeneratedBy", "wasInfluencedBy")  # a blocked dataset is named by the check that read it
DEFAULT_LINEAGE = ("used", "wasGeneratedBy", "wasDerivedFrom", "wasInformedBy")


NO_KINDS: frozenset[str] = frozenset()
_SETS: dict[tuple[frozenset[str], str], frozenset[str]] = {}


def with_item(items: frozenset[str], item: str) -> frozenset[str]:
    """``items | {item}``, one shared object per distinct set (millions of nodes share a handful of them)."""
    if item in items:
        return items
    key = (items, item)
    out = _SETS.get(key)
    if out is None:
        out = _SETS[key] = items | {item}
    return out


@dataclass(slots=True)
class Node:
    """A node of the graph. Large documents make millions, so each is small: slotted, with shared ``kinds``
    and ``sources`` sets (add through ``add_kind``/``add_source``) and its attributes in one flat tuple
    ``(IRI, value, IRI, value, ...)``, IRIs interned, a value a tuple when an attribute has several (JSON
    never gives a tuple) -- about a fifth of a dict of lists. ``attrs`` gives them as a dict, ``values`` one."""

    id: str  # expanded IRI
    kinds: frozenset[str] = NO_KINDS  # entity / activity / agent / bundle
    flat: tuple[Any, ...] = ()
    label: str = ""  # the id as written (prefixed), for messages
    sources: frozenset[str] = NO_KINDS  # files it was read from

    def add_kind(self, kind: str) -> None:
        self.kinds = with_item(self.kinds, kind)

    def add_source(self, source: str) -> None:
        self.sources = with_item(self.sources, source)

    @property
    def attrs(self) -> dict[str, list[Any]]:
        """Expanded attribute IRI -> its values (a new dict: change attributes with ``add_value``)."""
        flat = self.flat
        return {flat[i]: list(flat[i + 1]) if type(flat[i + 1]) is tuple else [flat[i + 1]]
                for i in range(0, len(flat), 2)}

    def values(self, attr: str) -> list[Any]:
        flat = self.flat
        for i in range(0, len(flat), 2):
            if flat[i] == attr:
                v = flat[i + 1]
                return list(v) if type(v) is tuple else [v]
        return []

    def add_value(self, attr: str, value: Any) -> None:
        """One more value of ``attr`` (kept once)."""
        flat = self.flat
        for i in range(0, len(flat), 2):
            if flat[i] == attr:
                old = flat[i + 1]
                many = old if type(old) is tuple else (old,)
                if value not in many:
                    self.flat = (*flat[:i + 1], (*many, value), *flat[i + 2:])
                return
        self.flat = (*flat, attr, value)

    def add_empty(self, attr: str) -> None:
        """An attribute written with no values (``[]``)."""
        if attr not in self.flat[::2]:
            self.flat = (*self.flat, attr, ())

    def types(self) -> set[str]:
        return {v for v in self.values(TYPE) if isinstance(v, str)}


NO_ATTRS: dict[str, list[Any]] = {}  # shared by edges without attributes (never mutated)


@dataclass(slots=True)
class Edge:
    relation: str
    down: str
    up: str
    attrs: dict[str, list[Any]] = field(default_factory=lambda: NO_ATTRS)


Neighbours = tuple[str, ...] | set[str]
SMALL = 8
MAX_SHARED = 4096  # distinct relation attribute sets shared (``Graph.share``)


def link(adjacency: dict[str, Neighbours], a: str, b: str) -> None:
    cur = adjacency.get(a)
    if cur is None:
        adjacency[a] = (b,)
    elif isinstance(cur, tuple):
        if b not in cur:
            adjacency[a] = (*cur, b) if len(cur) < SMALL else {*cur, b}
    else:
        cur.add(b)


class Graph:
    """Nodes by expanded id; ``up[relation][node]`` -> upstream neighbours (and ``down``).

    ``edges=False``: a graph of nodes only (what a summary needs): relations are counted (``relations``) and
    give names, but are neither kept nor walkable -- a large document's relations are most of its memory."""

    def __init__(self, edges: bool = True) -> None:
        self.keep_edges = edges
        self.relations = 0  # relations read (kept in ``edges`` when keep_edges)
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        # neighbours: a tuple while few (most nodes have one), a set past SMALL
        self.up: dict[str, dict[str, Neighbours]] = {r: {} for r in UPSTREAM}
        self.down: dict[str, dict[str, Neighbours]] = {r: {} for r in UPSTREAM}
        self.prefixes: dict[str, str] = dict(PREFIXES)  # every prefix seen (for short labels)
        self.names: dict[str, str] = {}  # entity -> the name a run gave it on its usage or generation
        # relation attributes read before, one dict per distinct content (a million uses with the same role share
        # one): edge attributes are never changed once read
        self.shared_attrs: dict[tuple[Any, ...], dict[str, list[Any]]] = {}

    def share(self, attrs: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """``attrs``, or an equal dict read before (bounded: past ``MAX_SHARED`` distinct ones, as given)."""
        try:
            key = tuple((k, tuple(v)) for k, v in attrs.items())
            known = self.shared_attrs.get(key)
        except TypeError:  # an unhashable value
            return attrs
        if known is not None:
            return known
        if len(self.shared_attrs) < MAX_SHARED:
            self.shared_attrs[key] = attrs
        return attrs

    def name(self, node: Node) -> str | None:
        """A node's human name: its own ``p4t:name``/``prov:label``, else the name a run used for it."""
        own = node.values(NAME) or node.values(PROV + "label")
        return str(own[0]) if own else self.names.get(node.id)

    # -- building -----------------------------------------------------------------------
    def node(self, nid: str, label: str | None = None) -> Node:
        n = self.nodes.get(nid)
        if n is None:
            n = self.nodes[nid] = Node(nid, label=label or nid)
        return n

    def add_edge(self, relation: str, down: str, up: str, attrs: dict[str, list[Any]] | None = None) -> None:
        attrs = attrs or NO_ATTRS
        self.relations += 1
        if self.keep_edges:
            self.edges.append(Edge(relation, down, up, attrs))
            link(self.up[relation], down, up)
            link(self.down[relation], up, down)
        if relation in NAMED_BY and attrs:  # a run's name for what it used or generated
            entity = down if relation == "wasGeneratedBy" else up
            given = entity_name(attrs)
            if given is not None and entity not in self.names:
                self.names[entity] = given

    def short(self, iri: str) -> str:
        """The id as a prefixed name when a known prefix covers it."""
        n = self.nodes.get(iri)
        if n is not None and n.label != iri:
            return n.label
        best = ""
        for prefix, ns in reversed(self.prefixes.items()):  # the documents' own prefixes win ties
            if iri.startswith(ns) and len(ns) > len(best):
                best, name = ns, f"{prefix}:{iri[len(ns):]}"
        return name if best else iri

    # -- walking ----------------------------------------------------------------------------
    def walk(self, start: str, relations: Iterable[str], direction: str = "up",
             depth: int | None = None) -> dict[str, int]:
        """Every node reachable from ``start`` over ``relations``, with its distance. Iterative."""
        adjacency = [(self.up if direction == "up" else self.down)[r] for r in relations if r in UPSTREAM]
        seen = {start: 0}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            d = seen[current]
            if depth is not None and d >= depth:
                continue
            for adj in adjacency:
                for nxt in adj.get(current, ()):
                    if nxt not in seen:
                        seen[nxt] = d + 1
                        queue.append(nxt)
        del seen[start]
        return seen

    def of_type(self, type_iris: Iterable[str]) -> list[Node]:
        """The nodes with one of these ``prov:type`` IRIs (one pass, no call per node: millions of nodes)."""
        wanted = set(type_iris)
        out = []
        for n in self.nodes.values():
            flat = n.flat
            for i in range(0, len(flat), 2):
                if flat[i] == TYPE:
                    v = flat[i + 1]
                    if v in wanted if type(v) is str else type(v) is tuple and any(
                            x in wanted for x in v if isinstance(x, str)):
                        out.append(n)
                    break
        return out

    def activities(self) -> list[Node]:
        return [n for n in self.nodes.values() if "activity" in n.kinds]

def entity_name(attrs: Mapping[str, list[Any]]) -> str | None:
    """The name a usage or generation gives its entity (``p4t:name``, else ``prov:label``)."""
    for attr in (NAME, PROV + "label"):
        values = attrs.get(attr)
        if values:
            return str(values[0])
    return None
