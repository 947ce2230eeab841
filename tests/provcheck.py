"""Independent checks of a PROV-JSON document, written for the tests (none of prov4torch's code is used).

* the W3C PROV-JSON schema (the draft-04 schema of the 2013 Member Submission, as shipped inside the
  ``prov`` package: ``prov/tests/schemas/prov-json.schema.json``), validated with ``jsonschema``;
* PROV-CONSTRAINTS checks that matter for a recorder: unique generation (an entity has at most one
  ``wasGeneratedBy``), no derivation cycle, usage and generation times inside their activity's
  start/end, every relation endpoint declared, every ``prov:role`` an ``xsd:QName``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

RELATION_ENDS = {
    "used": ("prov:activity", "prov:entity"),
    "wasGeneratedBy": ("prov:entity", "prov:activity"),
    "wasInformedBy": ("prov:informed", "prov:informant"),
    "wasDerivedFrom": ("prov:generatedEntity", "prov:usedEntity"),
    "wasAttributedTo": ("prov:entity", "prov:agent"),
    "wasAssociatedWith": ("prov:activity", "prov:agent"),
    "actedOnBehalfOf": ("prov:delegate", "prov:responsible"),
    "wasInfluencedBy": ("prov:influencee", "prov:influencer"),
    "hadMember": ("prov:collection", "prov:entity"),
    "specializationOf": ("prov:specificEntity", "prov:generalEntity"),
}


@cache
def schema_validator() -> jsonschema.Draft4Validator:
    text = (resources.files("prov") / "tests" / "schemas" / "prov-json.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def schema_errors(doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
            for e in schema_validator().iter_errors(doc)]


def _containers(doc: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield doc
    yield from (doc.get("bundle") or {}).values()


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        t = dt.datetime.fromisoformat(value)
        assert t.tzinfo is not None, f"date-time without a timezone: {value}"
        return t
    return None


def constraint_errors(doc: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    declared: set[str] = set()
    activities: dict[str, tuple[dt.datetime | None, dt.datetime | None]] = {}
    relations: list[tuple[str, str, Mapping[str, Any]]] = []
    for c in _containers(doc):
        for kind in ("entity", "activity", "agent"):
            for rid, rec in (c.get(kind) or {}).items():
                declared.add(rid)
                if kind == "activity" and isinstance(rec, dict):
                    activities[rid] = (_time(rec.get("prov:startTime")), _time(rec.get("prov:endTime")))
        for bid in (c.get("bundle") or {}):
            declared.add(bid)
        for kind in RELATION_ENDS:
            for rid, rec in (c.get(kind) or {}).items():
                relations.append((kind, rid, rec))
    generations: dict[str, int] = {}
    derived: dict[str, set[str]] = {}
    for kind, rid, rec in relations:
        for end in RELATION_ENDS[kind]:
            for ref in rec.get(end) if isinstance(rec.get(end), list) else [rec.get(end)]:
                if ref is not None and ref not in declared:
                    errors.append(f"{kind} {rid}: {end} {ref} is not declared")
        role = rec.get("prov:role")
        for r in role if isinstance(role, list) else [role] if role is not None else []:
            if not (isinstance(r, dict) and r.get("type") == "xsd:QName"):
                errors.append(f"{kind} {rid}: prov:role {r!r} is not an xsd:QName")
        if kind == "wasGeneratedBy":
            generations[rec["prov:entity"]] = generations.get(rec["prov:entity"], 0) + 1
        if kind == "wasDerivedFrom":
            derived.setdefault(rec["prov:generatedEntity"], set()).add(rec["prov:usedEntity"])
        if kind in ("used", "wasGeneratedBy") and rec.get("prov:time") and rec.get("prov:activity") in activities:
            t = _time(rec["prov:time"])
            start, end = activities[rec["prov:activity"]]
            if t is not None and ((start and t < start) or (end and t > end)):
                errors.append(f"{kind} {rid}: time {rec['prov:time']} is outside its activity "
                              f"[{start}, {end}]")
    errors += [f"{e} has {n} generations" for e, n in generations.items() if n > 1]
    errors += [f"derivation cycle through {e}" for e in derived if _reaches(derived, e, e)]
    return errors


def _reaches(edges: Mapping[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = {start}, [start]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def problems(doc: Any) -> list[str]:
    """Everything the schema or the constraints find wrong with ``doc`` (empty: it passes)."""
    return schema_errors(doc) + (constraint_errors(doc) if isinstance(doc, dict) else [])
