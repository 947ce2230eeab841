"""Governance declared outside the code: tags files, Croissant metadata, Hugging Face dataset cards.

``load_tags(FILE)`` (also ``prov4torch run --data-tags FILE``) adds rules to this process's
``DECLARED`` registry. A rule matches a dataset by path (a glob), name, id or digest, or a
checkpoint of third-party origin by path or digest, and gives it governance tags. A dataset
attached later gets the tags of every rule it matches; a checkpoint whose lineage is not known
gets a declared lineage. Every declared tag records the file it came from and that file's
SHA-256 (``p4t:tagsFrom``). Unknown keys, bad values and two sources that disagree on a tag are
errors naming the file and the key.

A tags file is TOML::

    [[dataset]]
    path = "data/train/*.csv"        # match: path (a glob relative to this file's folder; one starting with
                                     # "*" matches anywhere), name, id or sha256 (a prefix of 12+ hex)
    origin_country = "DE"
    jurisdiction = "EU"
    license = "CC-BY-4.0"
    consent_scope = ["training", "research"]

    [[checkpoint]]
    path = "models/bert-base/*"      # a third-party checkpoint: the data it was trained on, declared
    dataset_id = "bookcorpus"
    origin_country = "US"
    jurisdiction = "US"
    license = "Apache-2.0"
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidValueError
from ..safefs import file_sha256, read_or_raise
from ..warn import warn
from .tags import DATASET_TAGS, governance_attributes

MATCH_KEYS = ("path", "name", "id", "sha256")
KINDS = ("dataset", "checkpoint")


@dataclass(frozen=True)
class Source:
    """Where declared tags came from."""

    file: str
    sha256: str

    def describe(self) -> str:
        return f"{self.file} sha256:{self.sha256}" if self.sha256 else self.file


@dataclass
class Rule:
    kind: str  # dataset or checkpoint
    match: dict[str, str]
    tags: dict[str, Any]  # snake_case keyword -> value, validated
    source: Source
    base: Path  # relative path globs are taken from here (the file's folder)
    # the content a path rule names: the digests of the files it matched when it was loaded, so a copy of
    # that content elsewhere (another name, another folder) carries the same tags
    content: frozenset[str] = frozenset()

    @property
    def path_pattern(self) -> str:
        """A path rule's pattern: absolute, or starting with a wildcard (matched anywhere, as "**/name" in
        .gitignore), or relative to the tags file's folder."""
        raw = self.match["path"]
        return raw if raw.startswith("*") else os.path.normpath(raw if os.path.isabs(raw) else str(self.base / raw))

    def matches(self, *, paths: list[str], name: str | None, ids: list[str], digests: list[str]) -> bool:
        if self.content and self.content.intersection(digests):
            return True
        m = self.match
        if "path" in m:
            pattern = self.path_pattern
            if not any(fnmatch.fnmatch(os.path.normpath(p), pattern) or _under(p, pattern) for p in paths):
                return False
        if "name" in m and m["name"] != name:
            return False
        if "id" in m and m["id"] not in ids:
            return False
        return "sha256" not in m or any(d.startswith(m["sha256"].lower()) for d in digests if d)


def _under(path: str, pattern: str) -> bool:
    """A directory pattern matches every file below it."""
    return not any(c in pattern for c in "*?[") and os.path.normpath(path).startswith(pattern.rstrip("/") + "/")


@dataclass
class Declared:
    """The declared governance rules of this process."""

    rules: list[Rule] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)  # files already loaded (each once per process)

    def clear(self) -> None:
        self.rules.clear()
        self.loaded.clear()

    def for_dataset(self, *, paths: list[str], name: str | None, ids: list[str],
                    digests: list[str]) -> list[Rule]:
        """The dataset rules that match this data: by path, name, id or digest, or by content (a file a path
        rule named, found again under another name)."""
        return [rule for rule in self.rules
                if rule.kind == "dataset" and rule.matches(paths=paths, name=name, ids=ids, digests=digests)]

    def for_checkpoint(self, *, paths: list[str], digests: list[str]) -> Rule | None:
        for rule in self.rules:
            if rule.kind == "checkpoint" and rule.matches(paths=paths, name=None, ids=[], digests=digests):
                return rule
        return None


DECLARED = Declared()


MAX_TAGS_BYTES = 16 << 20  # a tags file, Croissant file or dataset card is read whole: larger is refused


def read_tags_bytes(path: Path) -> bytes:
    """A tags file's bytes: a regular file under the size cap, or one ``ConfigError`` naming it."""
    return read_or_raise(path, MAX_TAGS_BYTES, ConfigError, hint="give a TOML tags file, a Croissant file or a "
                         "dataset card")


def file_source(path: Path, raw: bytes | None = None) -> Source:
    raw = read_tags_bytes(path) if raw is None else raw
    return Source(str(path.resolve()), hashlib.sha256(raw).hexdigest())


def _rule(kind: str, entry: Any, where: str, source: Source, base: Path) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table of match and tag keys")
    match = {k: entry[k] for k in MATCH_KEYS if k in entry}
    if not match:
        raise ConfigError(f"{where}: says nothing to match: give one of {', '.join(MATCH_KEYS)}")
    for k, v in match.items():
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{where}: key {k!r} must be a non-empty string")
    tags = {k: v for k, v in entry.items() if k not in MATCH_KEYS}
    unknown = sorted(set(tags) - set(DATASET_TAGS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join((*MATCH_KEYS, *DATASET_TAGS))}")
    try:
        governance_attributes(tags)
    except InvalidValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Rule(kind, match, tags, source, base)


def parse_tags_file(path: Path) -> list[Rule]:
    """The rules of a TOML tags file, a Croissant JSON-LD file or a Hugging Face dataset card."""
    from . import cards

    raw = read_tags_bytes(path)
    source = file_source(path, raw)
    text = raw.decode("utf-8", "replace")
    if path.suffix == ".md" or text.startswith("---"):
        return [_rule("dataset", entry, f"{path}", source, path.parent) for entry in cards.hf_card(text, path)]
    if path.suffix in (".json", ".jsonld"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{path}: not JSON: {exc}") from None
        return [_rule("dataset", entry, f"{path}", source, path.parent) for entry in cards.croissant(doc, path)]
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(KINDS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} at the top level; use [[dataset]] and [[checkpoint]]")
    rules = []
    for kind in KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: {kind!r} must be an array of tables ([[{kind}]])")
        rules += [_rule(kind, e, f"{path}: [[{kind}]] #{i}", source, path.parent) for i, e in enumerate(entries, 1)]
    return rules


def load_tags(path: str | os.PathLike[str]) -> int:
    """Declare governance tags from a file (TOML, Croissant JSON-LD, or a Hugging Face dataset card);
    returns how many rules it added. See the module docstring for the format."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidValueError(f"load_tags takes a file path, got {type(path).__name__}", value=path)
    p = Path(path)
    if not os.path.lexists(p):
        raise ConfigError(f"{p}: no such tags file")
    key = str(p.resolve())
    if key in DECLARED.loaded:
        return 0
    rules = [bind_content(rule) for rule in parse_tags_file(p)]
    DECLARED.rules.extend(rules)
    DECLARED.loaded.add(key)
    return len(rules)


MAX_BOUND_FILES = 100_000  # files a path rule binds by content (beyond that: by path alone, and said)
MAX_BOUND_BYTES = 256 << 20  # bytes a path rule's binding reads (a fraction of a second; beyond: by path, and said)


def bind_content(rule: Rule) -> Rule:
    """A path rule bound to the content it names: the digest of every regular file it matches now (a
    directory's files too), so the tags follow that content wherever it is copied. Special files, loops and
    unreadable entries are skipped (the dataset that holds them is unidentified and judged as such).

    Bounded, as loading a tags file must not stall a run: the first ``MAX_BOUND_FILES`` files the pattern finds
    (found lazily: ``/usr/**`` is not listed whole; in name order) and at most ``MAX_BOUND_BYTES`` of them are
    bound; past either bound the rest of its files carry the tags by path only, and a warning says so."""
    if rule.kind != "dataset" or "path" not in rule.match:
        return rule
    raw = rule.match["path"]
    if raw.startswith("*"):
        return rule  # matched anywhere by name: no one place to bind
    files, more = _matched_files(rule.path_pattern)
    digests: set[str] = set()
    read = 0
    for f in files:
        try:
            size = os.stat(f).st_size
            if read + size > MAX_BOUND_BYTES:
                more = True
                break
            digests.add(file_sha256(Path(f)))  # regular files only: a FIFO is never opened for reading
            read += size
        except OSError:
            continue
    if more:
        warn(f"prov4torch: {rule.source.file}: path rule {raw!r} names more data than is bound by content at load "
             f"({MAX_BOUND_FILES:,} files, {MAX_BOUND_BYTES >> 20} MiB): {len(digests):,} files are; the rest "
             "carry its tags by path only (a copy of them elsewhere does not)")
    return dataclasses.replace(rule, content=frozenset(digests))


def _matched_files(pattern: str) -> tuple[list[str], bool]:
    """The files a path pattern names, as ``Rule.matches`` reads it (``*`` crosses folders; a plain folder names
    the files below it): at most ``MAX_BOUND_FILES`` in name order, and whether there were more. Found by one walk
    from the pattern's fixed folders, symlinked folders not followed (a loop is walked once), at most
    ``MAX_BOUND_FILES`` entries looked at."""
    pattern = os.path.abspath(pattern)
    if not any(c in pattern for c in "*?["):
        if not os.path.isdir(pattern):
            return ([pattern] if os.path.isfile(pattern) else []), False
        root = pattern
    else:
        fixed = []
        for part in pattern.split(os.sep):
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        root = os.sep.join(fixed) or os.sep
    found: list[str] = []
    seen = 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        seen += len(dirs) + len(names)
        found += (f for n in sorted(names)
                  if fnmatch.fnmatch(f := os.path.join(folder, n), pattern) or _under(f, pattern))
        if len(found) > MAX_BOUND_FILES or seen > MAX_BOUND_FILES:
            return sorted(found)[:MAX_BOUND_FILES], True
    return sorted(found), False


def load_from_env() -> None:
    """Load the tags files listed in PROV4TORCH_DATA_TAGS (set by ``prov4torch run --data-tags``)."""
    from .. import env

    for item in (env.get(env.DATA_TAGS) or "").split(os.pathsep):
        if item.strip():
            load_tags(item)


def declare_checkpoint(checkpoint: str | os.PathLike[str], **tags: Any) -> None:
    """Declare the origin of a third-party checkpoint (a file, a directory, a glob, or a sha256 digest):
    the governance tags of the data it was trained on (``dataset_id=`` names that data). A run that uses
    it then knows its lineage, and the default policy's ``checkpoint-lineage-known`` rule is satisfied."""
    if not isinstance(checkpoint, (str, os.PathLike)) or not str(checkpoint).strip():
        raise InvalidValueError(f"declare_checkpoint takes a path or a sha256 digest, got {checkpoint!r:.60}",
                                value=checkpoint)
    text = str(checkpoint)
    is_digest = len(text) >= 12 and all(c in "0123456789abcdef" for c in text.lower())
    match = {"sha256": text.lower()} if is_digest else {"path": str(Path(text).expanduser().resolve())}
    unknown = sorted(set(tags) - set(DATASET_TAGS))
    if unknown:
        raise InvalidValueError(f"declare_checkpoint: unknown tag {unknown[0]!r}; known: {', '.join(DATASET_TAGS)}",
                                value=unknown[0])
    governance_attributes(tags)
    DECLARED.rules.append(Rule("checkpoint", match, dict(tags), Source("declare_checkpoint()", ""), Path.cwd()))
