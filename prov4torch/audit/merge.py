"""Merge rank files (and whole runs) into one PROV document: a bundle per input, a collection per job.

Streaming: one input is in memory at a time and its bundle is written out at once.
What stays in memory is the set of records shared across inputs — content-addressed
datasets and models, agents, the job activity — whose number does not grow with the
number of ranks. Shared records are written once at the top level (identical copies
deduplicated; a record declared differently by two inputs is a conflict, reported,
and kept inside its own bundle). Blank-node relation ids are renamed per bundle so
they never collide. Same inputs, same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MergeConflictError
from ..provjson import PREFIXES, QName, attributes
from ..safefs import check_output, cleanup_on_signal, umask_mode
from .graph import ELEMENTS, as_records, load_json, prefix_map
from .jsonread import ProvInputError


@dataclass
class Conflict:
    id: str
    first: str
    second: str


@dataclass
class MergeReport:
    out: Path
    inputs: list[str]
    records: int = 0
    shared: int = 0
    deduplicated: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> world size, ranks present

    def missing(self) -> dict[str, list[int]]:
        out = {}
        for rid, info in self.runs.items():
            world = info.get("world_size") or 0
            gone = sorted(set(range(world)) - set(info["ranks"]))
            if gone:
                out[rid] = gone
        return out


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def input_files(inputs: Iterable[str | Path], exclude: Path | None = None) -> list[Path]:
    """Rank files of run directories (rank-K.prov.json, in rank order) and files as given."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted([*item.rglob("rank-*.prov.json"), *item.rglob("launcher.prov.json")], key=_natural)
            if not found:
                found = sorted((p for p in item.rglob("*.prov.json") if p.name != "run.prov.json"), key=_natural)
            if not found:
                raise ProvInputError(f"{item}: no rank-*.prov.json files in this directory", value=str(item))
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            raise ProvInputError(f"{item}: no such file or directory", value=str(item))
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen and (exclude is None or r != exclude.resolve()):
            seen.add(r)
            unique.append(f)
    return unique


def _identity(container: dict[str, Any]) -> tuple[str | None, int | None, int | None, str | None]:
    """(run id, rank, world size, bundle id) of a rank's records, when they hold a rank activity."""
    for aid, value in (container.get("activity") or {}).items():
        for rec in as_records(value):
            run_id, rank = rec.get("p4t:runId"), rec.get("p4t:rank")
            if isinstance(run_id, str) and rank is not None and "/rank/" in aid and aid.startswith("p4t:run/"):
                world = _num(rec.get("p4t:worldSize"))
                return run_id, _num(rank), world, f"{aid}/bundle"
            if isinstance(run_id, str) and aid.endswith("/launcher") and aid.startswith("p4t:run/"):
                return run_id, None, _num(rec.get("p4t:worldSize")), f"{aid}/bundle"
    return None, None, None, None


def _num(v: Any) -> int | None:
    if isinstance(v, dict):
        v = v.get("$")
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _units(doc: dict[str, Any], path: Path, index: int) -> list[tuple[str | None, dict[str, Any], str]]:
    """What becomes one output bundle each: (bundle id or None, records, tag for blank-node ids).

    A rank file is one unit. A merged document gives each of its bundles back as a unit (so merging
    a merged file again keeps every bundle and every relation), plus its own top level.
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name)
    nested = doc.get("bundle") if isinstance(doc.get("bundle"), dict) else {}
    top = {k: v for k, v in doc.items() if k != "bundle"}
    if not nested:
        return [(None, top, f"in{index}")]
    outer = prefix_map(doc)
    units: list[tuple[str | None, dict[str, Any], str]] = []
    for j, (bid, bundle) in enumerate(sorted(nested.items())):
        if isinstance(bundle, dict):
            inner = {**outer, **prefix_map(bundle)}
            units.append((str(bid), {**bundle, "prefix": inner}, f"in{index}b{j}"))
    top["hadMember"] = {k: v for k, v in (top.get("hadMember") or {}).items()
                        if not (isinstance(v, dict) and str(v.get("prov:collection", "")).startswith("p4t:run/")
                                and str(v.get("prov:entity", "")).endswith("/bundle"))}  # rebuilt below
    for eid in [k for k, v in (top.get("entity") or {}).items()
                if any(_is_ours(r) for r in as_records(v)) or k in nested]:
        del top["entity"][eid]  # our collections and bundle entities: rebuilt below
    units.append((f"p4t:input/{index}-{stem}", top, f"in{index}"))
    return units


def _is_ours(rec: dict[str, Any]) -> bool:
    t = rec.get("prov:type")
    types = {x.get("$") if isinstance(x, dict) else x for x in (t if isinstance(t, list) else [t])}
    return (bool(types & {"prov:Collection", "prov:Bundle", "p4t:MergeConflicts"}) and "p4t:conflictingId" not in rec) \
        or "p4t:ranksPresent" in rec


def merge(
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    strict: bool = False,
    progress: Callable[[int, int, Path], None] | None = None,
) -> MergeReport:
    """Merge ``inputs`` (files or run directories) into ``out``; see the module docstring."""
    out = check_output(Path(out))
    files = input_files(inputs, exclude=out)
    if not files:
        raise ProvInputError("nothing to merge: give rank files or run directories")
    report = MergeReport(out, [str(f) for f in files])
    prefixes: dict[str, str] = dict(PREFIXES)
    shared: dict[str, dict[str, tuple[str, Any, str]]] = {k: {} for k in ELEMENTS}  # id -> (canonical, record, file)
    bundle_ids: list[tuple[str | None, str]] = []
    seen_bundles: set[str] = set()
    out.parent.mkdir(parents=True, exist_ok=True)
    with cleanup_on_signal():
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            os.fchmod(fd, umask_mode())
            # a lone surrogate in a string (a JSON escape such as "\\ud800") is written back as that escape
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write('{"bundle": {')
                first = True
                for index, path in enumerate(files):
                    for given, records, tag in _units(load_json(path), path, index):
                        run_id, rank, world, bid = _identity(records)
                        bid = given if given and bid is None else bid or f"p4t:input/{index}-{path.name}"
                        if run_id is not None:
                            info = report.runs.setdefault(run_id, {"world_size": world, "ranks": []})
                            info["world_size"] = max(info["world_size"] or 0, world or 0) or None
                            if rank is not None and rank not in info["ranks"]:
                                info["ranks"].append(rank)
                        bid = _unique(bid, seen_bundles)
                        bundle = _bundle(records, path, run_id, rank, tag, prefixes, shared, report)
                        if not bundle and given and given.startswith("p4t:input/"):
                            continue  # a merged input's top level held only shared records
                        bundle_ids.append((run_id, bid))
                        fh.write(("" if first else ",\n") + json.dumps(bid) + ": "
                                 + json.dumps(bundle, ensure_ascii=False, allow_nan=False))
                        first = False
                    if progress is not None:
                        progress(index + 1, len(files), path)
                fh.write("}")
                top = _top_level(shared, bundle_ids, report)
                for section, content in top.items():
                    if content:
                        fh.write(f",\n{json.dumps(section)}: "
                                 f"{json.dumps(content, ensure_ascii=False, allow_nan=False)}")
                fh.write(f',\n"prefix": {json.dumps(prefixes, ensure_ascii=False)}}}\n')
                fh.flush()
                os.fsync(fh.fileno())
            if strict and report.conflicts:
                c = report.conflicts[0]
                raise MergeConflictError(
                    f"{len(report.conflicts)} conflicting declaration(s); first: {c.id} differs between "
                    f"{c.first} and {c.second} (without --strict they are kept in their own bundles)")
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return report


def _unique(bid: str, seen: set[str]) -> str:
    candidate, n = bid, 1
    while candidate in seen:
        n += 1
        candidate = f"{bid}-{n}"
    seen.add(candidate)
    return candidate


def _bundle(doc: dict[str, Any], path: Path, run_id: str | None, rank: int | None, tag: str,
            prefixes: dict[str, str], shared: dict[str, dict[str, tuple[str, Any, str]]],
            report: MergeReport) -> dict[str, Any]:
    own_prefixes = prefix_map(doc)
    compatible = all(prefixes.get(k, v) == v for k, v in own_prefixes.items() if isinstance(v, str))
    if compatible:
        prefixes.update({k: v for k, v in own_prefixes.items() if isinstance(v, str)})
    scoped = f"p4t:run/{run_id}/rank/{rank}" if run_id is not None else None
    tag = f"rank{rank}" if rank is not None and tag.startswith("in") and tag[2:].isdigit() else tag
    bundle: dict[str, Any] = {}
    if own_prefixes and not compatible:
        bundle["prefix"] = own_prefixes  # its own prefixes mean something else: keep them with it
    for section, value in doc.items():
        if section in ("prefix", "bundle") or not isinstance(value, dict):
            if section not in ("prefix", "bundle") and value is not None:
                raise ProvInputError(f"{path}: section {section!r} is a {type(value).__name__}, not an object of "
                                     "records: fix or regenerate the file", value=str(path))
            continue
        out: dict[str, Any] = {}
        for rid, rec in value.items():
            report.records += len(as_records(rec)) or 1
            if section in ELEMENTS and compatible and not (scoped and (rid == scoped or rid.startswith(scoped + "/"))):
                canonical = json.dumps(rec, sort_keys=True, ensure_ascii=False)
                known = shared[section].get(rid)
                if known is None:
                    shared[section][rid] = (canonical, rec, str(path))
                    continue
                if known[0] == canonical:
                    report.deduplicated += 1
                    continue
                report.conflicts.append(Conflict(rid, known[2], str(path)))
            new_id = f"_:{tag}-{rid[2:]}" if rid.startswith("_:") else rid
            out[new_id] = rec
        if out:
            bundle[section] = out
    return bundle


def _top_level(shared: dict[str, dict[str, tuple[str, Any, str]]], bundle_ids: list[tuple[str | None, str]],
               report: MergeReport) -> dict[str, dict[str, Any]]:
    top: dict[str, dict[str, Any]] = {k: {rid: rec for rid, (_c, rec, _f) in v.items()} for k, v in shared.items()}
    report.shared = sum(len(v) for v in top.values())
    members: dict[str, list[str]] = {}
    for run_id, bid in bundle_ids:
        top["entity"][bid] = attributes({"prov:type": QName("prov:Bundle")})
        if run_id is not None:
            members.setdefault(run_id, []).append(bid)
    top["hadMember"] = {}
    missing = report.missing()
    for run_id, bids in members.items():
        info = report.runs[run_id]
        cid = f"p4t:run/{run_id}"
        top["entity"][cid] = attributes({
            "prov:type": QName("prov:Collection"), "p4t:runId": run_id, "p4t:worldSize": info["world_size"],
            "p4t:ranksPresent": len(info["ranks"]), "p4t:ranksMissing": missing.get(run_id) or None,
        })
        for i, bid in enumerate(bids):  # one membership each: the PROV-JSON schema wants one entity per hadMember
            top["hadMember"][f"_:members-{run_id}-{i}"] = {"prov:collection": cid, "prov:entity": bid}
    if report.conflicts:
        top["entity"]["p4t:merge/conflicts"] = attributes({
            "prov:type": QName("p4t:MergeConflicts"),
            "p4t:conflictingId": sorted({c.id for c in report.conflicts}),
        })
    return top
