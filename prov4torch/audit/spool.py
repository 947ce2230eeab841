"""What ``merge`` spools: a unit of the output (a rank file, one bundle of a merged input, or a merged input's
own top level) whose records wait in a nameless file until the unit ends and its identity is known; and the
JSON text it writes them as (C encoders made once).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .graph import ELEMENTS
from .jsonread import ProvInputError
from .load import as_records

scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _encoder(sort_keys: bool) -> Callable[[Any], str]:
    """JSON text of a record (no ASCII escaping, no NaN), by the C encoder made once: ``json.dumps`` with
    these options builds an encoder per call, which is most of the cost of merging a large document."""
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=sort_keys, check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    c = make(None, encoder.default, string, None, ": ", ", ", sort_keys, False, False)
    return lambda value: "".join(c(value, 0))


string: Callable[[str], str] = json.encoder.encode_basestring  # a str as a JSON string (non-ASCII as is)
CANONICAL = _encoder(sort_keys=True)  # shared records are compared by this text
PLAIN = _encoder(sort_keys=False)


def number(v: Any) -> int | None:
    """An int attribute of a record (``{"$": "2", "type": "xsd:int"}`` or 2), else None."""
    if isinstance(v, dict):
        v = v.get("$")
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


class Unit:
    """What becomes one output bundle: a rank file, or one bundle of a merged input, or a merged input's own
    top level. Its records are spooled as they are read (one line each: a flag, section, id, JSON text) until
    the unit ends and its identity -- the run and rank its activity names, which scopes its ids and renames its
    blank nodes -- is known."""

    def __init__(self, given: str | None, tag: str, fallback: str, prefixes: dict[str, Any], spool_dir: Path,
                 name: str) -> None:
        self.given, self.tag, self.fallback, self.prefixes = given, tag, fallback, prefixes
        self.run_id: str | None = None
        self.rank: int | None = None
        self.world: int | None = None
        self.bid: str | None = None  # set by identify: the unit's identity is known
        self.spool: IO[str] | None = None
        self.section = ""  # the section of the records spooled last
        self.spool_dir, self.name = spool_dir, name

    def add(self, section: str, records: Iterable[tuple[str, Any]], source: Path) -> None:
        """Spool records of one section: elements as canonical text (sorted keys), so that identical copies
        across inputs are found by their text."""
        if self.spool is None:
            self.spool = tempfile.TemporaryFile(  # noqa: SIM115  # closed by records(); nameless on disk
                "w+", encoding="utf-8", errors="surrogatepass", dir=self.spool_dir, prefix=f".{self.name}.")
        write, encode = self.spool.write, CANONICAL if section in ELEMENTS else PLAIN
        if section != self.section:
            write(f"S\t{string(section)}\t\n")
            self.section = section
        for rid, rec in records:
            if section == "activity" and self.bid is None:
                self.identify(rid, rec)
            try:
                text = encode(rec)
            except ValueError:
                raise ProvInputError(f"{source}: section {section!r}: record {rid!r} holds a number too large "
                                     "for JSON: fix or regenerate the file", value=str(source)) from None
            count = 1 if type(rec) is dict else len(as_records(rec)) or 1
            write(f"{count}\t{string(rid)}\t{text}\n")

    def identify(self, aid: str, value: Any) -> None:
        """(run id, rank, world size, bundle id) from the first rank (or launcher) activity of the unit."""
        for rec in as_records(value):
            run_id, rank = rec.get("p4t:runId"), rec.get("p4t:rank")
            if isinstance(run_id, str) and rank is not None and "/rank/" in aid and aid.startswith("p4t:run/"):
                self.run_id, self.rank, self.world = run_id, number(rank), number(rec.get("p4t:worldSize"))
            elif isinstance(run_id, str) and aid.endswith("/launcher") and aid.startswith("p4t:run/"):
                self.run_id, self.world = run_id, number(rec.get("p4t:worldSize"))
            else:
                continue
            self.bid = f"{aid}/bundle"
            return

    def records(self, close: bool = True) -> Iterator[tuple[int, str, str, str]]:
        """(records, section, id as a JSON string, JSON text) of every spooled id, in order; the spool is closed
        after unless ``close`` is false. (Lines: ``S<tab>section<tab>`` where a section begins, then
        ``count<tab>id<tab>text``; JSON text holds no tab or newline.)"""
        spool = self.spool
        if spool is None:
            return
        section = ""
        try:
            spool.seek(0)
            for line in spool:
                count, rid, text = line.rstrip("\n").split("\t", 2)
                if count == "S":
                    section = scanstring(rid, 1)[0]
                    continue
                yield int(count), section, rid, text
        finally:
            if close:
                spool.close()
