"""One way to replace a function: install, detect a second install, restore.

Every hook prov4torch puts into torch, the standard library or a framework goes through ``Patches``:

* ``replace(owner, name, make)`` sets ``owner.name = make(original)`` and marks the replacement with the
  original (``__p4t_original__``), so a second install over prov4torch's own replacement is refused (it
  returns None) instead of wrapping twice;
* ``restore()`` undoes every replacement in reverse order, putting back exactly what the owner held (an
  attribute it only inherited is deleted again, not copied down) -- and only where the replacement is still
  there: a hook another library installed over ours after us is left alone;
* ``add(undo)`` keeps the removal of a hook installed some other way (a torch hook handle) with the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

_MARK = "__p4t_original__"
_ABSENT = object()


def original_of(obj: Any) -> Any:
    """What a prov4torch replacement replaced; None for anything else."""
    return getattr(obj, _MARK, None)


def _mark(new: Any, original: Any) -> None:
    target = new.__func__ if isinstance(new, (classmethod, staticmethod)) else new
    with contextlib.suppress(AttributeError, TypeError):  # a builtin or slotted object: unmarked, still restored
        setattr(target, _MARK, original)


def _held(owner: Any, name: str) -> Any:
    """What ``owner`` itself holds under ``name`` (``_ABSENT`` if it only inherits it)."""
    try:
        return vars(owner).get(name, _ABSENT)
    except TypeError:  # no __dict__ (slots): what it has counts as its own
        return getattr(owner, name, _ABSENT)


class Patches:
    """The replacements of one installer (see the module docstring)."""

    def __init__(self) -> None:
        self.undo: list[Callable[[], None]] = []

    def replace(self, owner: Any, name: str, make: Callable[[Any], Any], *, own: bool = False) -> Any:
        """``owner.name = make(original)``: the replacement, or None when there is nothing to replace (missing;
        ``own``: not defined by ``owner`` itself) or it is prov4torch's already."""
        held = _held(owner, name)
        original = (held if held is not _ABSENT else None) if own else getattr(owner, name, None)
        if original is None or original_of(original) is not None:
            return None
        new = make(original)
        _mark(new, original)
        setattr(owner, name, new)
        self.undo.append(lambda: _put_back(owner, name, held, new))
        return new

    def add(self, undo: Callable[[], Any]) -> None:
        self.undo.append(undo)

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def _put_back(owner: Any, name: str, held: Any, new: Any) -> None:
    if _held(owner, name) is not new:
        return  # replaced again since, by someone else: theirs stays
    if held is _ABSENT:
        with contextlib.suppress(AttributeError):
            delattr(owner, name)
    else:
        setattr(owner, name, held)
