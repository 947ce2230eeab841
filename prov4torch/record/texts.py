"""Text a script read from a tagged file, found again in the data it trains on.

A script that reads a text file itself (``open(path).read()``, ``Path.read_text()``, a ``csv`` reader) and
builds a dataset of the strings (karpathy/makemore's names, a file of sentences) holds Python strings that no
reader hook can follow: the dataset's content id is new, and the tags declared for the file were lost on the way
(a correctly tagged file was refused for missing tags). So the tagged text files the script opens for reading
in text mode are remembered (``TextSources.opened``; at most ``MAX_SOURCES``, each up to ``MAX_FILE_BYTES``),
and a dataset with no tags from anywhere else is matched against them (``TextSources.found_in``): when every
string of its content is a *piece* of those files -- the whole text, a line, a line stripped, a word, a field
split on ``, \\t ; |`` (stripped, unquoted, or as the ``csv`` module reads a quoted one) -- it carries the tags of
the files its strings were found in, combined restrictively, and ``p4t:tagsFrom`` names them.

Closed, never opened, by what cannot be checked: a dataset that also holds tensors, arrays or bytes (their
memory carries tags of its own, or none), an object we cannot look into, a string found in none of the files,
more than ``MAX_VALUES`` values, a file past ``MAX_PIECES`` pieces or unreadable: no tags from text, as before.
Strings name the files (a dataset of numbers alone is not matched: ``7`` is in many files); its numbers must be
found in those files too (a word or field read as a number: ``"0.50"`` is ``0.5``), except small integers (below
``SMALL_INT``: labels, vocabulary indices, lengths, which a script makes itself) and booleans; strings shorter than
``MIN_CHARS`` (a vocabulary's characters) are no evidence either way, and short strings directly on the dataset are
its settings (a split name, a root folder), as for its content id.
"""

from __future__ import annotations

import contextlib
import csv
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..safefs import read_regular
from .identity import MAX_DEPTH, TEXT_IS_DATA, data_members, is_array, is_tensor

MAX_SOURCES = 64  # tagged text files remembered per run
MAX_FILE_BYTES = 64 << 20  # larger text files are not matched (their data stays without tags from text)
MAX_PIECES = 1_000_000  # pieces kept per file (hashes: ~50 MB at most)
MAX_VALUES = 2_000_000  # values looked at in one dataset
MIN_CHARS = 2  # shorter strings are no evidence
SMALL_INT = 1 << 16  # integers below this (in magnitude) are no evidence: labels, indices, lengths
SEPARATORS = (",", "\t", ";", "|")
_NUMBER_START = frozenset("0123456789+-.")
_SEQUENCES = (list, tuple, set, frozenset)


@dataclass
class TextSource:
    """One tagged text file the script read: where its tags come from, and (built when first needed) its pieces."""

    path: str
    encoding: str
    governance: list[tuple[str, dict[str, Any]]]
    dataset_id: str | None  # the file's content id (the dataset the data made of its strings derives from)
    pieces: set[int] | None = None
    unusable: str | None = None  # why its pieces cannot be built (too large, unreadable, not text)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def holds(self) -> set[int] | None:
        with self.lock:
            if self.pieces is None and self.unusable is None:
                try:
                    text = read_regular(self.path, MAX_FILE_BYTES).decode(self.encoding)
                except (OSError, ValueError, LookupError) as exc:  # FileTooLarge, NotRegularFile, a bad encoding
                    self.unusable = f"{type(exc).__name__}: {exc}"
                else:
                    self.pieces = pieces_of(text)
                    if self.pieces is None:
                        self.unusable = f"more than {MAX_PIECES:,} pieces"
            return self.pieces


def pieces_of(text: str) -> set[int] | None:
    """The hashes of the pieces of ``text`` (see the module docstring); None past ``MAX_PIECES``."""
    out: set[int] = {hash(text), hash(text.strip())}
    add = out.add
    for line in text.splitlines():
        add(hash(line))
        stripped = line.strip()
        add(hash(stripped))
        for word in stripped.split():
            add(hash(word))
            _number(word, add)
        for sep in SEPARATORS:
            if sep in stripped:
                for part in stripped.split(sep):
                    part = part.strip()
                    add(hash(part))
                    add(hash(part.strip("\"'")))
                    _number(part, add)
                if '"' in stripped:  # a quoted field that holds the separator, as the csv module reads it
                    with contextlib.suppress(csv.Error):
                        for part in next(csv.reader([stripped], delimiter=sep)):
                            add(hash(part))
                            add(hash(part.strip()))
        if len(out) > MAX_PIECES:
            return None
    return out


def _number(piece: str, add: Any) -> None:
    """A piece that reads as a number: its value too (``hash(0.5) == hash("0.50" as a float)``; ints and floats of
    one value hash alike)."""
    if piece and piece[0] in _NUMBER_START:
        with contextlib.suppress(ValueError):
            add(hash(float(piece)))


def strings_in(data: Any) -> list[str | int | float] | None:
    """The strings and numbers of ``data``'s content that are evidence (see the module docstring); None when
    something in it cannot be checked."""
    out: list[str | int | float] = []
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen: set[int] = set()
    visits = 0
    while stack:
        obj, depth = stack.pop()
        visits += 1
        if visits > MAX_VALUES:
            return None
        if type(obj) is str:
            setting = depth == 1 and len(obj) < TEXT_IS_DATA and "\n" not in obj
            if len(obj) >= MIN_CHARS and not setting:
                out.append(obj)
            continue
        if obj is None or isinstance(obj, bool):
            continue
        if isinstance(obj, (int, float)):  # (numpy's float64 too: its hash is its value's)
            if isinstance(obj, float) or not -SMALL_INT < obj < SMALL_INT:
                out.append(obj)
            continue
        if isinstance(obj, (str, bytes, bytearray, memoryview)) or is_tensor(obj) or is_array(obj):
            return None  # bytes, a str subclass, memory: not text we can find in a file
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        items = _members(obj, depth)
        if items is None:
            return None
        stack.extend((v, depth + 1) for v in items)
    return out


def _members(obj: Any, depth: int) -> list[Any] | None:
    """What ``obj`` holds, to look into; [] for what holds no data (a function, a transform); None for an object
    we cannot look into."""
    if isinstance(obj, Mapping):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, _SEQUENCES):
        return list(obj)
    if callable(obj) or isinstance(obj, type):
        return []
    members = data_members(obj) if depth <= MAX_DEPTH else None
    if members is None:
        return None
    return [v for k, v in members.items() if not k.startswith("__")]


class TextSources:
    """The tagged text files one run's script opened for reading (see the module docstring)."""

    def __init__(self) -> None:
        self.sources: dict[str, TextSource] = {}
        self._lock = threading.Lock()

    def opened(self, path: str, encoding: str | None, governance: list[tuple[str, dict[str, Any]]],
               dataset_id: str | None) -> None:
        """The script opened ``path`` (tagged: ``governance``; its content id ``dataset_id``) for reading text."""
        with self._lock:
            if path in self.sources or len(self.sources) >= MAX_SOURCES:
                return
            self.sources[path] = TextSource(path, encoding or "utf-8", governance, dataset_id)

    def files_of(self, dataset_ids: list[str]) -> list[str]:
        """The text files among the datasets ``dataset_ids`` (what ``found_in`` found a dataset made of)."""
        return [s.path for s in list(self.sources.values()) if s.dataset_id in dataset_ids] if self.sources else []

    def found_in(self, data: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        """The tags ``data`` carries from the text files its strings were all found in, and those files' content
        ids; nothing when none or not all of them were. Strings name the files (numbers alone are weak evidence:
        ``7`` is in many files); its numbers must be found in those files too."""
        sources = list(self.sources.values())
        try:
            strings = strings_in(data) if sources else None
        except Exception:  # noqa: BLE001 - a user object that fails when looked at: nothing is matched (closed)
            return [], []
        if not strings or not any(isinstance(v, str) for v in strings):
            return [], []
        held = [(s, pieces) for s in sources if (pieces := s.holds()) is not None]
        used: dict[str, TextSource] = {}
        for value in sorted(strings, key=lambda v: not isinstance(v, str)):  # strings first: they name the files
            h = hash(value)
            found = [s for s, pieces in held if h in pieces]
            if not found or (not isinstance(value, str) and not any(s.path in used for s in found)):
                return [], []  # from somewhere else: the tags of these files do not cover it
            for s in found if isinstance(value, str) else ():
                used.setdefault(s.path, s)
        n = f"{len(strings):,} value{'s' if len(strings) != 1 else ''}"
        files = ", ".join(os.path.basename(s.path) for s in used.values())
        return ([(f"{where}: the data's {n} found in {files}", g) for s in used.values() for where, g in s.governance],
                [s.dataset_id for s in used.values() if s.dataset_id])
