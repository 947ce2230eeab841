"""Parameters from the command line and from argparse, with secrets redacted before anything is written.

* ``parse_argv``: what was typed (``--key value``, ``--key=value``, ``--flag``) as ``argv.*`` parameters;
* ``ArgparseCapture``: the full namespace ``argparse`` produced (defaults included) as ``args.*`` parameters;
* ``redact``: a parameter whose name says secret (token, key, secret, password, credential, auth) or
  whose value looks like an API token (``hf_…``, ``sk-…``, ``ghp_…``, ``AKIA…``, ``xox…-``, a JWT) is
  written as ``<redacted>``; so is such a value inside the recorded command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..patching import Patches
from ..record.secrets import redact, redact_command, secret_name

__all__ = ["ArgparseCapture", "parse_argv", "redact", "redact_command", "secret_name"]

def parse_argv(argv: Sequence[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs as parameters; numbers parsed."""
    params: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            positional.extend(argv[i + 1:])
            break
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            if eq:
                params[key] = _number(value)
            elif i + 1 < len(argv) and not _is_option(argv[i + 1]):
                params[key] = _number(argv[i + 1])
                i += 1
            else:
                params[key] = True
        elif tok.startswith("-") and len(tok) == 2 and tok[1].isalpha():
            if i + 1 < len(argv) and not _is_option(argv[i + 1]):
                params[tok[1]] = _number(argv[i + 1])
                i += 1
            else:
                params[tok[1]] = True
        else:
            positional.append(tok)
        i += 1
    clean = {}
    for key, value in params.items():
        safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in key).strip("_.-") or "arg"
        clean[safe] = value
    if positional:
        clean["argv.positional"] = " ".join(positional)
    return clean


def _is_option(tok: str) -> bool:
    if not tok.startswith("-"):
        return False
    try:
        float(tok)  # a negative number is a value
        return False
    except ValueError:
        return True


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


class ArgparseCapture:
    """Wraps ``argparse.ArgumentParser.parse_known_args`` while installed; ``log(namespace)`` gets each result."""

    def __init__(self, log: Callable[[dict[str, Any]], None]) -> None:
        self.log = log
        self._orig: Any = None

    def install(self) -> Callable[[], None]:
        import argparse

        capture = self

        def make(orig: Callable[..., Any]) -> Callable[..., Any]:
            def parse_known_args(parser: Any, *a: Any, **k: Any) -> Any:
                namespace, extras = orig(parser, *a, **k)
                capture.log(dict(vars(namespace)))
                return namespace, extras
            return parse_known_args

        patches = Patches()
        patches.replace(argparse.ArgumentParser, "parse_known_args", make)
        return patches.restore
