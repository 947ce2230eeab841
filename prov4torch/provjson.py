"""PROV-JSON building blocks, written directly as JSON (no prov object model on the hot path).

Values are encoded the way the ``prov`` package writes them, so its reader gives
back the same Python values: ints and floats as typed strings (``xsd:int`` by
magnitude, ``xsd:double`` with NaN/INF/-INF), datetimes as ``xsd:dateTime`` with a
timezone, qualified names as ``xsd:QName``, strings and booleans as plain JSON.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

NAMESPACE = "https://w3id.org/prov4torch/ns#"
PARAM_NAMESPACE = "https://w3id.org/prov4torch/param#"
TAG_NAMESPACE = "https://w3id.org/prov4torch/tag#"
MLS_NAMESPACE = "http://www.w3.org/ns/mls#"
PROV_NAMESPACE = "http://www.w3.org/ns/prov#"
XSD_NAMESPACE = "http://www.w3.org/2001/XMLSchema#"

PREFIXES = {
    "p4t": NAMESPACE,
    "mls": MLS_NAMESPACE,
    "param": PARAM_NAMESPACE,
    "tag": TAG_NAMESPACE,
    "xsd": XSD_NAMESPACE,
    "prov": PROV_NAMESPACE,
}

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1

# PROV-JSON top-level sections in the order we write them.
SECTIONS = (
    "prefix",
    "activity",
    "entity",
    "agent",
    "used",
    "wasGeneratedBy",
    "wasInformedBy",
    "wasAssociatedWith",
    "wasAttributedTo",
    "actedOnBehalfOf",
    "wasDerivedFrom",
    "hadMember",
    "bundle",
)


class QName(str):
    """A string that is written as an ``xsd:QName`` typed value."""

    __slots__ = ()


def double_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return float.__repr__(value)


def iso(ts: float | _dt.datetime) -> str:
    """An xsd:dateTime with timezone (UTC for epoch seconds)."""
    if isinstance(ts, _dt.datetime):
        if ts.tzinfo is None:
            ts = ts.astimezone()
        return ts.isoformat()
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()


def value(v: Any) -> Any:
    """One attribute value in PROV-JSON form (lists become several values)."""
    if isinstance(v, QName):
        return {"$": str(v), "type": "xsd:QName"}
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        kind = "xsd:int" if -_INT32 - 1 <= v <= _INT32 else (
            "xsd:long" if -_INT64 - 1 <= v <= _INT64 else "xsd:integer"
        )
        return {"$": str(v), "type": kind}
    if isinstance(v, float):
        return {"$": double_text(v), "type": "xsd:double"}
    if isinstance(v, _dt.datetime):
        return {"$": iso(v), "type": "xsd:dateTime"}
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, set, frozenset)):
        items = sorted(v, key=str) if isinstance(v, (set, frozenset)) else list(v)
        encoded = [value(x) for x in items]
        return encoded[0] if len(encoded) == 1 else encoded  # one value: no array
    return str(v)


def attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Encode a mapping of attributes, dropping None values and empty lists."""
    out: dict[str, Any] = {}
    for key, v in attrs.items():
        if v is None or (isinstance(v, (list, tuple, set, frozenset)) and not v):
            continue
        out[key] = value(v)
    return out


class DocumentBuilder:
    """Accumulates PROV-JSON records; relation ids are blank nodes numbered per kind."""

    def __init__(self, prefixes: Mapping[str, str] | None = None) -> None:
        self.doc: dict[str, dict[str, Any]] = {"prefix": dict(prefixes or PREFIXES)}
        self._counter = 0

    def _section(self, name: str) -> dict[str, Any]:
        return self.doc.setdefault(name, {})

    def _add(self, section: str, rid: str, record: dict[str, Any]) -> None:
        sect = self._section(section)
        if rid in sect:  # repeated id: PROV-JSON writes a list of records
            existing = sect[rid]
            if existing == record or (isinstance(existing, list) and record in existing):
                return
            sect[rid] = [*(existing if isinstance(existing, list) else [existing]), record]
        else:
            sect[rid] = record

    def _relation_id(self) -> str:
        self._counter += 1
        return f"_:r{self._counter}"

    def entity(self, eid: str, attrs: Mapping[str, Any] | None = None) -> str:
        self._add("entity", eid, attributes(attrs or {}))
        return eid

    def agent(self, aid: str, attrs: Mapping[str, Any] | None = None) -> str:
        self._add("agent", aid, attributes(attrs or {}))
        return aid

    def activity(
        self,
        aid: str,
        start: float | _dt.datetime | None,
        end: float | _dt.datetime | None,
        attrs: Mapping[str, Any] | None = None,
    ) -> str:
        record: dict[str, Any] = {}
        if start is not None:
            record["prov:startTime"] = iso(start)
        if end is not None:
            record["prov:endTime"] = iso(end)
        record.update(attributes(attrs or {}))
        self._add("activity", aid, record)
        return aid

    def relation(self, kind: str, formal: Mapping[str, str | None], attrs: Mapping[str, Any] | None = None) -> str:
        record: dict[str, Any] = {k: v for k, v in formal.items() if v is not None}
        record.update(attributes(attrs or {}))
        rid = self._relation_id()
        self._section(kind)[rid] = record
        return rid

    def used(self, activity: str, entity: str, role: str | None = None, time: float | None = None, **attrs: Any) -> str:
        formal = {"prov:activity": activity, "prov:entity": entity, "prov:time": iso(time) if time else None}
        return self.relation("used", formal, {"prov:role": role, **attrs})

    def generated(self, entity: str, activity: str, time: float | None = None, **attrs: Any) -> str:
        formal = {"prov:entity": entity, "prov:activity": activity, "prov:time": iso(time) if time else None}
        return self.relation("wasGeneratedBy", formal, attrs)

    def associated(self, activity: str, agent: str, role: str | None = None, plan: str | None = None) -> str:
        formal = {"prov:activity": activity, "prov:agent": agent, "prov:plan": plan}
        return self.relation("wasAssociatedWith", formal, {"prov:role": role})

    def attributed(self, entity: str, agent: str) -> str:
        return self.relation("wasAttributedTo", {"prov:entity": entity, "prov:agent": agent})

    def delegated(self, delegate: str, responsible: str) -> str:
        return self.relation("actedOnBehalfOf", {"prov:delegate": delegate, "prov:responsible": responsible})

    def derived(self, generated: str, used: str, kind: str | None = None, activity: str | None = None) -> str:
        formal = {"prov:generatedEntity": generated, "prov:usedEntity": used, "prov:activity": activity}
        return self.relation("wasDerivedFrom", formal, {"prov:type": QName(kind) if kind else None})

    def informed(self, informed: str, informant: str) -> str:
        return self.relation("wasInformedBy", {"prov:informed": informed, "prov:informant": informant})

    def member(self, collection: str, entities: Iterable[str]) -> str:
        """``hadMember``: prov writes several members as one JSON array."""
        rid = self._relation_id()
        self._section("hadMember")[rid] = {"prov:collection": collection, "prov:entity": list(entities)}
        return rid

    def to_dict(self) -> dict[str, Any]:
        return {k: self.doc[k] for k in SECTIONS if self.doc.get(k)} | {
            k: v for k, v in self.doc.items() if k not in SECTIONS and v
        }


def dumps(doc: Mapping[str, Any], indent: int | None = 1) -> str:
    """JSON text; refuses bare NaN/Infinity (numbers are typed strings here)."""
    return json.dumps(doc, indent=indent, allow_nan=False, ensure_ascii=False)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
