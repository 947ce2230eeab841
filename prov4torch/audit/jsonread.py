"""One bounded JSON reader for every command that reads documents.

``json.loads`` alone accepts what is not JSON (``NaN``, ``Infinity``), keeps the last of two equal
keys without a word, raises ``ValueError`` on integers past 4300 digits and ``RecursionError`` on
deep nesting. Here each of those is one ``ProvInputError`` naming the file and the problem; duplicate
keys are collected (``Parsed.duplicates``) so validation can report them and readers can refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..errors import NotRegularFile
from ..errors import ProvInputError as ProvInputError  # re-exported: readers raise it from here
from ..safefs import open_regular

MAX_INT_DIGITS = 4000


@dataclass
class Parsed:
    value: Any
    duplicates: list[str] = field(default_factory=list)  # keys that appeared twice in one object


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (numbers must be finite; PROV-JSON writes them as typed strings)")


def bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"an integer literal of {len(text)} digits (more than {MAX_INT_DIGITS})")
    return int(text)


def loads(text: str, source: str) -> Parsed:
    """Parse ``text`` (from ``source``, named in errors)."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        value = json.loads(text, parse_constant=refuse_constant, parse_int=bounded_int, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise ProvInputError(f"{source}: empty file: not JSON", value=source) from None
        raise ProvInputError(f"{source}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                             value=source) from None
    except RecursionError:
        raise ProvInputError(f"{source}: nested too deeply to be a PROV-JSON document", value=source) from None
    except ValueError as exc:
        raise ProvInputError(f"{source}: not JSON: {exc}", value=source) from None
    return Parsed(value, duplicates)


def open_file(path: Path) -> BinaryIO:
    """``path`` open for reading bytes, or one ``ProvInputError`` saying why it cannot be."""
    try:
        return cast(BinaryIO, open_regular(path))
    except NotRegularFile as exc:
        raise ProvInputError(f"{exc}; give PROV-JSON files", value=str(path)) from None
    except FileNotFoundError:
        raise ProvInputError(f"{path}: no such file", value=str(path)) from None
    except IsADirectoryError:  # pragma: no cover - open_regular says 'a directory' itself
        raise ProvInputError(f"{path}: is a directory; give PROV-JSON files", value=str(path)) from None
    except OSError as exc:
        raise ProvInputError(f"{path}: cannot read: {exc.strerror or exc}", value=str(path)) from exc


def read_text(path: Path) -> str:
    with open_file(path) as fh:
        try:
            raw = fh.read()
        except OSError as exc:
            raise ProvInputError(f"{path}: cannot read: {exc.strerror or exc}", value=str(path)) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProvInputError(f"{path}: not UTF-8 text (byte {exc.start}): not JSON", value=str(path)) from None


def load_document(path: str | Path) -> dict[str, Any]:
    """A PROV-JSON file's top-level object, or one ``ProvInputError`` saying why it cannot be read."""
    p = Path(path)
    parsed = loads(read_text(p), str(p))
    if parsed.duplicates:
        raise ProvInputError(f"{p}: key {parsed.duplicates[0]!r} appears twice in one object: the document is "
                             "ambiguous; fix it (prov4torch validate shows where)", value=str(p))
    if not isinstance(parsed.value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(parsed.value), "a number")
        raise ProvInputError(f"{p}: a PROV-JSON document is a JSON object, found {kind}", value=str(p))
    return parsed.value
