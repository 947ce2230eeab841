"""The governance vocabulary (DESIGN §5): dataset tags, their validation, what models inherit.

Keyword arguments are snake_case (``origin_country=``); the PROV attributes they
become are camelCase in the ``p4t`` namespace (``p4t:originCountry``). Every tag
is validated when it is given: an unknown tag or value is an error naming it.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import InvalidValueError

# ISO 3166-1 alpha-2, as of pycountry 26.2 (249 codes)
COUNTRIES = frozenset([
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB",
    "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY",
    "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX",
    "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK",
    "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
    "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR",
    "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA",
    "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE",
    "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
    "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG",
    "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF",
    "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY",
    "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW"
])
PURPOSES = (
    "training", "fine-tuning", "validation", "testing", "evaluation", "inference", "serving",
    "research", "commercial", "non-commercial", "benchmarking",
)
_TOKEN = re.compile(r"^[A-Z][A-Z0-9]{1,15}(-[A-Z0-9]{1,15})?$")
_FREE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/()+\-]{0,199}$")
_SPDX_ID = r"(LicenseRef-[A-Za-z0-9.\-]+|[A-Za-z0-9][A-Za-z0-9.\-]*\+?)"
_SPDX = re.compile(rf"^\(?{_SPDX_ID}( (AND|OR|WITH) \(?{_SPDX_ID}\)?)*\)?$")
ROLE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")

# python keyword -> (PROV attribute, several values allowed)
DATASET_TAGS: dict[str, tuple[str, bool]] = {
    "dataset_id": ("p4t:datasetId", False),
    "origin_country": ("p4t:originCountry", True),
    "jurisdiction": ("p4t:jurisdiction", True),
    "regulation": ("p4t:regulation", True),
    "personal_data": ("p4t:personalData", False),
    "consent_scope": ("p4t:consentScope", True),
    "consent_expires": ("p4t:consentExpires", False),
    "prohibited_purpose": ("p4t:prohibitedPurpose", True),
    "license": ("p4t:license", True),
    "transfer_basis": ("p4t:transferBasis", True),
    "source_dataset": ("p4t:sourceDataset", True),
}
# Jurisdictions within others, for the policy's matching (the record keeps what was declared): a member state is
# in the EU, the EU and Iceland, Liechtenstein and Norway in the EEA (EL: the EU's own code for Greece), an
# ISO 3166-2 subdivision (US-CA, DE-BY) in its country; GB and UK name one jurisdiction.
EU_MEMBERS = frozenset(("AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "EL", "ES", "FI", "FR", "GR", "HR", "HU",
                        "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"))
WITHIN = {**{code: ("EU", "EEA") for code in EU_MEMBERS}, "EU": ("EEA",), "IS": ("EEA",), "LI": ("EEA",),
          "NO": ("EEA",), "GB": ("UK",), "UK": ("GB",)}
# ISO 3166-1 alpha-3 codes of the countries the shipped policies name (EU/EEA states, the UK, the US)
ALPHA3 = {"AUT": "AT", "BEL": "BE", "BGR": "BG", "CYP": "CY", "CZE": "CZ", "DEU": "DE", "DNK": "DK", "EST": "EE",
          "ESP": "ES", "FIN": "FI", "FRA": "FR", "GRC": "GR", "HRV": "HR", "HUN": "HU", "IRL": "IE", "ITA": "IT",
          "LTU": "LT", "LUX": "LU", "LVA": "LV", "MLT": "MT", "NLD": "NL", "POL": "PL", "PRT": "PT", "ROU": "RO",
          "SWE": "SE", "SVN": "SI", "SVK": "SK", "ISL": "IS", "LIE": "LI", "NOR": "NO", "GBR": "GB", "USA": "US"}


def jurisdictions(values: Iterable[Any]) -> set[str]:
    """Declared jurisdictions and those they are within (``WITHIN``; a subdivision ``US-CA`` within ``US``; an
    alpha-3 code as its alpha-2 one, for the countries in ``ALPHA3``)."""
    out: set[str] = set()
    for v in values:
        code = str(v).strip().upper()
        for c in (code, code.split("-", 1)[0]):
            out.add(c)
            c = ALPHA3.get(c, c)
            out.add(c)
            out.update(WITHIN.get(c, ()))
    return out


# How a model inherits its lineage's tags (docs/vocabulary.md, "Inheritance"):
# facts about where data came from accumulate (a union); permissions intersect (a model may be used only for
# what every source consented to); restrictions accumulate; personal data if any source is; every licence is
# kept; the earliest consent expiry wins.
UNION = ("p4t:datasetId", "p4t:originCountry", "p4t:jurisdiction", "p4t:regulation", "p4t:prohibitedPurpose",
         "p4t:license", "p4t:transferBasis", "p4t:sourceDataset")
INTERSECTION = ("p4t:consentScope",)
ANY_TRUE = ("p4t:personalData",)
INHERITED = (*UNION, *INTERSECTION, *ANY_TRUE)
NO_CONSENT = "none"  # the consent scope of a model whose sources' consents have no purpose in common


def _values(tag: str, value: Any, several: bool) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        if not several:
            raise InvalidValueError(f"tag {tag!r} takes one value, got {list(value)!r}", value=value)
        items = list(value)
        if not items:
            raise InvalidValueError(f"tag {tag!r} is an empty list: give at least one value or omit it", value=value)
        return items
    return [value]


def _str(tag: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise InvalidValueError(f"tag {tag!r}: expected a non-empty string, got {v!r}", value=v)
    return v.strip()


def parse_datetime(tag: str, v: Any) -> _dt.datetime:
    """An aware datetime from a datetime or an ISO 8601 string with a timezone."""
    if isinstance(v, str):
        try:
            v = _dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidValueError(
                f"tag {tag!r}: {v!r} is not an ISO 8601 date-time (e.g. 2027-01-31T00:00:00+00:00)", value=v
            ) from None
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        raise InvalidValueError(f"tag {tag!r}: give a date-time with a timezone, not a date ({v})", value=v)
    if not isinstance(v, _dt.datetime):
        raise InvalidValueError(f"tag {tag!r}: expected a datetime, got {type(v).__name__}", value=v)
    if v.tzinfo is None or v.utcoffset() is None:
        raise InvalidValueError(f"tag {tag!r}: {v.isoformat()} has no timezone; add one (e.g. +00:00)", value=v)
    return v


def validate_purpose(tag: str, v: Any) -> str:
    s = _str(tag, v).lower()
    if s not in PURPOSES:
        raise InvalidValueError(f"tag {tag!r}: unknown purpose {v!r}; known: {', '.join(PURPOSES)}", value=v)
    return s


def _check(tag: str, v: Any) -> Any:
    if tag == "origin_country":
        s = _str(tag, v).upper()
        if s not in COUNTRIES:
            raise InvalidValueError(
                f"tag 'origin_country': {v!r} is not an ISO 3166-1 alpha-2 code (e.g. DE, US)", value=v)
        return s
    if tag in ("jurisdiction", "regulation"):
        s = _str(tag, v).upper()
        if not _TOKEN.match(s):
            raise InvalidValueError(
                f"tag {tag!r}: {v!r} should be a short code such as EU, US, GDPR, HIPAA", value=v)
        return s
    if tag == "personal_data":
        if not isinstance(v, bool):
            raise InvalidValueError(f"tag 'personal_data' must be True or False, got {v!r}", value=v)
        return v
    if tag in ("consent_scope", "prohibited_purpose"):
        return validate_purpose(tag, v)
    if tag == "consent_expires":
        return parse_datetime(tag, v)
    if tag == "license":
        s = _str(tag, v)
        if not _SPDX.match(s):
            raise InvalidValueError(
                f"tag 'license': {v!r} is not an SPDX licence id or expression (e.g. CC-BY-4.0)", value=v)
        return s
    s = _str(tag, v)
    if not _FREE.match(s):
        raise InvalidValueError(f"tag {tag!r}: {v!r} has characters outside letters, digits and ._:/()+- ", value=v)
    return s


def governance_attributes(tags: Mapping[str, Any]) -> dict[str, Any]:
    """Validated snake_case tags -> ``p4t:camelCase`` PROV attributes (raw Python values)."""
    out: dict[str, Any] = {}
    for tag, value in tags.items():
        if tag not in DATASET_TAGS:
            raise InvalidValueError(
                f"unknown governance tag {tag!r}; known tags: {', '.join(DATASET_TAGS)}", value=tag
            )
        if value is None:
            continue
        attr, several = DATASET_TAGS[tag]
        checked = sorted({_check(tag, v) for v in _values(tag, value, several)}, key=str)
        out[attr] = checked if len(checked) > 1 else checked[0]
    return out



def inherit(sources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The governance summary of a model from its sources' summaries (see the rules above ``UNION``).

    A source without a consent scope does not restrict it (nothing is known); expiry values are ISO
    strings in UTC (as the dataset events store them), so they sort.
    """
    union: dict[str, set[Any]] = {}
    scopes: list[set[Any]] = []
    personal: list[bool] = []
    expiry: str | None = None
    for gov in sources:
        for attr, v in gov.items():
            values = v if isinstance(v, list) else [v]
            if attr == "p4t:consentExpires":
                expiry = v if expiry is None or str(v) < expiry else expiry
            elif attr in UNION:
                union.setdefault(attr, set()).update(values)
            elif attr in INTERSECTION:
                scopes.append(set(values))
            elif attr in ANY_TRUE:
                personal.append(any(x is True or str(x).lower() == "true" for x in values))
    out: dict[str, Any] = {k: sorted(v, key=str) for k, v in union.items()}
    if scopes:  # nothing in common is written as "none", never left out (left out would mean: unrestricted)
        out["p4t:consentScope"] = sorted(set.intersection(*scopes), key=str) or [NO_CONSENT]
    if personal:
        out["p4t:personalData"] = any(personal)
    if expiry is not None:
        out["p4t:consentExpires"] = expiry
    return out


def combined(sets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The governance of one content that several tag sets speak for: one set as it is, several by ``inherit``'s
    restrictive rules, none: nothing."""
    return inherit(sets) if len(sets) > 1 else dict(sets[0]) if sets else {}


def attributes_of(governance: Mapping[str, Any]) -> dict[str, Any]:
    """A governance summary back as attributes (an expiry as a datetime, typed in PROV)."""
    out = dict(governance)
    if isinstance(out.get("p4t:consentExpires"), str):
        out["p4t:consentExpires"] = _dt.datetime.fromisoformat(out["p4t:consentExpires"])
    return out


def tag_conflicts(sets: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Where two tag sources say different things of one attribute (each once)."""
    out = []
    for i, (where_a, a) in enumerate(sets):
        for where_b, b in sets[i + 1:]:
            for attr in sorted(set(a) & set(b)):
                va, vb = _norm(a[attr]), _norm(b[attr])
                if va != vb:
                    out.append(f"{attr}: {va} ({where_a}) vs {vb} ({where_b})")
    return out


def _norm(v: Any) -> Any:
    return sorted(map(str, v)) if isinstance(v, (list, tuple, set)) else str(v)
