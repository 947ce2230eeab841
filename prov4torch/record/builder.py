"""``DocumentBuilder``: accumulates one rank's PROV-JSON records as plain JSON (no prov object model).

It enforces the identity rules of DESIGN §4 where records are made, so no caller can break them:

* every id is declared once: declaring it again merges the attributes (a value that differs
  is kept beside the first: PROV attributes may have several values), never a JSON array of
  records;
* an entity has at most one generation: a second ``generated`` for it returns the first;
* no derivation cycle: ``derived`` refuses an edge that would close one (and an entity derived
  from itself), and counts what it refused in ``refused``;
* roles are ``xsd:QName`` values, never plain strings.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from ..provjson import PREFIXES, SECTIONS, QName, attributes, iso


def _merge_values(old: Any, new: Any) -> Any:
    """Two encoded values of one attribute as one (several values become a JSON array)."""
    olds = old if isinstance(old, list) else [old]
    news = new if isinstance(new, list) else [new]
    out = list(olds)
    out.extend(v for v in news if v not in out)
    return out[0] if len(out) == 1 else out


class DocumentBuilder:
    """Accumulates PROV-JSON records; relation ids are blank nodes numbered in order."""

    def __init__(self, prefixes: Mapping[str, str] | None = None) -> None:
        self.doc: dict[str, dict[str, Any]] = {"prefix": dict(prefixes or PREFIXES)}
        self._counter = 0
        self._generation: dict[str, str] = {}  # entity -> its wasGeneratedBy relation id
        self._derived_from: dict[str, set[str]] = {}  # generated entity -> entities it derives from
        self.refused: list[tuple[str, str]] = []  # derivations refused (they would close a cycle)

    def _section(self, name: str) -> dict[str, Any]:
        return self.doc.setdefault(name, {})

    def _add(self, section: str, rid: str, record: dict[str, Any]) -> None:
        sect = self._section(section)
        existing = sect.get(rid)
        if existing is None:
            sect[rid] = record
            return
        for key, value in record.items():  # declared again: one record, attributes merged
            existing[key] = _merge_values(existing[key], value) if key in existing else value

    def has(self, section: str, rid: str) -> bool:
        return rid in self.doc.get(section, {})

    def update(self, section: str, rid: str, encoded: Mapping[str, Any]) -> None:
        """Add already-encoded attributes to a declared element."""
        self._add(section, rid, dict(encoded))

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

    def used(self, activity: str, entity: str, role: str | None = None, time: float | None = None,
             **attrs: Any) -> str:
        formal = {"prov:activity": activity, "prov:entity": entity, "prov:time": iso(time) if time else None}
        return self.relation("used", formal, {"prov:role": QName(role) if role else None, **attrs})

    def generated(self, entity: str, activity: str, time: float | None = None, **attrs: Any) -> str:
        """The entity's one generation (a second call returns the first: unique generation)."""
        if entity in self._generation:
            return self._generation[entity]
        formal = {"prov:entity": entity, "prov:activity": activity, "prov:time": iso(time) if time else None}
        rid = self._generation[entity] = self.relation("wasGeneratedBy", formal, attrs)
        return rid

    def generation_of(self, entity: str) -> dict[str, Any] | None:
        rid = self._generation.get(entity)
        return self.doc["wasGeneratedBy"][rid] if rid is not None else None

    def usage_of(self, activity: str, entity: str) -> dict[str, Any] | None:
        """The first ``used`` record of ``entity`` by ``activity``, if any."""
        for rec in self.doc.get("used", {}).values():
            if rec.get("prov:activity") == activity and rec.get("prov:entity") == entity:
                return rec  # type: ignore[no-any-return]
        return None

    def associated(self, activity: str, agent: str, role: str | None = None, plan: str | None = None) -> str:
        formal = {"prov:activity": activity, "prov:agent": agent, "prov:plan": plan}
        return self.relation("wasAssociatedWith", formal, {"prov:role": QName(role) if role else None})

    def attributed(self, entity: str, agent: str) -> str:
        return self.relation("wasAttributedTo", {"prov:entity": entity, "prov:agent": agent})

    def delegated(self, delegate: str, responsible: str) -> str:
        return self.relation("actedOnBehalfOf", {"prov:delegate": delegate, "prov:responsible": responsible})

    def influenced(self, influencee: str, influencer: str, **attrs: Any) -> str:
        return self.relation("wasInfluencedBy", {"prov:influencee": influencee, "prov:influencer": influencer},
                             attrs)

    def _reaches(self, start: str, goal: str) -> bool:
        seen, stack = {start}, [start]
        while stack:
            for nxt in self._derived_from.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def derived(self, generated: str, used: str, kind: str | None = None, activity: str | None = None) -> str | None:
        """``wasDerivedFrom``, unless it would derive an entity from itself or close a cycle (None then)."""
        if generated == used or self._reaches(used, generated):
            self.refused.append((generated, used))
            return None
        if used in self._derived_from.get(generated, ()) and kind is None:
            return None  # already recorded
        self._derived_from.setdefault(generated, set()).add(used)
        formal = {"prov:generatedEntity": generated, "prov:usedEntity": used, "prov:activity": activity}
        return self.relation("wasDerivedFrom", formal, {"prov:type": QName(kind) if kind else None})

    def informed(self, informed: str, informant: str) -> str:
        return self.relation("wasInformedBy", {"prov:informed": informed, "prov:informant": informant})

    def to_dict(self) -> dict[str, Any]:
        return {k: self.doc[k] for k in SECTIONS if self.doc.get(k)} | {
            k: v for k, v in self.doc.items() if k not in SECTIONS and v
        }
