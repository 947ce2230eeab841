"""Merge rank files (and whole runs) into one PROV document: a bundle per input, a collection per job.

Streaming: each input is read a record at a time (``stream``); a unit's records wait in a spool file
beside the output until the unit (a rank file, or one bundle of a merged input) ends and is written
out. What stays in memory is the set of records shared across inputs — content-addressed
datasets and models, agents, the job activity — as their canonical JSON text, whose number does not
grow with the number of ranks. Shared records are written once at the top level (identical copies
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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import MergeConflictError
from ..provjson import PREFIXES, QName, attributes
from ..safefs import check_output, cleanup_on_signal, first_json_line, umask_mode
from . import stream
from .graph import ELEMENTS
from .jsonread import ProvInputError
from .load import as_records, no_cycle_collection, prefix_map
from .shape import json_kind
from .spool import PLAIN, Unit, scanstring, string


@dataclass
class Conflict:
    id: str
    first: str
    second: str


@dataclass
class Repeat:
    """A rank (or launcher) read twice with the same records -- a merged run and one of its own rank files, say:
    kept once."""

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
    repeats: list[Repeat] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> world size, ranks present

    def missing(self) -> dict[str, list[int]]:
        out = {}
        for rid, info in self.runs.items():
            world = info.get("world_size") or 0
            gone = sorted(set(range(world)) - set(info["ranks"]))
            if gone:
                out[rid] = gone
        return out


def _natural(p: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p)]


def input_files(inputs: Iterable[str | Path], exclude: Path | None = None) -> list[str]:
    """Rank files of run directories (rank-K.prov.json, in rank order) and files as given, as path strings (4,096
    ``Path`` objects and their resolved twins weigh ~3 MB: a merge's memory must not grow with its ranks)."""
    files: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted([*map(str, item.rglob("rank-*.prov.json")), *map(str, item.rglob("launcher.prov.json"))],
                           key=_natural)
            if not found:
                found = sorted((str(p) for p in item.rglob("*.prov.json") if p.name != "run.prov.json"),
                               key=_natural)
            if not found:
                raise ProvInputError(f"{item}: no rank-*.prov.json files in this directory", value=str(item))
            files.extend(found)
        elif item.exists():
            files.append(str(item))
        else:
            raise ProvInputError(f"{item}: no such file or directory", value=str(item))
    seen: set[str] = set()
    unique = []
    skip = os.path.realpath(exclude) if exclude is not None else None
    for f in files:
        r = os.path.realpath(f)
        if r not in seen and r != skip:
            seen.add(r)
            unique.append(f)
    return unique


_RANK_FILE = re.compile(r"^rank-(\d+)\.prov\.json$")
_RANK_JOURNAL = re.compile(r"^rank-(\d+)\.journal\.jsonl$")


def job_ranks(run_dir: Path) -> tuple[set[int], int | None]:
    """The ranks of one run directory whose PROV file is written, and the job's world size as the ranks
    announced it when they started (the first line of each journal; None before any rank started)."""
    done: set[int] = set()
    world: int | None = None
    with contextlib.suppress(OSError):
        for entry in os.scandir(run_dir):
            finished, started = _RANK_FILE.match(entry.name), _RANK_JOURNAL.match(entry.name)
            if finished and entry.is_file():
                done.add(int(finished.group(1)))
            elif started:
                start = first_json_line(entry.path)
                size = start.get("world_size") if isinstance(start, dict) else None
                if isinstance(size, int) and not isinstance(size, bool) and 0 < size <= 1 << 20:
                    world = max(world or 0, size)
    return done, world


def wait_for_ranks(run_dirs: Iterable[str | Path], timeout: float, world_size: int | None = None,
                   poll: float = 0.5) -> dict[str, list[int]]:
    """Wait until every rank of each run directory's job has written its PROV file (a job on several nodes
    writing to one shared output root: the merge must not start before the last node's ranks finish), at most
    ``timeout`` seconds. The world size is ``world_size`` or what the ranks' journals say. Returns, per
    directory, the ranks still missing (all of them, as ``[-1]``, when no rank ever started)."""
    dirs = [Path(d) for d in run_dirs if Path(d).is_dir()]
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        missing: dict[str, list[int]] = {}
        for d in dirs:
            done, world = job_ranks(d)
            world = world_size or world
            if world is None:
                if not done:
                    missing[str(d)] = [-1]
                continue
            lacking = sorted(set(range(world)) - done)
            if lacking:
                missing[str(d)] = lacking
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def _rebuilt(section: str, rid: str, text: str, bundles: set[str]) -> bool:
    """Whether a record of a merged input's top level is one merging rebuilds: a run's collection, its
    memberships, a bundle's entity (one of ``bundles``, ids as JSON strings), the conflicts list."""
    if section == "entity":
        return rid in bundles or (any(t in text for t in _OURS) and any(map(_is_ours, as_records(json.loads(text)))))
    if section == "hadMember" and "p4t:run/" in text:
        rec = json.loads(text)
        return isinstance(rec, dict) and str(rec.get("prov:collection", "")).startswith("p4t:run/") \
            and str(rec.get("prov:entity", "")).endswith("/bundle")
    return False


_OURS = ("prov:Collection", "prov:Bundle", "p4t:MergeConflicts", "p4t:ranksPresent")


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
    report = MergeReport(out, files)
    out.parent.mkdir(parents=True, exist_ok=True)
    with cleanup_on_signal(), no_cycle_collection():
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            os.fchmod(fd, umask_mode())
            # a lone surrogate in a string (a JSON escape such as "\\ud800") is written back as that escape
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                writer = _Writer(fh, report, out.parent, out.name)
                fh.write('{"bundle": {')
                for index, name in enumerate(files):
                    path = Path(name)
                    writer.add_file(path, index)
                    if progress is not None:
                        progress(index + 1, len(files), path)
                fh.write("}")
                writer.top_level()
                fh.write(f',\n"prefix": {json.dumps(writer.prefixes, ensure_ascii=False)}}}\n')
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


class _Writer:
    """Writes the output's bundles as units end; keeps what the top level needs: the records shared across
    inputs (as canonical text), bundle ids, prefixes."""

    def __init__(self, fh: IO[str], report: MergeReport, spool_dir: Path, name: str) -> None:
        self.fh, self.report, self.spool_dir, self.name = fh, report, spool_dir, name
        self.prefixes: dict[str, str] = dict(PREFIXES)
        # id (as a JSON string) -> (canonical text, file)
        self.shared: dict[str, dict[str, tuple[str, str]]] = {k: {} for k in ELEMENTS}
        self.bundle_ids: list[tuple[str | None, str]] = []
        self.seen_bundles: set[str] = set()
        self.units: list[Unit] = []  # those of the input being read
        # a rank's (or launcher's) bundle id -> (the file it came from, the signature of its own records)
        self.signatures: dict[str, tuple[str, int]] = {}
        self.first = True
        self._input = ""  # the input being read, as report.inputs holds it

    def top_level(self) -> None:
        """The output's top level: the shared records (as read), then what merging adds (``_generated``)."""
        made = _generated(self.bundle_ids, self.report)
        self.report.shared = sum(len(v) for v in self.shared.values())
        fh = self.fh
        for section in (*ELEMENTS, "hadMember"):
            shared = self.shared.get(section, {})
            own = {string(rid): rec for rid, rec in made.get(section, {}).items()}
            sep = f",\n{string(section)}: {{"
            for rid, (text, _file) in shared.items():
                if rid not in own:  # an id merging makes is written as merging makes it
                    fh.write(f"{sep}{rid}: {text}")
                    sep = ", "
            for rid, rec in own.items():
                fh.write(f"{sep}{rid}: {PLAIN(rec)}")
                sep = ", "
            if sep == ", ":
                fh.write("}")

    def unit(self, given: str | None, tag: str, path: Path, index: int, prefixes: dict[str, Any]) -> Unit:
        unit = Unit(given, tag, f"p4t:input/{index}-{path.name}", prefixes, self.spool_dir, self.name)
        self.units.append(unit)
        return unit

    def add_file(self, path: Path, index: int) -> None:
        """One input, read a record at a time (``stream``): memory holds one record, the shared records and
        ids; a unit's records wait in its spool until the unit ends (closed whatever happens)."""
        self._input = self.report.inputs[index]  # the input's own string, kept once per rank (``signatures``)
        try:
            self._add_file(path, index)
        finally:
            for unit in self.units:
                if unit.spool is not None:
                    unit.spool.close()
            self.units.clear()

    def _add_file(self, path: Path, index: int) -> None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name)
        top = self.unit(None, f"in{index}", path, index, {})
        nested: list[str] = []  # the ids of the input's bundles (a merged input)
        current: Unit | None = None
        for item in stream.items(path):
            if isinstance(item, stream.Records):
                unit = top if item.bundle is None else current
                assert unit is not None  # a bundle's records follow its Bundle item
                if item.bundle is None and current is not None:  # the top level again, after a bundle
                    self.finish(current, path)
                    current = None
                unit.add(item.section, item.records, path)
            elif isinstance(item, stream.Prefix):
                own = prefix_map({"prefix": item.value})
                if item.bundle is None:
                    top.prefixes = own
                elif current is not None:
                    current.prefixes = {**top.prefixes, **own}
            elif isinstance(item, stream.Bundle):
                if current is not None:
                    self.finish(current, path)
                current = self.unit(item.id, f"in{index}b{len(nested)}", path, index, dict(top.prefixes))
                nested.append(item.id)
            elif isinstance(item, stream.Value):
                if item.key == "":  # a bundle that is not an object: nothing to merge, but it was there
                    nested.append(str(item.bundle))
                    continue
                unit = top if item.bundle is None else current
                if item.bundle is None and current is not None:
                    self.finish(current, path)
                    current = None
                if item.key == "bundle" or item.value is None or unit is None:
                    continue
                if not isinstance(item.value, dict):
                    raise ProvInputError(f"{path}: section {item.key!r} is a {type(item.value).__name__}, not an "
                                         "object of records: fix or regenerate the file", value=str(path))
                unit.add(item.key, item.value.items(), path)
            elif isinstance(item, stream.Duplicate):
                raise ProvInputError(f"{path}: key {item.key!r} appears twice in one object: the document is "
                                     "ambiguous; fix it (prov4torch validate shows where)", value=str(path))
            else:
                raise ProvInputError(f"{path}: a PROV-JSON document is a JSON object, found "
                                     f"{json_kind(item.value)}", value=str(path))
        if current is not None:
            self.finish(current, path)
        if nested:  # a merged input: its top level is a unit of its own, less what merging rebuilds
            top.given = f"p4t:input/{index}-{stem}"
        self.finish(top, path, drop={string(b) for b in nested} if nested else None)

    def finish(self, unit: Unit, path: Path, drop: set[str] | None = None) -> None:
        """Write one unit as a bundle. ``drop``: a merged input's top level, whose collections, memberships and
        bundle entities (these ids, as JSON strings) are rebuilt at the output's top level. Ids stay JSON strings
        here (escaping is per character, so prefixes compare the same).

        A rank (or launcher) already written -- the same bundle id -- is compared by its own records (those not
        shared, blank-node ids aside, in any order): the same, it is kept once (``report.repeats``); different,
        it is a conflict kept in a bundle of its own."""
        report = self.report
        bid = unit.given if unit.given and unit.bid is None else unit.bid or unit.fallback
        if unit.run_id is not None:
            info = report.runs.setdefault(unit.run_id, {"world_size": unit.world, "ranks": []})
            info["world_size"] = max(info["world_size"] or 0, unit.world or 0) or None
            if unit.rank is not None and unit.rank not in info["ranks"]:
                info["ranks"].append(unit.rank)
        own = unit.prefixes
        compatible = all(self.prefixes.get(k, v) == v for k, v in own.items() if isinstance(v, str))
        if compatible:
            self.prefixes.update({k: v for k, v in own.items() if isinstance(v, str)})
        scoped = string(f"p4t:run/{unit.run_id}/rank/{unit.rank}") if unit.run_id is not None else ""
        within = scoped[:-1] + "/"  # an id under the rank's own (the closing quote dropped)

        def is_shared(section: str, rid: str) -> bool:
            return section in ELEMENTS and compatible and not (scoped and (rid == scoped or rid.startswith(within)))

        repeat = False
        if unit.bid is not None and unit.bid in self.signatures:
            first, signature = self.signatures[unit.bid]
            if self._same(unit, is_shared, signature):
                report.repeats.append(Repeat(unit.bid.removesuffix("/bundle"), first, str(path)))
                repeat = True
            else:
                report.conflicts.append(Conflict(unit.bid, first, str(path)))
        bid = _unique(bid, self.seen_bundles) if not repeat else bid
        tag = unit.tag
        tag = f"rank{unit.rank}" if unit.rank is not None and tag.startswith("in") and tag[2:].isdigit() else tag
        body = _Body(self, bid)
        if own and not compatible and not repeat:
            body.member("prefix", json.dumps(own, ensure_ascii=False))  # its own prefixes mean something else
        signature = 0
        for count, section, rid, text in unit.records():
            if drop is not None and _rebuilt(section, rid, text, drop):
                continue
            if is_shared(section, rid):
                report.records += count
                known = self.shared[section].get(rid)
                if known is None:
                    self.shared[section][rid] = (text, str(path))
                    continue
                if known[0] == text:
                    report.deduplicated += 1
                    continue
                report.conflicts.append(Conflict(scanstring(rid, 1)[0], known[1], str(path)))
            elif repeat:
                continue
            else:
                report.records += count
                signature += _record_hash(section, rid, text)
            body.record(section, f'"_:{tag}-{rid[3:]}' if rid.startswith('"_:') else rid, text)
        if unit.bid is not None and unit.bid not in self.signatures:
            self.signatures[unit.bid] = (self._input, signature & _MASK)
        if body.close(skip_empty=repeat or bool(unit.given and unit.given.startswith("p4t:input/"))):
            self.bundle_ids.append((unit.run_id, bid))

    def _same(self, unit: Unit, is_shared: Callable[[str, str], bool], signature: int) -> bool:
        """Whether ``unit`` holds the records of the one written with ``signature``: its own records sum to it
        and none of its shared records contradicts one already kept."""
        mine = 0
        for _, section, rid, text in unit.records(close=False):
            if not is_shared(section, rid):
                mine += _record_hash(section, rid, text)
            elif self.shared[section].get(rid, (text,))[0] != text:
                return False
        return mine & _MASK == signature


_MASK = (1 << 64) - 1  # a signature: the sum of salted hashes of a unit's own records, compared in this process


def _record_hash(section: str, rid: str, text: str) -> int:
    """One record's part of a signature: blank-node ids aside (a merged run renames them)."""
    return hash((section, "_" if rid.startswith('"_:') else rid, text))


class _Body:
    """One bundle of the output, written as its records come: its key only once it has something (a merged
    input's top level that held only shared records is left out), each section opened at its first record."""

    def __init__(self, writer: _Writer, bid: str) -> None:
        self.w, self.bid = writer, bid
        self.opened = False
        self.section: str | None = None

    def _open(self) -> None:
        if not self.opened:
            self.w.fh.write(("" if self.w.first else ",\n") + string(self.bid) + ": {")
            self.w.first = False
            self.opened = True

    def member(self, key: str, text: str) -> None:
        self._open()
        self.w.fh.write(f"{'' if self.section is None else ', '}{string(key)}: {text}")
        self.section = key

    def record(self, section: str, rid: str, text: str) -> None:
        """One record; ``rid`` already a JSON string."""
        fh = self.w.fh
        if section != self.section:
            self._open()
            fh.write(f"{'' if self.section is None else '}, ' if self.section != 'prefix' else ', '}"
                     f"{string(section)}: {{")
            self.section = section
            fh.write(f"{rid}: {text}")
        else:
            fh.write(f", {rid}: {text}")

    def close(self, skip_empty: bool) -> bool:
        """End the bundle; False when it was left out."""
        if not self.opened:
            if skip_empty:
                return False
            self._open()
        self.w.fh.write("}" if self.section in (None, "prefix") else "}}")
        return True


def _unique(bid: str, seen: set[str]) -> str:
    candidate, n = bid, 1
    while candidate in seen:
        n += 1
        candidate = f"{bid}-{n}"
    seen.add(candidate)
    return candidate


def _generated(bundle_ids: list[tuple[str | None, str]], report: MergeReport) -> dict[str, dict[str, Any]]:
    """The records merging adds to the top level: an entity per bundle, a collection per job with its members,
    the list of conflicting ids."""
    made: dict[str, dict[str, Any]] = {"entity": {}, "hadMember": {}}
    members: dict[str, list[str]] = {}
    for run_id, bid in bundle_ids:
        made["entity"][bid] = attributes({"prov:type": QName("prov:Bundle")})
        if run_id is not None:
            members.setdefault(run_id, []).append(bid)
    missing = report.missing()
    for run_id, bids in members.items():
        info = report.runs[run_id]
        cid = f"p4t:run/{run_id}"
        made["entity"][cid] = attributes({
            "prov:type": QName("prov:Collection"), "p4t:runId": run_id, "p4t:worldSize": info["world_size"],
            "p4t:ranksPresent": len(info["ranks"]), "p4t:ranksMissing": missing.get(run_id) or None,
        })
        for i, bid in enumerate(bids):  # one membership each: the PROV-JSON schema wants one entity per hadMember
            made["hadMember"][f"_:members-{run_id}-{i}"] = {"prov:collection": cid, "prov:entity": bid}
    if report.conflicts:
        made["entity"]["p4t:merge/conflicts"] = attributes({
            "prov:type": QName("p4t:MergeConflicts"),
            "p4t:conflictingId": sorted({c.id for c in report.conflicts}),
        })
    return made
