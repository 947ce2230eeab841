"""Structural PROV-JSON validation with precise errors: file, JSON path, what is wrong.

Default mode accepts every valid PROV-JSON form of the W3C submission (repeated ids as
arrays, bundles, typed literals) and rejects: unknown top-level keys, wrong shapes,
relations missing a mandatory endpoint, references that are not qualified-name strings,
undeclared prefixes, malformed typed literals and date-times, nested bundles, non-JSON.
``lenient=True`` turns into warnings what tools commonly write anyway: missing relation
endpoints, PROV-Dictionary and mentionOf records, numbers in ``"$"``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..safefs import open_regular
from . import stream
from .graph import ELEMENTS
from .jsonread import ProvInputError, loads
from .load import prefix_map

# relation -> (mandatory formal attributes, optional formal attributes)
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wasGeneratedBy": (("prov:entity",), ("prov:activity", "prov:time")),
    "used": (("prov:activity",), ("prov:entity", "prov:time")),
    "wasInformedBy": (("prov:informed", "prov:informant"), ()),
    "wasStartedBy": (("prov:activity",), ("prov:trigger", "prov:starter", "prov:time")),
    "wasEndedBy": (("prov:activity",), ("prov:trigger", "prov:ender", "prov:time")),
    "wasInvalidatedBy": (("prov:entity",), ("prov:activity", "prov:time")),
    "wasDerivedFrom": (("prov:generatedEntity", "prov:usedEntity"),
                       ("prov:activity", "prov:generation", "prov:usage")),
    "wasAttributedTo": (("prov:entity", "prov:agent"), ()),
    "wasAssociatedWith": (("prov:activity",), ("prov:agent", "prov:plan")),
    "actedOnBehalfOf": (("prov:delegate", "prov:responsible"), ("prov:activity",)),
    "wasInfluencedBy": (("prov:influencee", "prov:influencer"), ()),
    "specializationOf": (("prov:specificEntity", "prov:generalEntity"), ()),
    "alternateOf": (("prov:alternate1", "prov:alternate2"), ()),
    "hadMember": (("prov:collection", "prov:entity"), ()),
}
# W3C Notes outside the 2013 submission: accepted with a warning in lenient mode
EXTENSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mentionOf": (("prov:specificEntity", "prov:generalEntity", "prov:bundle"), ()),
    "derivedByInsertionFrom": (("prov:after", "prov:before"), ("prov:key-entity-set",)),
    "derivedByRemovalFrom": (("prov:after", "prov:before"), ("prov:key-set",)),
    "hadDictionaryMember": (("prov:dictionary", "prov:entity"), ("prov:key",)),
}
TIME_ATTRS = {"prov:startTime", "prov:endTime", "prov:time"}
PREDEFINED = {"prov": "http://www.w3.org/ns/prov#", "xsd": "http://www.w3.org/2001/XMLSchema#"}
DATETIME = re.compile(r"^-?\d{4,}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
                      r"(Z|[+-](0\d|1[0-4]):[0-5]\d)$")
INT = re.compile(r"[+-]?\d+")
FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|INF|NaN)")
INT_TYPES = {"xsd:int", "xsd:long", "xsd:integer", "xsd:short", "xsd:byte", "xsd:nonNegativeInteger",
             "xsd:positiveInteger", "xsd:unsignedInt", "xsd:unsignedLong"}
FLOAT_TYPES = {"xsd:double", "xsd:float", "xsd:decimal"}
INT_RANGES = {"xsd:int": (-(2**31), 2**31 - 1), "xsd:long": (-(2**63), 2**63 - 1), "xsd:short": (-(2**15), 2**15 - 1),
              "xsd:byte": (-128, 127), "xsd:unsignedInt": (0, 2**32 - 1), "xsd:unsignedLong": (0, 2**64 - 1),
              "xsd:nonNegativeInteger": (0, 10**40), "xsd:positiveInteger": (1, 10**40)}
QNAME_TYPES = {"xsd:QName", "prov:QUALIFIED_NAME", "prov:QualifiedName"}


@dataclass(frozen=True)
class Problem:
    file: str
    path: str  # a JSONPath into the document
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


@dataclass
class Result:
    file: str
    problems: list[Problem] = field(default_factory=list)
    unreadable: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def valid(self) -> bool:
        return not self.unreadable and not self.errors


def _jp(*parts: str | int) -> str:
    """A JSONPath: $.entity["ex:e1"][0]["prov:label"]."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if _PLAIN_KEY.fullmatch(p) else f"[{json.dumps(p)}]"
    return out


Path_ = str | tuple[str | int, ...]  # a JSONPath, or its parts (made into text only for a problem)


def _path(path: Path_) -> str:
    return path if isinstance(path, str) else _jp(*path)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FULL_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _Validator:
    def __init__(self, file: str, lenient: bool) -> None:
        self.file = file
        self.lenient = lenient
        self.problems: list[Problem] = []

    def error(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.file, _path(path), message, "error"))

    def soft(self, path: Path_, message: str) -> None:
        """An error in default mode, a warning in lenient mode."""
        self.problems.append(Problem(self.file, _path(path), message + ("" if not self.lenient else
                                                                          " (accepted: --lenient)"),
                                     "warning" if self.lenient else "error"))

    def warn(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.file, _path(path), message, "warning"))

    # -- documents and bundles -------------------------------------------------------------------------
    def document(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            self.error("$", f"a PROV-JSON document is a JSON object, found {_kind(doc)}")
            return
        self.container(doc, (), dict(PREDEFINED), in_bundle=False)

    def container(self, doc: Mapping[str, Any], at: tuple[str, ...], outer: dict[str, str], in_bundle: bool) -> None:
        prefixes = dict(outer)
        if "prefix" in doc:
            prefixes.update(self.prefix_map(doc["prefix"], at))
        for key, value in doc.items():
            path = (*at, key)
            if key == "prefix":
                continue
            if key == "bundle" and not in_bundle and isinstance(value, dict):
                for bid, bundle in value.items():
                    if not isinstance(bundle, dict):
                        self.not_a_bundle((*path, bid), bundle)
                        continue
                    own = prefix_map(bundle)
                    self.qname(bid, path, {**prefixes, **own}, what="bundle id")
                    self.container(bundle, (*path, bid), prefixes, in_bundle=True)
                continue
            if key in EXTENSIONS:
                self.extension(path, key)
            self.member(key, value, path, prefixes, in_bundle)

    def member(self, key: str, value: Any, path: tuple[str, ...], prefixes: dict[str, str], in_bundle: bool) -> None:
        """A member of a document or bundle other than ``prefix`` and an object of bundles: a misplaced or
        malformed ``bundle``, a section (checked whole), or an unknown key."""
        if key == "bundle" and in_bundle:
            self.error(path, "bundles cannot nest: a bundle contains statements only")
        elif key == "bundle":
            self.error(path, f"'bundle' must map bundle ids to bundles, found {_kind(value)}")
        elif key in ELEMENTS or key in RELATIONS or key in EXTENSIONS:
            self.section(key, value, path, prefixes)
        else:
            self.error(path, f"unknown top-level key {key!r}: not a PROV record type "
                       "(entity, activity, agent, a relation, prefix or bundle)")

    def not_a_bundle(self, path: Path_, value: Any) -> None:
        self.error(path, f"a bundle is a JSON object, found {_kind(value)}")

    def extension(self, path: Path_, key: str) -> None:
        self.soft(path, f"'{key}' records are a W3C Note extension (PROV-Links/PROV-Dictionary), not part of "
                  "PROV-JSON")

    def prefix_map(self, value: Any, at: tuple[str, ...]) -> dict[str, str]:
        path = (*at, "prefix")
        if not isinstance(value, dict):
            self.error(path, f"'prefix' must map prefixes to namespace IRIs, found {_kind(value)}")
            return {}
        out = {}
        for p, iri in value.items():
            if not isinstance(iri, str):
                self.error((*path, p), f"namespace of prefix {p!r} must be an IRI string, found {_kind(iri)}")
                continue
            if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", iri):
                self.warn((*path, p), f"namespace {iri!r} of prefix {p!r} is not an absolute IRI")
            out[p] = iri
        return out

    def section(self, kind: str, value: Any, path: tuple[str, ...], prefixes: dict[str, str]) -> None:
        if not isinstance(value, dict):
            self.error(path, f"'{kind}' must map ids to records, found {_kind(value)}")
            return
        for rid, rec in value.items():
            self.entry(kind, rid, rec, path, prefixes)

    def entry(self, kind: str, rid: str, rec: Any, path: tuple[str, ...], prefixes: dict[str, str]) -> None:
        """One id of a section and its record(s)."""
        if type(rec) is dict:  # the common case, checked with the fewest calls
            if not rid.startswith("_:"):
                self.qname(rid, path, prefixes, what="id")
            self.record(kind, rec, (*path, rid), prefixes)
            return
        rpath = (*path, rid)
        if not rid.startswith("_:"):
            self.qname(rid, path, prefixes, what="id")
        records = rec if isinstance(rec, list) else [rec]
        if isinstance(rec, list) and not rec:
            self.error(rpath, "an empty list of records")
        elif isinstance(rec, list):
            self.soft(rpath, "a repeated id written as an array of records: the PROV-JSON schema wants "
                      "one object per id (merge the records into one)")
        for i, r in enumerate(records):
            p: tuple[str | int, ...] = (*rpath, i) if isinstance(rec, list) else rpath
            if not isinstance(r, dict):
                self.error(p, f"a record is a JSON object (or a list of objects for a repeated id), "
                           f"found {_kind(r)}")
                continue
            self.record(kind, r, p, prefixes)

    # -- records ---------------------------------------------------------------------------------------
    def record(self, kind: str, rec: Mapping[str, Any], path: tuple[str | int, ...],
               prefixes: dict[str, str]) -> None:
        formal = RELATIONS.get(kind) or EXTENSIONS.get(kind)
        if formal is not None:
            mandatory, optional = formal
            for attr in mandatory:
                if attr not in rec:
                    self.soft(path, f"{kind} lacks its mandatory {attr}")
            for attr in (*mandatory, *optional):
                if attr in rec and attr != "prov:time" and not attr.startswith("prov:key"):
                    self.reference(rec[attr], (*path, attr), prefixes, many=(kind == "hadMember"))
        for attr, value in rec.items():
            if formal is not None and (attr in formal[0] or attr in formal[1]) and attr not in TIME_ATTRS:
                continue
            prefix, sep, _ = attr.partition(":")
            if not sep or prefix not in prefixes:
                self.qname(attr, path, prefixes, what="attribute name")
            if attr in TIME_ATTRS:
                self.datetime(value, (*path, attr), attr)
                continue
            if attr.startswith("prov:key"):
                continue  # PROV-Dictionary key sets: their own shape, reported with the record kind
            if type(value) is str or (type(value) in (int, float, bool)):
                continue  # a plain value: nothing to check
            for item in value if isinstance(value, list) else [value]:
                self.value(item, (*path, attr), prefixes)

    def datetime(self, value: Any, path: Path_, attr: str) -> None:
        if isinstance(value, str) and DATETIME.match(value):
            try:
                _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))  # the day exists (no 31 February)
                return
            except ValueError:
                pass
        if isinstance(value, str) and self.lenient:
            try:  # ISO-ish, e.g. "2025-08-09 11:54:39.72" (a space, no timezone): what some tools write
                _dt.datetime.fromisoformat(value)
                self.warn(path, f"{attr} {value!r} is not an xsd:dateTime (space or no timezone); read as local time")
                return
            except ValueError:
                pass
        self.error(path, f"{attr} must be an xsd:dateTime with a timezone (e.g. 2026-01-31T12:00:00Z), "
                   f"got {value!r}")

    def reference(self, value: Any, path: Path_, prefixes: dict[str, str], many: bool) -> None:
        if many and isinstance(value, list):
            self.soft(path, "several members in one hadMember: the PROV-JSON schema wants one entity per "
                      "hadMember record")
        items = value if (many and isinstance(value, list)) else [value]
        for v in items:
            if not isinstance(v, str):
                self.error(path, f"a reference must be a qualified-name string, found {_kind(v)} {v!r:.40}")
            elif not v.startswith("_:"):
                self.qname(v, path, prefixes, what="reference")

    def value(self, v: Any, path: Path_, prefixes: dict[str, str]) -> None:
        if isinstance(v, (str, bool, int, float)) or v is None:
            if v is None:
                self.error(path, "null is not a PROV value")
            return
        if not isinstance(v, dict):
            self.error(path, f"a value is a string, number, boolean or typed literal, found {_kind(v)}")
            return
        if "$" not in v:
            self.error(path, "typed literal lacks its '$' value")
            return
        extra = set(v) - {"$", "type", "lang"}
        if extra:
            self.error(path, f"typed literal has unknown key(s) {sorted(extra)}")
        raw, kind = v["$"], v.get("type")
        if kind is None and "lang" not in v:
            self.soft(path, "typed literal without 'type' (or 'lang'): write a plain string, or name its type")
        if kind is not None and not isinstance(kind, str):
            self.error(path, f"typed literal 'type' must be a qualified name, found {_kind(kind)}")
            return
        if kind is not None:
            self.qname(kind, path, prefixes, what="datatype")
        if not isinstance(raw, str):
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                self.soft(path, f"typed literal '$' should be a string, found the number {raw!r}")
            else:
                self.error(path, f"typed literal '$' must be a string, found {_kind(raw)}")
            return
        if kind == "xsd:dateTime":
            self.datetime(raw, path, "value")
        elif (kind in INT_TYPES and not INT.fullmatch(raw.strip())) or (
            kind in FLOAT_TYPES and not FLOAT.fullmatch(raw.strip())
        ):
            self.error(path, f"{raw!r} is not an {kind}")
        elif kind in INT_RANGES and len(raw.strip()) < 40:
            lo, hi = INT_RANGES[kind]
            if not lo <= int(raw) <= hi:
                self.soft(path, f"{raw} is out of the range of {kind} ({lo} .. {hi})")
        elif kind == "xsd:boolean" and raw.strip() not in ("true", "false", "1", "0"):
            self.error(path, f"{raw!r} is not an xsd:boolean")
        elif kind in QNAME_TYPES:
            self.qname(raw, path, prefixes, what="qualified-name value")

    def qname(self, name: Any, path: Path_, prefixes: dict[str, str], what: str) -> None:
        if not isinstance(name, str) or not name:
            self.error(path, f"{what} must be a non-empty string")
            return
        prefix, sep, _local = name.partition(":")
        if sep and prefix in prefixes:
            return  # the common case: a declared prefix
        if _FULL_IRI.match(name) or name.startswith("urn:"):
            return  # a full IRI
        if not sep:
            if "default" not in prefixes:
                self.error(path, f"{what} {name!r} has no prefix and no default namespace is declared")
            return
        if prefix not in prefixes:
            self.error(path, f"{what} {name!r} uses the undeclared prefix {prefix!r}; declare it in 'prefix'")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def validate_text(text: str, file: str = "<document>", lenient: bool = False) -> Result:
    result = Result(file)
    try:
        parsed = loads(text, file)
    except ProvInputError as exc:
        result.problems.append(Problem(file, "$", str(exc).removeprefix(f"{file}: ")))
        return result
    v = _Validator(file, lenient)
    for key in dict.fromkeys(parsed.duplicates):
        v.soft("$", f"key {key!r} appears twice in one object (JSON readers keep only the last)")
    v.document(parsed.value)
    result.problems = v.problems
    return result


def validate_file(path: str | Path, lenient: bool = False) -> Result:
    """One file, read a record at a time (``stream``): memory does not grow with the file."""
    p = Path(path)
    try:
        with open_regular(p) as fh:
            fh.read(1)
    except OSError as exc:
        result = Result(str(p), unreadable=True)
        result.problems.append(Problem(str(p), "$", f"cannot read: {exc.strerror or exc}"))
        return result
    result = Result(str(p))
    v = _Validator(str(p), lenient)
    try:
        _StreamedDocument(v).read(p)
    except ProvInputError as exc:  # not JSON: that one problem, as a whole-document parse would give
        result.problems = [Problem(str(p), "$", str(exc).removeprefix(f"{p}: "))]
        return result
    result.problems = v.problems
    return result


class _StreamedDocument:
    """``_Validator.document`` driven by the items of ``stream``: the same checks, record by record."""

    def __init__(self, v: _Validator) -> None:
        self.v = v
        self.scopes: dict[str | None, dict[str, str]] = {}
        self.duplicates: set[str] = set()
        self.extension_noted: set[tuple[str | None, str]] = set()

    def at(self, bundle: str | None, *parts: str) -> tuple[str, ...]:
        return ("bundle", bundle, *parts) if bundle is not None else parts

    def read(self, path: Path) -> None:
        v = self.v
        for item in stream.items(path):
            if isinstance(item, stream.Records):
                self.records(item)
            elif isinstance(item, stream.Prefix):
                if item.bundle is None:
                    own = {} if item.value is None else v.prefix_map(item.value, ())
                    self.scopes[None] = {**PREDEFINED, **own}
                else:
                    outer = self.scopes[None]
                    own = {} if item.value is None else v.prefix_map(item.value, ("bundle", item.bundle))
                    v.qname(item.bundle, _jp("bundle"), {**outer, **own}, what="bundle id")
                    self.scopes[item.bundle] = {**outer, **own}
            elif isinstance(item, stream.Value):
                self.value(item)
            elif isinstance(item, stream.Duplicate):
                if item.key not in self.duplicates:
                    self.duplicates.add(item.key)
                    v.soft("$", f"key {item.key!r} appears twice in one object (JSON readers keep only the last)")
            elif isinstance(item, stream.NotObject):
                v.error("$", f"a PROV-JSON document is a JSON object, found {_kind(item.value)}")

    def note_extension(self, bundle: str | None, key: str) -> None:
        if key in EXTENSIONS and (bundle, key) not in self.extension_noted:
            self.extension_noted.add((bundle, key))
            self.v.extension(self.at(bundle, key), key)

    def records(self, item: stream.Records) -> None:
        if item.section in EXTENSIONS:
            self.note_extension(item.bundle, item.section)
        entry, at, scope = self.v.entry, self.at(item.bundle, item.section), self.scopes[item.bundle]
        for rid, value in item.records:
            entry(item.section, rid, value, at, scope)

    def value(self, item: stream.Value) -> None:
        if item.key == "":
            self.v.not_a_bundle(("bundle", str(item.bundle)), item.value)
            return
        self.note_extension(item.bundle, item.key)
        self.v.member(item.key, item.value, self.at(item.bundle, item.key),
                      self.scopes.get(item.bundle, dict(PREDEFINED)), item.bundle is not None)


def validate(paths: Iterable[str | Path], lenient: bool = False) -> list[Result]:
    """One result per file; a directory stands for its *.json files."""
    out = []
    for item in map(Path, paths):
        if item.is_dir():
            files = sorted(item.rglob("*.json"))
            if not files:
                r = Result(str(item), unreadable=True)
                r.problems.append(Problem(str(item), "$", "a directory without *.json files"))
                out.append(r)
            out.extend(validate_file(f, lenient) for f in files)
        else:
            out.append(validate_file(item, lenient))
    return out
