"""Text from documents made safe to show: no terminal escape sequences, no control characters, no lone
surrogates, and a bounded length (an ellipsis says something was cut)."""

from __future__ import annotations

import operator
import re
from typing import Any

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean(value: Any, limit: int = 200) -> str:
    """``value`` as one printable line of at most ``limit`` characters."""
    if type(value) is str and value.isascii() and value.isprintable() and len(value) <= limit:
        return value  # the common case: nothing to clean (no control character, escape or surrogate)
    text = _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", _ESCAPES.sub("", str(value))))
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def clean_tree(value: Any, limit: int = 2000) -> Any:
    """``clean`` applied to every string inside lists and dicts (keys too). What needs no cleaning is returned
    as it is, not copied (a summary of millions of rows is not held twice)."""
    if isinstance(value, str):
        return clean(value, limit)
    if isinstance(value, list):
        out = [clean_tree(v, limit) for v in value]
        return value if all(map(operator.is_, out, value)) else out
    if isinstance(value, dict):
        keys = [clean(k, limit) for k in value]
        values = [clean_tree(v, limit) for v in value.values()]
        if all(map(operator.is_, keys, value)) and all(map(operator.is_, values, value.values())):
            return value
        return dict(zip(keys, values, strict=True))
    return value
