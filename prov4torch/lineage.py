"""Datasets and their governance tags (DESIGN §5), and how tags flow into models.

Keyword arguments are snake_case (``origin_country=``); the PROV attributes they
become are camelCase in the ``p4t`` namespace (``p4t:originCountry``). Every tag
is validated when it is given: an unknown tag or value is an error naming it.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import provjson
from .digest import digest_path, fingerprint
from .document import content_id
from .errors import InvalidValueError

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
_ROLE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")

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
}
# the tags a model inherits from its whole upstream lineage (a union)
INHERITED = (
    "p4t:datasetId", "p4t:originCountry", "p4t:jurisdiction", "p4t:regulation", "p4t:personalData",
    "p4t:consentScope", "p4t:prohibitedPurpose", "p4t:license", "p4t:transferBasis",
)


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


def dataset_record(
    data: Any, *, name: str | None, role: str, source: str | None, tags: Mapping[str, Any]
) -> dict[str, Any]:
    """The journal event of one dataset attachment (id from its content)."""
    if not isinstance(role, str) or not _ROLE.match(role):
        raise InvalidValueError(
            f"role must be a lower-case word such as training/validation/testing, got {role!r}", value=role)
    attrs = governance_attributes(tags)
    torch_dataset = getattr(data, "dataset", None) if type(data).__name__ == "DataLoader" else None
    if torch_dataset is not None:
        data = torch_dataset
    event: dict[str, Any] = {"t": "dataset", "roles": [role]}
    if isinstance(data, (str, os.PathLike)):
        p = Path(data).resolve()
        sha, size, method = digest_path(p)
        event.update(sha256=sha, size=size, digest_method=method, source=source or p.as_uri(), name=name or p.name)
    else:
        paths = dataset_paths(data)
        sha, length, method = fingerprint(data)
        event.update(sha256=sha, length=length, digest_method=method,
                     cls=f"{type(data).__module__}.{type(data).__qualname__}",
                     name=name or type(data).__name__, source=source or (paths[0] if len(paths) == 1 else None))
    event["id"] = content_id("dataset", event["sha256"])
    event["tags"] = provjson.attributes(attrs)
    event["governance"] = {k: (v.astimezone(_dt.UTC).isoformat() if isinstance(v, _dt.datetime) else v)
                           for k, v in attrs.items()}
    return event


def dataset_paths(data: Any) -> list[str]:
    """File paths a dataset object exposes (root, path, file attributes), if any."""
    found = []
    for attr in ("root", "path", "file", "filename", "data_dir"):
        v = getattr(data, attr, None)
        if isinstance(v, (str, os.PathLike)) and os.path.exists(v):
            found.append(Path(v).resolve().as_uri())
    return found


def inherit(sources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The governance summary of a model: the union of its sources' tags, earliest expiry.

    Expiry values are ISO strings in UTC (as ``dataset_record`` stores them), so they sort.
    """
    union: dict[str, set[Any]] = {}
    expiry: str | None = None
    for gov in sources:
        for attr, v in gov.items():
            if attr == "p4t:consentExpires":
                expiry = v if expiry is None or str(v) < expiry else expiry
            elif attr in INHERITED:
                union.setdefault(attr, set()).update(v if isinstance(v, list) else [v])
    out: dict[str, Any] = {k: sorted(v, key=str) for k, v in union.items()}
    if expiry is not None:
        out["p4t:consentExpires"] = expiry
    return out


# -- lineage cards: what a checkpoint came from, findable by its sha256 in a later run ----------

CARD_DIR = ".lineage"


def card_path(root: Path, sha256: str) -> Path:
    return root / CARD_DIR / f"sha256-{sha256}.json"


def write_card(root: Path, card: Mapping[str, Any]) -> None:
    """Store a checkpoint's lineage card under the output root (never next to the user's file)."""
    import json

    path = card_path(root, str(card["sha256"]))
    provjson.write_atomic(path, json.dumps(card, sort_keys=True, indent=1))


def read_card(root: Path, sha256: str) -> dict[str, Any] | None:
    import json

    path = card_path(root, sha256)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


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
                             "governance": d.get("governance", {})}
        elif src in loads:
            base = loads[src]
            upstream.update(base.get("upstream", {}))
            derivations.extend(base.get("derivations", []))
    return {"model": event["id"], "sha256": event["sha256"], "name": event.get("name"), "activity": activity,
            "governance": event.get("governance", {}), "upstream": upstream,
            "derivations": sorted({tuple(d) for d in derivations})}


# -- DataLoader tracking -------------------------------------------------------------------------

def _batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (or length of a list)."""
    if hasattr(batch, "shape") and getattr(batch, "shape", None):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        for v in batch.values():
            return _batch_size(v)
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if hasattr(first, "shape") and getattr(first, "shape", None):
            return int(first.shape[0])
        return len(batch) if not isinstance(first, (list, tuple)) else _batch_size(first)
    return 1


class TrackedLoader:
    """A DataLoader whose data is recorded (and policy-checked) before its first batch.

    Iterating it attaches its dataset to the active run (``log_dataset``: digest, tags,
    policy check), refuses to yield a batch of blocked data, and records the samples,
    batches and epochs consumed. Every other attribute is the wrapped loader's.
    """

    def __init__(self, loader: Any, name: str | None = None, role: str = "training", **tags: Any) -> None:
        governance_attributes(tags)  # validate now, not at the first batch
        self.loader = loader
        self.name = name
        self.role = role
        self.tags = tags
        self.dataset_id: str | None = None
        self.samples = 0
        self.batches = 0
        self.epochs = 0

    def __getattr__(self, item: str) -> Any:
        return getattr(self.loader, item)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        from .run import ACTIVE

        run = ACTIVE.run
        if run is None or run.ended or run.disabled:
            yield from self.loader
            return
        if self.dataset_id is None:
            self.dataset_id = run.log_dataset(self.loader, name=self.name, role=self.role, **self.tags)
        run.gate(self.dataset_id)  # raises before the first batch when the data is blocked
        finished = False
        try:
            for batch in self.loader:
                self.samples += _batch_size(batch)
                self.batches += 1
                yield batch
            finished = True
        finally:
            self.epochs += int(finished)
            if not run.ended:
                run.attach_loader_usage(self.dataset_id, self.role, {
                    "samples": self.samples, "batches": self.batches, "epochs": self.epochs})


def track(loader: Any, name: str | None = None, role: str = "training", **tags: Any) -> TrackedLoader:
    """Wrap a DataLoader so its dataset is recorded and policy-checked before its first batch."""
    return TrackedLoader(loader, name=name, role=role, **tags)
