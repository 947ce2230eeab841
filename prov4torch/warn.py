"""One way to warn: attributed to the user's line, never fatal to training.

A fixed ``stacklevel`` is right for one call path only: the same helper reached from a patch, a hook or
the fluent API points at a different frame each time (often inside prov4torch or torch). Like the ``prov``
package's own helper, ``warn`` walks the stack to the first frame outside prov4torch and attributes the
warning there. A warning filtered into an error (``-W error``) is swallowed unless ``fatal`` is set:
recording never stops training.

``as_user`` is the other half, for a function a patch calls on the user's behalf (torch.save, a
DataLoader iterator's constructor): a warning it raises that would point into the patch points at the
user's line instead; one that points at torch's own code keeps that place.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_OWN = (_HERE + os.sep, os.path.join(os.path.dirname(_HERE), "cli") + os.sep)


def _ours(filename: str) -> bool:
    return filename.startswith(_OWN) or "prov4torch_cli" + os.sep in filename


def user_stacklevel() -> int:
    """The ``stacklevel`` that names the first frame outside prov4torch, counted from the caller of ``warn``."""
    here = inspect.currentframe()
    frame = here.f_back.f_back if here is not None and here.f_back is not None else None  # warn()'s caller
    level = 2
    while frame is not None and _ours(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning] = RuntimeWarning, *, fatal: bool = False) -> None:
    """Warn at the user's line (see the module docstring); never raises unless ``fatal``."""
    level = user_stacklevel()
    if fatal:
        warnings.warn(message, category, stacklevel=level)
        return
    with contextlib.suppress(Exception):
        warnings.warn(message, category, stacklevel=level)


_REGISTRIES: dict[str, dict[Any, Any]] = {}  # "once per location" for warnings re-issued where they arose


def as_user(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``original(*args, **kwargs)`` called from a patch, its warnings attributed as if the user had called it
    (see the module docstring). Filters (``error`` included) apply as they would have."""
    caller = inspect.currentframe()  # climb to the first frame outside prov4torch: the user's
    while caller is not None and caller.f_back is not None and _ours(os.path.abspath(caller.f_code.co_filename)):
        caller = caller.f_back
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return original(*args, **kwargs)
    finally:
        _reissue(caught, caller)  # outside the catcher: filters as the user set them


def _reissue(caught: list[warnings.WarningMessage], caller: Any) -> None:
    for w in caught:
        if caller is not None and _ours(os.path.abspath(w.filename)):
            g = caller.f_globals
            warnings.warn_explicit(w.message, w.category, caller.f_code.co_filename, caller.f_lineno,
                                   module=g.get("__name__"), registry=g.setdefault("__warningregistry__", {}),
                                   module_globals=g)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                   registry=_REGISTRIES.setdefault(w.filename, {}))
