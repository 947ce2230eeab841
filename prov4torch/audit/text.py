"""Text from documents made safe to show: no terminal escape sequences, no control characters, no lone
surrogates, and a bounded length (an ellipsis says something was cut)."""

from __future__ import annotations

import re
from typing import Any

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean(value: Any, limit: int = 200) -> str:
    """``value`` as one printable line of at most ``limit`` characters."""
    text = _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", _ESCAPES.sub("", str(value))))
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def clean_tree(value: Any, limit: int = 2000) -> Any:
    """``clean`` applied to every string inside lists and dicts (keys too)."""
    if isinstance(value, str):
        return clean(value, limit)
    if isinstance(value, list):
        return [clean_tree(v, limit) for v in value]
    if isinstance(value, dict):
        return {clean(k, limit): clean_tree(v, limit) for k, v in value.items()}
    return value
