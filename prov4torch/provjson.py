"""PROV-JSON building blocks, written directly as JSON (no prov object model on the hot path).

Values are encoded the way the ``prov`` package writes them, so its reader gives
back the same Python values: ints and floats as typed strings (``xsd:int`` by
magnitude, ``xsd:double`` with NaN/INF/-INF), datetimes as ``xsd:dateTime`` with a
timezone, qualified names as ``xsd:QName``, strings and booleans as plain JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
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
    "wasInfluencedBy",
    "hadMember",
    "bundle",
)


class QName(str):
    """A string that is written as an ``xsd:QName`` typed value."""

    __slots__ = ()


IRI_SCHEMES = ("http://", "https://", "urn:", "file:")


def expand_qname(name: str, prefixes: Mapping[str, str], default: str | None = None) -> str | None:
    """The full IRI of a qualified name (``p4t:x``), of a full IRI (itself), or of an unprefixed name
    under ``default``; None when its prefix is not in ``prefixes``."""
    if name.startswith(IRI_SCHEMES):
        return name
    prefix, sep, local = name.partition(":")
    if not sep:
        return default + name if default else name
    namespace = prefixes.get(prefix)
    return namespace + local if namespace is not None else None


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


def dumps(doc: Mapping[str, Any], indent: int | None = 1) -> str:
    """JSON text; refuses bare NaN/Infinity (numbers are typed strings here)."""
    return json.dumps(doc, indent=indent, allow_nan=False, ensure_ascii=False)
