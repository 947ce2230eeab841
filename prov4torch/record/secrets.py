"""Secrets never reach a record: parameters, tags and the command line are redacted before they are written.

A value is written as ``<redacted>`` when its name says secret (token, key, secret, password, credential,
auth) or when it looks like an API token (``hf_…``, ``sk-…``, ``ghp_…``, ``AKIA…``, ``xox…-``, a JWT),
and the ``user:password`` of a URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"(^|[_.\-])(token|secret|password|passwd|pwd|credentials?|auth|api[_\-]?key|"
                         r"access[_\-]?key|private[_\-]?key|key)($|[_.\-])", re.IGNORECASE)
SECRET_VALUE = re.compile(r"(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|"
                          r"AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9\-]{10,}|"
                          r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}|"
                          r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@))")  # the user:password of a URL


def secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact(name: str, value: Any) -> Any:
    """``value``, or ``<redacted>`` when the name or the value says it is a secret."""
    if secret_name(name) or (isinstance(value, str) and SECRET_VALUE.search(value)):
        return REDACTED
    return value


def redact_command(argv: Sequence[str]) -> list[str]:
    """A command line with secret values replaced (``--token X``, ``--token=X``, token-shaped values)."""
    out: list[str] = []
    hide_next = False
    for tok in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if tok.startswith("-"):
            key, eq, _value = tok.lstrip("-").partition("=")
            if secret_name(key):
                if eq:
                    out.append(tok.split("=", 1)[0] + "=" + REDACTED)
                else:
                    out.append(tok)
                    hide_next = True
                continue
        out.append(SECRET_VALUE.sub(REDACTED, tok))
    return out
