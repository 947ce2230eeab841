"""PROV-JSON read a record at a time: memory that grows with what a command keeps, not with the file's text.

A PROV-JSON document is an object of sections (``entity``, ``used``, ... , ``prefix``, ``bundle``), each an
object of records. ``items(path)`` parses the top level and the sections by hand and each record with the C
JSON scanner (``raw_decode``), reading the file in chunks; it yields:

- ``Prefix(bundle, value)``: a container's ``prefix`` section (``value`` None when it has none), always before
  any record of that container, so ids can be expanded as they come. A document that declares its prefixes
  after its records (allowed, rare) is held back until they are known: then memory grows with the records
  held, as a whole-document reader's would.
- ``Records(bundle, section, records)``: consecutive records of a section that maps ids to records, as
  ``(id, value)`` pairs (a value is an object, or a list for a repeated id), up to ``BATCH`` at a time: a
  consumer loops over them without a Python call per record.
- ``Value(bundle, key, value)``: a key whose value is not streamed: an unknown key, a section that is not an
  object, ``bundle`` inside a bundle; a bundle that is not an object is ``Value(its id, "", value)``.
- ``Bundle(id)``: a bundle begins (its records follow with ``bundle=id``).
- ``Duplicate(bundle, key)``: a key that appeared twice in one object (the second occurrence is yielded too).

The same refusals as the whole-document reader (``jsonread``): ``NaN``/``Infinity``, integers past 4000
digits, deep nesting, bad UTF-8, a top level that is not an object (``NotObject``), trailing data. Each is
one ``ProvInputError`` naming the file, line and column.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from .jsonread import ProvInputError, bounded_int, open_file, refuse_constant
from .shape import KNOWN_SECTIONS

CHUNK = 1 << 22  # text read at a time (4 MiB)
BATCH = 4096  # records per Records item
STREAMED = KNOWN_SECTIONS - {"prefix", "bundle"}  # sections that map ids to records
_WS = re.compile(r"[ \t\n\r]*")
_KEY = re.compile(r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')  # a key without escapes, and ':'
_NEXT_KEY = re.compile(r'[ \t\n\r]*,[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')  # ', "key": '
_END = re.compile(r"[ \t\n\r]*}")

class Prefix(NamedTuple):
    bundle: str | None
    value: Any


class Records(NamedTuple):
    bundle: str | None
    section: str
    records: list[tuple[str, Any]]


class Value(NamedTuple):
    bundle: str | None
    key: str
    value: Any


class Bundle(NamedTuple):
    id: str


class Duplicate(NamedTuple):
    bundle: str | None
    key: str


class NotObject(NamedTuple):
    value: Any  # the whole top-level value (not a PROV-JSON document)


Item = Prefix | Records | Value | Bundle | Duplicate | NotObject


Progress = Callable[[str, int, int], None]  # (file, bytes read, its size)
_PROGRESS: list[Progress] = []  # the hook ``progress_to`` installs (a command run on a terminal)


@contextlib.contextmanager
def progress_to(hook: Progress) -> Iterator[None]:
    """While inside, every file read a record at a time reports the bytes read of its size to ``hook``."""
    _PROGRESS.append(hook)
    try:
        yield
    finally:
        _PROGRESS.remove(hook)


class _Text:
    """The file's text in a sliding window; positions are indices into ``buf``."""

    def __init__(self, fh: IO[bytes], source: str) -> None:
        self.fh, self.source = fh, source
        self.size = 0
        if _PROGRESS:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                self.size = os.fstat(fh.fileno()).st_size
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.lines_before = 0  # newlines in the text already dropped from the window
        self.column_before = 0  # characters of the window's first line that were dropped with it
        self.bytes_read = 0
        self.duplicates: list[str] = []
        duplicates = self.duplicates

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            out = dict(items)
            if len(out) != len(items):  # rare: find which key came twice
                seen: set[str] = set()
                duplicates.extend(k for k, _ in items if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            return out

        # the hook holds the list, not this object: no reference cycle keeps a finished file's window alive
        # (commands that pause the cycle collector read thousands of files)
        self.decoder_json = json.JSONDecoder(parse_constant=refuse_constant, parse_int=bounded_int,
                                             object_pairs_hook=pairs)

    def more(self, at_least: int = CHUNK) -> bool:
        """Read more text into the window (dropping what is consumed); False at the end of the file."""
        if self.eof:
            return False
        try:
            data = self.fh.read(max(at_least, CHUNK))
        except OSError as exc:
            raise ProvInputError(f"{self.source}: cannot read: {exc.strerror or exc}", value=self.source) from exc
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise ProvInputError(f"{self.source}: not UTF-8 text (byte {self.bytes_read + exc.start}): not JSON",
                                 value=self.source) from None
        self.bytes_read += len(data)
        if _PROGRESS and self.size:
            _PROGRESS[-1](self.source, self.bytes_read, self.size)
        if not data:  # the end: nothing is dropped, so positions already found stay valid
            self.buf += text
            self.eof = True
            return False
        if self.pos:
            newlines = self.buf.count("\n", 0, self.pos)
            self.lines_before += newlines
            last = self.buf.rfind("\n", 0, self.pos)
            self.column_before = self.pos - (last + 1) + (0 if newlines else self.column_before)
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += text
        return bool(data)

    def fail(self, message: str, pos: int | None = None) -> ProvInputError:
        p = self.pos if pos is None else pos
        newlines = self.buf.count("\n", 0, p)
        line = self.lines_before + newlines + 1
        col = p - (self.buf.rfind("\n", 0, p) + 1) + 1 + (0 if newlines else self.column_before)
        return ProvInputError(f"{self.source}: not JSON (line {line}, column {col}: {message})", value=self.source)

    def peek(self) -> str:
        """The next character after whitespace ('' at the end of the file)."""
        while True:
            m = _WS.match(self.buf, self.pos)
            self.pos = m.end() if m else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            raise self.fail(f"Expecting {what}")
        self.pos += 1

    def value(self) -> Any:
        """The next JSON value, parsed by the C scanner; the window grows until it holds the value whole."""
        self.peek()
        want = CHUNK
        while True:
            try:
                value, end = self.decoder_json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                truncated = exc.pos >= len(self.buf) - 8 or exc.msg.startswith("Unterminated string")
                if truncated and self.more(want):
                    want *= 2  # a large value: read in growing steps, not one chunk per retry
                    continue
                raise self.fail(exc.msg, exc.pos) from None
            except RecursionError:
                raise ProvInputError(f"{self.source}: nested too deeply to be a PROV-JSON document",
                                     value=self.source) from None
            except ValueError as exc:
                raise ProvInputError(f"{self.source}: not JSON: {exc}", value=self.source) from None
            if end == len(self.buf) and not self.eof and self.more(want):
                continue  # a number may go on in the next chunk
            self.pos = end
            return value

    def key(self) -> str:
        if self.peek() != '"':
            raise self.fail("Expecting property name enclosed in double quotes")
        key = self.value()
        self.expect(":", "':' delimiter")
        return str(key)

    def after_member(self, close: str) -> bool:
        """After a member: True if another follows (a comma), False at the object's end."""
        ch = self.peek()
        if ch == ",":
            self.pos += 1
            return True
        if ch == close:
            self.pos += 1
            return False
        raise self.fail("Expecting ',' delimiter")


class _Reader:
    def __init__(self, text: _Text) -> None:
        self.t = text
        self.out: deque[Item] = deque()
        self.top_hold: list[Item] | None = []  # items held until the document's prefixes are known
        self.bundle_hold: list[Item] | None = None

    # -- ordering: no record before its container's prefixes -------------------------------------------
    def emit(self, item: Item, in_bundle: bool) -> None:
        if in_bundle and self.bundle_hold is not None:
            self.bundle_hold.append(item)
        elif self.top_hold is not None:
            self.top_hold.append(item)
        else:
            self.out.append(item)

    def release_top(self, prefix: Any) -> None:
        held, self.top_hold = self.top_hold or [], None
        self.out.append(Prefix(None, prefix))
        self.out.extend(held)

    def release_bundle(self, bid: str, prefix: Any) -> None:
        held, self.bundle_hold = self.bundle_hold or [], None
        for item in (Prefix(bid, prefix), *held):
            self.emit(item, in_bundle=False)

    def duplicates(self, bundle: str | None) -> None:
        if self.t.duplicates:
            for key in self.t.duplicates:
                self.emit(Duplicate(bundle, key), in_bundle=bundle is not None)
            self.t.duplicates.clear()

    # -- structure --------------------------------------------------------------------------------------
    def document(self) -> Iterator[Item]:
        t = self.t
        if t.peek() != "{":
            if t.peek() == "":
                raise ProvInputError(f"{t.source}: empty file: not JSON", value=t.source)
            value = t.value()
            self.trailing()
            yield NotObject(value)
            return
        t.pos += 1
        yield from self.container(None)
        if self.top_hold is not None:
            self.release_top(None)
        self.trailing()
        yield from self.drain()

    def trailing(self) -> None:
        if self.t.peek() != "":
            raise self.t.fail("Extra data")

    def drain(self) -> Iterator[Item]:
        while self.out:
            yield self.out.popleft()

    def keys(self, bundle: str | None) -> Iterator[str]:
        """The keys of an object whose '{' is consumed, each with the reader at its value; a key seen twice is
        reported. The caller reads the value before asking for the next key."""
        t = self.t
        seen: set[str] = set()
        if t.peek() == "}":
            t.pos += 1
            return
        while True:
            key = t.key()
            if key in seen:
                self.emit(Duplicate(bundle, key), bundle is not None)
            seen.add(key)
            yield key
            if not t.after_member("}"):
                return

    def container(self, bundle: str | None) -> Iterator[Item]:
        """The members of an object of sections (the document or a bundle), its '{' consumed."""
        t = self.t
        in_bundle = bundle is not None
        for key in self.keys(bundle):
            if key == "prefix":
                value = t.value()
                self.duplicates(bundle)
                if in_bundle:
                    self.release_bundle(str(bundle), value)
                else:
                    self.release_top(value)
            elif key in STREAMED and t.peek() == "{":
                t.pos += 1
                yield from self.section(bundle, key)
            elif key == "bundle" and not in_bundle and t.peek() == "{":
                t.pos += 1
                yield from self.bundles()
            else:
                self.emit(Value(bundle, key, t.value()), in_bundle)
                self.duplicates(bundle)
            yield from self.drain()

    def section(self, bundle: str | None, kind: str) -> Iterator[Item]:
        """The records of one section, its '{' consumed, in batches.

        The common case (a key without escapes, a record whole in the window) is matched and decoded here by
        the C scanner. Anything else (escapes in a key, a record cut by the window, the section's end across
        windows) goes the careful way, a record at a time. A repeated id or key ends a batch, so a
        ``Duplicate`` comes where it was found."""
        t = self.t
        in_bundle = bundle is not None
        seen: set[str] = set()
        if t.peek() == "}":
            t.pos += 1
            return
        decode = t.decoder_json.scan_once  # type: ignore[attr-defined]  # the C scanner (raw_decode wraps it)
        key_at, next_key_at, end_at = _KEY.match, _NEXT_KEY.match, _END.match
        batch: list[tuple[str, Any]] = []
        buf, pos = t.buf, t.pos  # the window, held locally while the common case goes on
        m = key_at(buf, pos)
        while True:
            if m is not None:
                rid = m.group(1)
                try:
                    value, end = decode(buf, m.end())
                    fast = end < len(buf)  # a value that ends the window may be cut: the careful way
                except (ValueError, RecursionError, StopIteration):
                    fast = False
                if not fast:
                    t.duplicates.clear()  # what a partial read found is found again the careful way
                    pos = m.start(1) - 1  # the careful way, from the key's opening quote
                else:
                    if rid in seen:
                        self.flush(bundle, kind, batch)
                        self.emit(Duplicate(bundle, rid), in_bundle)
                    seen.add(rid)
                    batch.append((rid, value))
                    pos = end
                    if t.duplicates or len(batch) >= BATCH:  # a repeated key inside the record: say so now
                        self.flush(bundle, kind, batch)
                        yield from self.drain()
                    m = next_key_at(buf, pos)  # ', "next id": ' in one match
                    if m is not None:
                        continue
            if batch:
                self.flush(bundle, kind, batch)
                yield from self.drain()
            if m is not None or not seen or (e := end_at(buf, pos)) is None:
                t.pos = pos
                if m is None and seen and not t.after_member("}"):  # the window may end here
                    break
                rid = t.key()
                if rid in seen:
                    self.emit(Duplicate(bundle, rid), in_bundle)
                seen.add(rid)
                self.emit(Records(bundle, kind, [(rid, t.value())]), in_bundle)
                self.duplicates(bundle)
                yield from self.drain()
                buf, pos = t.buf, t.pos
                m = next_key_at(buf, pos)
                continue
            t.pos = e.end()
            return
        yield from self.drain()

    def flush(self, bundle: str | None, kind: str, batch: list[tuple[str, Any]]) -> None:
        """Emit the records gathered so far (emptying the list), then any repeated key found inside them."""
        if batch:
            self.emit(Records(bundle, kind, batch[:]), bundle is not None)
            batch.clear()
        self.duplicates(bundle)

    def bundles(self) -> Iterator[Item]:
        t = self.t
        for bid in self.keys(None):
            if t.peek() == "{":
                t.pos += 1
                self.emit(Bundle(bid), False)
                self.bundle_hold = []
                yield from self.container(bid)
                if self.bundle_hold is not None:
                    self.release_bundle(bid, None)
            else:
                self.emit(Value(bid, "", t.value()), False)
            yield from self.drain()


def items(path: str | Path) -> Iterator[Item]:
    """The items of a PROV-JSON file, in order (see the module docstring); ProvInputError when it is not JSON."""
    p = Path(path)
    with open_file(p) as fh:
        text = _Text(fh, str(p))
        text.more()
        yield from _Reader(text).document()
