"""``DocumentBuilder``: accumulates one rank's PROV-JSON records as plain JSON (no prov object model)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from ..provjson import PREFIXES, SECTIONS, QName, attributes, iso


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

    def to_dict(self) -> dict[str, Any]:
        return {k: self.doc[k] for k in SECTIONS if self.doc.get(k)} | {
            k: v for k, v in self.doc.items() if k not in SECTIONS and v
        }
