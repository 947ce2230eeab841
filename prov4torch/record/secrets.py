"""Secrets never reach a record: parameters, tags, the command line and exception messages are redacted
before they are written.

A value is written as ``<redacted>`` when its name says secret (token, key, secret, password, passphrase,
credential, auth, authorization, cookie, connection string) or when it looks like one: an API token (``hf_…``,
``sk-…``, ``ghp_…``, ``github_pat_…``, ``glpat-…``, ``npm_…``, ``sk_live_…``, ``AIza…``, ``AKIA…``, ``xox…-``,
a JWT), a PEM private key, an HTTP ``Bearer``/``Basic`` credential, and the ``user:password`` of a URL.
Nested values -- dicts, lists, tuples, sets, dataclasses, namespaces, any object with a ``__dict__`` -- are
redacted at every level by the same rules before they are turned into
text (``redact``); free text (an exception's message, a ``repr``) has token shapes, URL passwords and
``name=value`` / ``"name": "value"`` pairs with a secret name replaced in place (``redact_text``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"(^|[_.\-])(token|secret|password|passwd|pwd|passphrase|credentials?|auth|"
                         r"authori[sz]ation|cookie|api[_\-]?key|access[_\-]?key|private[_\-]?key|account[_\-]?key|"
                         r"connection[_\-]?string|key)($|[_.\-])", re.IGNORECASE)
SECRET_VALUE = re.compile(r"(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|"
                          r"github_pat_[A-Za-z0-9_]{22,}|glpat-[A-Za-z0-9_\-]{20,}|npm_[A-Za-z0-9]{36}|"
                          r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_\-]{35}|"
                          r"AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9\-]{10,}|"
                          r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}|"
                          # a PEM private key (to its end line, or to the end of a text that cut it off)
                          r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
                          r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)|"
                          # HTTP credentials: a bearer token, or basic auth's base64 (a digit or +/= in it: not
                          # "Basic augmentation")
                          r"\b[Bb]earer\s+[A-Za-z0-9._~+/\-]{16,}=*|"
                          r"\b[Bb]asic\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}|"
                          r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@))")  # the user:password of a URL


def secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


# name=value, name: value, 'name': 'value' pairs in free text whose name says secret
SECRET_PAIR = re.compile(r"""(?P<key>['"]?[A-Za-z0-9_.\-]*(?:token|secret|password|passwd|pwd|passphrase|"""
                         r"""credentials?|auth|api[_\-]?key|access[_\-]?key|private[_\-]?key|account[_\-]?key|"""
                         r"""shared[_\-]?access[_\-]?signature)['"]?\s*[:=]\s*)"""
                         r"""(?P<q>['"]?)(?P<value>[^'"\s,;}\])]+)(?P=q)""", re.IGNORECASE)
MAX_DEPTH = 32  # nesting followed when redacting; deeper values are replaced whole


def redact_text(text: str) -> str:
    """Free text with every secret it shows replaced: token shapes, URL passwords, secret-named pairs."""
    text = SECRET_VALUE.sub(REDACTED, text)
    return SECRET_PAIR.sub(lambda m: f"{m.group('key')}{m.group('q')}{REDACTED}{m.group('q')}"
                           if m.group("value") != REDACTED else m.group(0), text)


def redact(name: str, value: Any, _depth: int = 0) -> Any:
    """``value`` with every secret in it replaced by ``<redacted>``, at any depth (see the module docstring).

    A scalar is replaced whole when its name or its shape says secret; a container keeps its shape (a dict
    stays a dict, a dataclass or namespace becomes a dict of its fields) with each member redacted by its own
    name; a string that merely contains a secret is replaced whole, as parameters always were.
    """
    if secret_name(str(name)):
        return REDACTED
    if isinstance(value, str):
        return REDACTED if SECRET_VALUE.search(value) or SECRET_PAIR.search(value) else value
    if value is None or isinstance(value, (bool, int, float, bytes)):
        return value
    if _depth >= MAX_DEPTH:
        return REDACTED
    fields = _fields(value)
    if fields is not None:
        return {str(k): redact(str(k), v, _depth + 1) for k, v in fields.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [redact(str(name), v, _depth + 1) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else type(value)(items) \
            if isinstance(value, list) else tuple(items)
    return value


def _fields(value: Any) -> Mapping[Any, Any] | None:
    """The named members of a mapping, a dataclass, a namespace or a plain object; None for anything else
    (tensors, arrays and other values with their own text form are left to it)."""
    import dataclasses

    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    if type(value).__module__ in ("builtins", "torch", "numpy") or isinstance(value, type):
        return None
    attrs = getattr(value, "__dict__", None)
    if not isinstance(attrs, dict):
        return None
    cls = type(value)
    plain = getattr(cls, "__repr__", None) is object.__repr__ and getattr(cls, "__str__", None) is object.__str__
    if (plain and attrs) or cls.__name__ in ("Namespace", "SimpleNamespace"):
        return dict(attrs)
    return None  # an object with its own text form: that text is redacted (redact_text)


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
        out.append(redact_text(tok))  # token shapes, and secret-named pairs inside a value
    return out
