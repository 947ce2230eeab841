"""The recording scope: while prov4torch records, its own file reads and writes are not recorded again.

A framework's save calls torch.save inside; prov4torch hashing a file opens it. Inside ``recording()`` the
patched functions pass straight through (per thread). A failure to record is one warning; a policy violation
is the only exception that leaves a patched function on purpose.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import PolicyViolation
from ..patching import Patches
from ..record.signals import from_signal_handler
from ..warn import as_user, warn

_STATE = threading.local()


def busy() -> bool:
    """Whether this thread is inside prov4torch's own recording (its own torch.load/save must pass through)."""
    return bool(getattr(_STATE, "busy", False))


@contextlib.contextmanager
def recording() -> Iterator[None]:
    _STATE.busy = True
    try:
        yield
    finally:
        _STATE.busy = False


def file_path(f: Any) -> str | None:
    """The path behind a save/load target: a path, or an open file that has a name."""
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f) if isinstance(os.fspath(f), str) else None
    name = getattr(f, "name", None)
    return name if isinstance(name, str) and os.path.isfile(name) else None


def warn_unrecorded(what: str, exc: BaseException) -> None:
    """One warning for something that could not be recorded (warnings-as-errors must not break the script).
    Called in an ``except`` block: an exception a signal handler raised there is the script's, and goes on."""
    if from_signal_handler(exc):
        raise exc
    warn(f"prov4torch autolog could not record {what}: {type(exc).__name__}: {exc}")


def record_inside(action: Callable[[], Any], what: str) -> None:
    """Run ``action`` inside the recording scope: a failure warns, a policy violation propagates."""
    with recording():
        try:
            action()
        except PolicyViolation:
            raise
        except Exception as exc:  # noqa: BLE001 - recording never stops training
            warn_unrecorded(what, exc)


def record_once(action: Callable[[], Any], what: str) -> None:
    """``record_inside``, unless prov4torch is already recording (an outer framework save)."""
    if not busy():
        record_inside(action, what)


class Patcher(Patches):
    """``Patches`` with the common shape of an autolog hook: record after the original ran."""

    def after(self, owner: Any, name: str, record: Callable[..., Any], what: str) -> None:
        """``owner.name`` runs as before; then ``record(result, *args, **kwargs)`` (inside its busy scope, so what
        it writes or reads inside is not recorded twice)."""
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if busy():
                    return original(*args, **kwargs)
                with recording():
                    result = as_user(original, *args, **kwargs)
                record_inside(lambda: record(result, *args, **kwargs), what)
                return result
            return wrapper
        self.replace(owner, name, make)
