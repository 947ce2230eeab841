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
from .graph import ELEMENTS, ProvInputError, as_records, load_json, prefix_map


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
            found = sorted(item.rglob("rank-*.prov.json"), key=_natural)
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


def _identity(doc: dict[str, Any], path: Path, index: int) -> tuple[str | None, int | None, int | None, str]:
    """(run id, rank, world size, bundle id) of one input."""
    for aid, value in (doc.get("activity") or {}).items():
        for rec in as_records(value):
            run_id, rank = rec.get("p4t:runId"), rec.get("p4t:rank")
            if isinstance(run_id, str) and rank is not None and aid.endswith(f"/rank/{_num(rank)}"):
                world = _num(rec.get("p4t:worldSize"))
                return run_id, _num(rank), world, f"{aid}/bundle"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name)
    return None, None, None, f"p4t:input/{index}-{stem}"


def _num(v: Any) -> int | None:
    if isinstance(v, dict):
        v = v.get("$")
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def merge(
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    strict: bool = False,
    progress: Callable[[int, int, Path], None] | None = None,
) -> MergeReport:
    """Merge ``inputs`` (files or run directories) into ``out``; see the module docstring."""
    out = Path(out)
    files = input_files(inputs, exclude=out)
    if not files:
        raise ProvInputError("nothing to merge: give rank files or run directories")
    report = MergeReport(out, [str(f) for f in files])
    prefixes: dict[str, str] = dict(PREFIXES)
    shared: dict[str, dict[str, tuple[str, Any, str]]] = {k: {} for k in ELEMENTS}  # id -> (canonical, record, file)
    bundle_ids: list[tuple[str | None, str]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write('{"bundle": {')
            for index, path in enumerate(files):
                doc = load_json(path)
                run_id, rank, world, bid = _identity(doc, path, index)
                if run_id is not None:
                    info = report.runs.setdefault(run_id, {"world_size": world, "ranks": []})
                    info["world_size"] = max(info["world_size"] or 0, world or 0) or None
                    info["ranks"].append(rank)
                bundle = _bundle(doc, path, run_id, rank, index, prefixes, shared, report)
                bundle_ids.append((run_id, bid))
                fh.write(("" if index == 0 else ",\n") + json.dumps(bid) + ": "
                         + json.dumps(bundle, ensure_ascii=False, allow_nan=False))
                if progress is not None:
                    progress(index + 1, len(files), path)
            fh.write("}")
            top = _top_level(shared, bundle_ids, report)
            for section, content in top.items():
                if content:
                    fh.write(f",\n{json.dumps(section)}: {json.dumps(content, ensure_ascii=False, allow_nan=False)}")
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


def _bundle(doc: dict[str, Any], path: Path, run_id: str | None, rank: int | None, index: int,
            prefixes: dict[str, str], shared: dict[str, dict[str, tuple[str, Any, str]]],
            report: MergeReport) -> dict[str, Any]:
    own_prefixes = prefix_map(doc)
    compatible = all(prefixes.get(k, v) == v for k, v in own_prefixes.items() if isinstance(v, str))
    if compatible:
        prefixes.update({k: v for k, v in own_prefixes.items() if isinstance(v, str)})
    scoped = f"p4t:run/{run_id}/rank/{rank}" if run_id is not None else None
    tag = f"rank{rank}" if rank is not None else f"in{index}"
    bundle: dict[str, Any] = {}
    if own_prefixes and not compatible:
        bundle["prefix"] = own_prefixes  # its own prefixes mean something else: keep them with it
    for section, value in doc.items():
        if section in ("prefix", "bundle") or not isinstance(value, dict):
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
    nested = doc.get("bundle")
    if isinstance(nested, dict):  # an input that is itself a merged document: keep its bundles' records
        for sub in nested.values():
            if isinstance(sub, dict):
                for section, content in sub.items():
                    if section != "prefix" and isinstance(content, dict):
                        bundle.setdefault(section, {}).update(
                            {(f"_:{tag}-{k[2:]}" if k.startswith("_:") else k): v for k, v in content.items()})
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
        top["hadMember"][f"_:members-{run_id}"] = {"prov:collection": cid, "prov:entity": bids}
    if report.conflicts:
        top["entity"]["p4t:merge/conflicts"] = attributes({
            "prov:type": QName("p4t:MergeConflicts"),
            "p4t:conflictingId": sorted({c.id for c in report.conflicts}),
        })
    return top
