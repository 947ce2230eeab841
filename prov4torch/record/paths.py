"""Where a rank's files go, and how they are created: always inside the output directory.

A name that becomes part of a path (experiment, run id, model name) is checked segment by
segment: no ``..``, no empty or dot segment, nothing absolute, and the resolved directory must
lie under the resolved output root. Files the recorder creates are opened with ``O_EXCL`` and
``O_NOFOLLOW``, so a link planted where a file will be written fails cleanly instead of writing
through to its target; documents are written to a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .. import env
from ..errors import ConfigError, InvalidValueError
from ..safefs import inside, safe_dir


def check_segments(kind: str, name: str) -> str:
    """A name used as (nested) directory names: refuse anything that could leave its parent."""
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
        raise InvalidValueError(
            f"{kind} {name!r} cannot be used as a directory name: no '..', no leading '/' or '.', "
            "no empty parts (use letters, digits, _ - . and / between names)", value=name)
    return name


class RunFiles:
    """The directory of one run and the files of one rank in it."""

    def __init__(self, root: Path, experiment: str, run_id: str, stem: str) -> None:
        check_segments("experiment", experiment)
        check_segments("run id", run_id)
        self.root = root
        self.dir = root / experiment / run_id
        self.stem = stem
        self.journal = self.dir / f"{stem}.journal.jsonl"
        self.metrics = self.dir / f"{stem}.metrics.csv"
        self.prov = self.dir / f"{stem}.prov.json"
        self.packages = self.dir / f"{stem}.packages.txt"
        self._created: list[Path] = []  # what create() made, removed again by discard()

    def create(self) -> None:
        """Make the run directory (refusing one that leads outside the output root)."""
        try:
            missing = [p for p in (self.dir, *self.dir.parents) if not p.exists()]
            self.dir.mkdir(parents=True, exist_ok=True)
            self._created = sorted(missing, key=lambda p: len(p.parts))
        except OSError as exc:
            raise ConfigError(
                f"cannot write to output directory {self.dir}: {exc.strerror or exc}; "
                f"choose a writable one with out_dir= or {env.DIR}") from exc
        if self.dir.is_symlink() or not inside(self.root, self.dir):
            raise ConfigError(f"{self.dir} leads outside the output directory {self.root} (a link?): "
                              "choose another experiment name or output directory")

    def discard(self) -> None:
        """Remove what ``create`` and a failed start made (a failed start_run leaves nothing behind)."""
        for f in (self.journal, self.metrics, self.packages):
            with contextlib.suppress(OSError):
                if not f.is_symlink():
                    f.unlink()
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty

    def models_dir(self) -> Path:
        """``<run>/models``, created inside the run directory (never through a link)."""
        return safe_dir(self.dir, "models")
