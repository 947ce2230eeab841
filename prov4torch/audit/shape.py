"""What a PROV-JSON document must look like to be read at all: sections that are PROV record types holding
objects, records that are objects, typed literals with their '$', relation endpoints that are identifier strings.
A reader that skipped what it did not understand could give an ALLOW for a document it never saw, so each of
these is one ``ProvInputError`` naming the file, the section and the record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .jsonread import ProvInputError

ELEMENTS = ("entity", "activity", "agent")
# relation -> (formal attribute of the "downstream" end, formal attribute of the "upstream" end)
UPSTREAM: dict[str, tuple[str, str]] = {
    "used": ("prov:activity", "prov:entity"),
    "wasGeneratedBy": ("prov:entity", "prov:activity"),
    "wasDerivedFrom": ("prov:generatedEntity", "prov:usedEntity"),
    "wasInformedBy": ("prov:informed", "prov:informant"),
    "wasInvalidatedBy": ("prov:entity", "prov:activity"),
    "wasStartedBy": ("prov:activity", "prov:trigger"),
    "wasEndedBy": ("prov:activity", "prov:trigger"),
    "wasAttributedTo": ("prov:entity", "prov:agent"),
    "wasAssociatedWith": ("prov:activity", "prov:agent"),
    "actedOnBehalfOf": ("prov:delegate", "prov:responsible"),
    "wasInfluencedBy": ("prov:influencee", "prov:influencer"),
    "specializationOf": ("prov:specificEntity", "prov:generalEntity"),
    "alternateOf": ("prov:alternate1", "prov:alternate2"),
    "hadMember": ("prov:collection", "prov:entity"),
}
# W3C Notes beside PROV-JSON (PROV-Links, PROV-Dictionary): read, not walked
EXTENSIONS = ("mentionOf", "derivedByInsertionFrom", "derivedByRemovalFrom", "hadDictionaryMember")
KNOWN_SECTIONS = {"prefix", "bundle", *ELEMENTS, *UPSTREAM, *EXTENSIONS}


def check_shape(doc: Mapping[str, Any], source: str, in_bundle: bool = False) -> None:
    """Refuse (``ProvInputError``) a document whose structure cannot be read as PROV: a reader that skipped
    what it did not understand could give an ALLOW for a document it never saw."""
    for key, value in doc.items():
        where = f"{source}: {'bundle ' if in_bundle else ''}section {key!r}"
        check_member(key, value, where, source, in_bundle)
        if key == "bundle":
            for bundle in value.values():
                if not isinstance(bundle, dict):
                    raise ProvInputError(f"{where}: a bundle must be an object of records", value=source)
                check_shape(bundle, source, in_bundle=True)
        elif key != "prefix":
            for rid, rec in value.items():
                check_record(key, rid, rec, source, in_bundle)


def check_member(key: str, value: Any, where: str, source: str, in_bundle: bool) -> None:
    """One member of a document or bundle: a known section holding an object (records checked apart)."""
    if key not in KNOWN_SECTIONS:
        raise ProvInputError(f"{where}: not a PROV-JSON record type; fix the document "
                             "(prov4torch validate shows where)", value=source)
    if not isinstance(value, dict):
        raise ProvInputError(f"{where} must map ids to records, found {json_kind(value)}; fix the document "
                             "(prov4torch validate shows where)", value=source)
    if key == "prefix" and not all(isinstance(v, str) for v in value.values()):
        raise ProvInputError(f"{where}: every namespace must be an IRI string", value=source)
    if key == "bundle" and in_bundle:
        raise ProvInputError(f"{where}: bundles cannot nest", value=source)


def _where(source: str, in_bundle: bool, key: str) -> str:
    return f"{source}: {'bundle ' if in_bundle else ''}section {key!r}"


def check_record(key: str, rid: str, rec: Any, source: str, in_bundle: bool = False) -> None:
    """One record of section ``key``: an object (or a non-empty list of objects), literals with '$', endpoints
    that are identifier strings."""
    def where() -> str:
        return _where(source, in_bundle, key)

    if isinstance(rec, dict):
        records: list[Any] | tuple[Any, ...] = (rec,)
    elif isinstance(rec, list) and rec and all(isinstance(r, dict) for r in rec):
        records = rec
    else:
        raise ProvInputError(f"{where()}: record {rid!r} must be an object (or a list of objects), "
                             f"found {json_kind(rec)}", value=source)
    if key in ELEMENTS:
        for r in records:
            for attr, v in r.items():
                for item in v if isinstance(v, list) else (v,):
                    if isinstance(item, dict) and "$" not in item:
                        raise ProvInputError(f"{where()}: record {rid!r}: the value of {attr} is a typed literal "
                                             "without '$': it cannot be read", value=source)
        return
    for end in UPSTREAM.get(key, ()):
        for r in records:
            ref = r.get(end)
            refs = ref if isinstance(ref, list) and key == "hadMember" else (ref,)
            if ref is not None and not all(isinstance(x, str) for x in refs):
                raise ProvInputError(f"{where()}: record {rid!r}: {end} must be an identifier string",
                                     value=source)


def json_kind(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null", dict: "an object"}.get(
        type(v), "a number")
