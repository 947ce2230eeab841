"""Any PROV-JSON document(s) -> one ``Graph`` of expanded IRIs, for policy checks and lineage queries.

Identifiers, attribute names and ``xsd:QName`` values are expanded to full IRIs with
the prefixes in scope (document, then bundle), so a policy's ``dg:jurisdiction``
matches ``p4t:jurisdiction`` when both prefixes name the same IRI. Several files
(rank files of one job, whole runs) load into one graph: the merged view. Bundles
are flattened into it. Files are read a record at a time (``stream``), in batches
that one loop per section turns into nodes and edges.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..provjson import IRI_SCHEMES, PREFIXES, expand_qname
from . import stream
from .graph import (
    ELEMENTS,
    NAMED_BY,
    NO_ATTRS,
    NO_KINDS,
    PROV,
    UPSTREAM,
    XSD,
    Edge,
    Graph,
    Node,
    entity_name,
    link,
    with_item,
)
from .jsonread import ProvInputError, load_document
from .shape import check_member, check_record, check_shape, json_kind

_SCHEMES = {s.split(":")[0] for s in IRI_SCHEMES}
NAMES_CACHED = 1 << 16


class _Scope:
    def __init__(self, prefixes: Mapping[str, str], default: str | None) -> None:
        self.prefixes = dict(prefixes)
        self.default = default
        self.names: dict[str, str] = {}  # attribute names and datatypes, expanded once and shared
        self.last: tuple[str | None, str] = (None, "")  # the last upstream end of a relation: (as written, node id)

    def expand(self, name: Any) -> str:
        if not isinstance(name, str):
            return str(name)
        prefix, sep, local = name.partition(":")
        if sep and prefix not in _SCHEMES and not local.startswith("//"):
            ns = self.prefixes.get(prefix)
            if ns is not None:
                return ns + local  # the common case, as expand_qname would give it
        iri = expand_qname(name, self.prefixes, self.default)
        return name if iri is None else iri

    def name(self, name: str) -> str:
        """``expand`` for the names that repeat across millions of records (attribute names, types, QName
        values): one shared string each. The cache is bounded: past NAMES_CACHED distinct names, expand only."""
        iri = self.names.get(name)
        if iri is None:
            iri = self.expand(name)
            if len(self.names) < NAMES_CACHED:
                iri = self.names[name] = sys.intern(iri)
        return iri


_QNAME_TYPES = frozenset({XSD + "QName", PROV + "QUALIFIED_NAME", PROV + "QualifiedName"})
_INT_TYPES = frozenset(XSD + t for t in ("int", "long", "integer", "short", "byte"))
_FLOAT_TYPES = frozenset(XSD + t for t in ("double", "float", "decimal"))
_BOOLEAN = XSD + "boolean"


def _literal(value: Any, scope: _Scope) -> Any:
    """One attribute value as a Python value: QNames expanded, typed numbers/booleans parsed."""
    if not isinstance(value, dict):
        return value
    raw = value.get("$")
    given = value.get("type")
    if not isinstance(given, str) or not given:
        return raw
    kind = scope.name(given)
    if kind in _QNAME_TYPES:
        return scope.name(raw) if isinstance(raw, str) else scope.expand(raw)  # types repeat: one string each
    if not isinstance(raw, str):
        return raw
    if kind in _INT_TYPES:
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind in _FLOAT_TYPES:
        try:
            return float(raw.replace("INF", "inf"))
        except ValueError:
            return raw
    if kind == _BOOLEAN:
        return raw.strip().lower() in ("true", "1")
    return raw


def as_records(value: Any) -> list[dict[str, Any]]:
    """A record, or the records of a repeated id (a JSON array), as a list; anything else: none."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def load_json(path: str | Path) -> dict[str, Any]:
    """A PROV-JSON file's top-level object, or a ProvInputError naming the file (``jsonread``)."""
    return load_document(path)


def prefix_map(container: Mapping[str, Any]) -> dict[str, Any]:
    """A document's or bundle's ``prefix`` section, or an empty one when it is missing or malformed."""
    prefixes = container.get("prefix")
    return prefixes if isinstance(prefixes, dict) else {}


def _top_scope(prefixes: Mapping[str, Any]) -> _Scope:
    return _Scope({**PREFIXES, **{k: v for k, v in prefixes.items() if isinstance(v, str) and k != "default"}},
                  prefixes.get("default") if isinstance(prefixes.get("default"), str) else None)


def _bundle_scope(outer: _Scope, inner: Mapping[str, Any]) -> _Scope:
    return _Scope({**outer.prefixes, **{k: v for k, v in inner.items() if isinstance(v, str)}},
                  inner.get("default") if isinstance(inner.get("default"), str) else outer.default)


def add_document(graph: Graph, doc: Mapping[str, Any], source: str = "<document>") -> None:
    """Add one PROV-JSON document (and its bundles) to ``graph``; ProvInputError for a shape it cannot read."""
    check_shape(doc, source)
    scope = _top_scope(prefix_map(doc))
    graph.prefixes.update({k: v for k, v in scope.prefixes.items()})
    _add_records(graph, doc, scope, source)
    bundles = doc.get("bundle")
    if isinstance(bundles, dict):
        for bid, bundle in bundles.items():
            if not isinstance(bundle, dict):
                continue
            bscope = _bundle_scope(scope, prefix_map(bundle))
            graph.prefixes.update(bscope.prefixes)
            graph.node(scope.expand(bid), bid).add_kind("bundle")
            _add_records(graph, bundle, bscope, source)


def add_file(graph: Graph, path: str | Path) -> None:
    """Add one PROV-JSON file to ``graph`` a record at a time (``stream``): the file's text is never held whole,
    only the graph. The same refusals as ``add_document`` of the parsed file."""
    source = str(path)
    scopes: dict[str | None, _Scope] = {}
    for item in stream.items(path):
        if isinstance(item, stream.Records):
            _add_batch(graph, item.section, item.records, scopes[item.bundle], source, item.bundle is not None)
        elif isinstance(item, stream.Prefix):
            value = item.value if item.value is not None else {}
            where = f"{source}: {'bundle ' if item.bundle is not None else ''}section 'prefix'"
            check_member("prefix", value, where, source, item.bundle is not None)
            scope = _top_scope(value) if item.bundle is None else _bundle_scope(scopes[None], value)
            scopes[item.bundle] = scope
            graph.prefixes.update(scope.prefixes)
        elif isinstance(item, stream.Bundle):
            graph.node(scopes[None].expand(item.id), item.id).add_kind("bundle")
        elif isinstance(item, stream.Value):
            if item.key == "":
                raise ProvInputError(f"{source}: section 'bundle': a bundle must be an object of records",
                                     value=source)
            where = f"{source}: {'bundle ' if item.bundle is not None else ''}section {item.key!r}"
            check_member(item.key, item.value, where, source, item.bundle is not None)
            raise ProvInputError(f"{where}: cannot be read", value=source)  # not reached: streamed when valid
        elif isinstance(item, stream.Duplicate):
            raise ProvInputError(f"{source}: key {item.key!r} appears twice in one object: the document is "
                                 "ambiguous; fix it (prov4torch validate shows where)", value=source)
        else:
            raise ProvInputError(f"{source}: a PROV-JSON document is a JSON object, found {json_kind(item.value)}",
                                 value=source)


def _add_batch(graph: Graph, kind: str, records: list[tuple[str, Any]], scope: _Scope, source: str,
               in_bundle: bool) -> None:
    """Records of one section, checked and added; the common cases (a new node from one record, a relation
    between two ids) in one loop without a call per record, anything else through ``_add_record``."""
    if kind in ELEMENTS:
        _add_elements(graph, kind, records, scope, source, in_bundle)
    elif kind in UPSTREAM and kind != "hadMember":
        _add_relations(graph, kind, records, scope, source, in_bundle)
    else:
        for rid, value in records:
            check_record(kind, rid, value, source, in_bundle)
            _add_record(graph, kind, rid, value, scope, source)


def _add_elements(graph: Graph, kind: str, records: list[tuple[str, Any]], scope: _Scope, source: str,
                  in_bundle: bool) -> None:
    nodes, expand, name, names = graph.nodes, scope.expand, scope.name, scope.names
    kinds, sources = with_item(NO_KINDS, kind), with_item(NO_KINDS, source)
    for rid, rec in records:
        nid = expand(rid)
        if type(rec) is dict and nid not in nodes:
            flat: list[Any] = []
            for attr, v in rec.items():
                iri = names.get(attr) or name(attr)
                if type(v) is dict:
                    raw, given = v.get("$"), v.get("type")
                    if raw is None and "$" not in v:
                        break  # check_record says what is wrong
                    if type(raw) is str and type(given) is str and (names.get(given) or name(given)) in _QNAME_TYPES:
                        v = names.get(raw) or name(raw)  # the common typed literal: a QName (a prov:type)
                    else:
                        v = _literal(v, scope)
                elif type(v) is list:
                    lits: list[Any] = []
                    for x in v:
                        if type(x) is dict:
                            if "$" not in x:
                                break
                            x = _literal(x, scope)
                        if x not in lits:  # values may be unhashable (a list in a list)
                            lits.append(x)
                    else:
                        v = lits[0] if len(lits) == 1 else tuple(lits)
                        flat.append(iri)
                        flat.append(v)
                        continue
                    break
                flat.append(iri)
                flat.append(v)
            else:
                if len(flat) <= 2 or len(flat) == 2 * len(set(flat[::2])):  # two names for one IRI: below
                    nodes[nid] = Node(nid, kinds, tuple(flat), rid or nid, sources)
                    continue
        check_record(kind, rid, rec, source, in_bundle)
        _add_record(graph, kind, rid, rec, scope, source)


def _add_relations(graph: Graph, kind: str, records: list[tuple[str, Any]], scope: _Scope, source: str,
                   in_bundle: bool) -> None:
    down_attr, up_attr = UPSTREAM[kind]
    nodes, expand, name, edges, graph_names = graph.nodes, scope.expand, scope.name, graph.edges, graph.names
    ups, downs = graph.up[kind], graph.down[kind]
    named, keep = kind in NAMED_BY, graph.keep_edges
    last_u, last_un = scope.last
    for rid, rec in records:
        if type(rec) is dict:
            d, u = rec.get(down_attr), rec.get(up_attr)
            if type(d) is str and type(u) is str:
                dnid = expand(d)
                node = nodes.get(dnid)
                if node is None:
                    node = nodes[dnid] = Node(dnid, label=d or dnid)
                dn = node.id  # the node's own string: one copy of each id
                if u != last_u:  # an activity's records usually come together
                    node = nodes.get(unid := expand(u))
                    if node is None:
                        node = nodes[unid] = Node(unid, label=u or unid)
                    last_u, last_un = u, node.id
                un = last_un
                attrs = NO_ATTRS
                if len(rec) > 2:
                    attrs = {name(k): [_literal(x, scope) for x in (v if isinstance(v, list) else [v])]
                             for k, v in rec.items() if k != down_attr and k != up_attr}
                    given = entity_name(attrs) if named else None
                    if given is not None:
                        graph_names.setdefault(dn if kind == "wasGeneratedBy" else un, given)
                    attrs = graph.share(attrs)
                # what Graph.add_edge does, inline: a call per relation costs a tenth or more of loading
                graph.relations += 1
                if not keep:
                    continue
                edges.append(Edge(kind, dn, un, attrs))
                if dn in ups:
                    link(ups, dn, un)
                else:
                    ups[dn] = (un,)
                if un in downs:
                    link(downs, un, dn)
                else:
                    downs[un] = (dn,)
                continue
        scope.last = (last_u, last_un)
        check_record(kind, rid, rec, source, in_bundle)
        _add_record(graph, kind, rid, rec, scope, source)
        last_u, last_un = scope.last
    scope.last = (last_u, last_un)


def _add_records(graph: Graph, doc: Mapping[str, Any], scope: _Scope, source: str) -> None:
    for kind in (*ELEMENTS, *UPSTREAM):
        section = doc.get(kind)
        if isinstance(section, dict):
            for rid, value in section.items():
                _add_record(graph, kind, rid, value, scope, source)


def _add_record(graph: Graph, kind: str, rid: str, value: Any, scope: _Scope, source: str) -> None:
    if kind in ELEMENTS:
        node = graph.node(scope.expand(rid), rid)
        node.add_kind(kind)
        for rec in (value,) if isinstance(value, dict) else as_records(value):
            node.add_source(source)
            name = scope.name
            if not node.flat:  # the common case: a node's one record, each attribute once, built in one go
                flat: list[Any] = []
                for attr, v in rec.items():
                    if isinstance(v, list):
                        lits: list[Any] = []
                        for x in v:
                            lit = _literal(x, scope) if isinstance(x, dict) else x
                            if lit not in lits:  # values may be unhashable (a list in a list)
                                lits.append(lit)
                        flat += (name(attr), lits[0] if len(lits) == 1 else tuple(lits))
                    else:
                        flat += (name(attr), _literal(v, scope) if isinstance(v, dict) else v)
                if len(flat) == 2 * len(set(flat[::2])):  # two names for one IRI merge the slow way, below
                    node.flat = tuple(flat)
                    continue
            for attr, v in rec.items():
                items = v if isinstance(v, list) else (v,)
                if not items:
                    node.add_empty(name(attr))
                for item in items:
                    node.add_value(name(attr), _literal(item, scope) if isinstance(item, dict) else item)
        return
    ends = UPSTREAM.get(kind)
    if ends is None:
        return  # extensions (mentionOf, PROV-Dictionary): read, not walked
    down_attr, up_attr = ends
    for rec in (value,) if isinstance(value, dict) else as_records(value):
        downs, ups = rec.get(down_attr), rec.get(up_attr)
        if downs is None or ups is None:  # an endpoint is missing: nothing to walk (validate reports it)
            for end in (downs, ups):  # but the one given exists, if only implied
                if isinstance(end, str):
                    graph.node(scope.expand(end), end)
            continue
        attrs: dict[str, list[Any]] | None = None
        if len(rec) > 2:
            attrs = {scope.name(k): [_literal(x, scope) for x in (v if isinstance(v, list) else [v])]
                     for k, v in rec.items() if k != down_attr and k != up_attr}
        for d in downs if isinstance(downs, list) else (downs,):
            for u in ups if isinstance(ups, list) else (ups,):
                if isinstance(d, str) and isinstance(u, str):
                    dn = graph.node(scope.expand(d), d).id  # the node's own string: one copy of each id
                    if scope.last[0] == u:  # an activity's records usually come together
                        un = scope.last[1]
                    else:
                        un = graph.node(scope.expand(u), u).id
                        scope.last = (u, un)
                    graph.add_edge(kind, dn, un, attrs)


def expand_dirs(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; a directory gives its *.prov.json files, where a directory holding a merged
    ``run.prov.json`` gives that alone (it holds the rank files below it): a run directory stands for its run,
    an output root for each of its runs once."""
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                if "run.prov.json" in filenames:
                    found.append(Path(dirpath) / "run.prov.json")
                    dirnames.clear()
                    continue
                found.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".prov.json"))
            if not found:
                raise ProvInputError(f"{p}: no *.prov.json files in this directory", value=str(p))
            yield from found
        else:
            yield p


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """The cycle collector paused while millions of objects that form no cycle are made (a graph's nodes and
    edges, a summary's rows): otherwise it traverses all of them again and again as they pile up, a third of
    the time of loading a large document. Reference counting still frees everything; the previous state is
    restored after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_graph(paths: Iterable[str | Path], edges: bool = True) -> Graph:
    """One graph from several PROV-JSON files or run directories (the merged view); ``edges=False``: nodes only
    (see ``Graph``)."""
    graph = Graph(edges)
    any_file = False
    with no_cycle_collection():
        for p in expand_dirs(paths):
            add_file(graph, p)
            any_file = True
    if not any_file:
        raise ProvInputError("no input files given")
    return graph
