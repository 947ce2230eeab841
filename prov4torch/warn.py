"""One way to warn: attributed to the user's line, never fatal to training.

A fixed ``stacklevel`` is right for one call path only: the same helper reached from a patch, a hook or
the fluent API points at a different frame each time (often inside prov4torch or torch). Like the ``prov``
package's own helper, ``warn`` walks the stack to the first frame outside prov4torch and attributes the
warning there. A warning filtered into an error (``-W error``) is swallowed unless ``fatal`` is set:
recording never stops training.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings

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
