"""`prov4torch run` without typer's parsing cost.

typer builds a pydantic validator for every option of a command before it parses one: about 0.25 s for
`run`'s options, paid before every training script. `run` is on every training job's critical path, so its
common command lines are parsed here instead, from the same signature typer reads (each option's flags,
type, default and `min`): nothing is declared twice. Anything this parser does not handle exactly (help,
an unknown or malformed option, a value it cannot convert) returns None, and typer parses as before, with
its own messages.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

_CONVERT: dict[Any, Callable[[str], Any]] = {str: str, Path: Path, int: int}


def _option(name: str, annotation: Any) -> tuple[list[str], Any, Any] | None:
    """(flags, value type, typer info) of one parameter, or None when it is not a simple option."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    base, *extras = typing.get_args(annotation)
    info = next((e for e in extras if type(e).__name__ in ("OptionInfo", "ArgumentInfo")), None)
    if info is None or type(info).__name__ != "OptionInfo":
        return None
    default = getattr(info, "default", None)  # in Annotated[...], typer reads a first string as a flag
    first = [default] if isinstance(default, str) and default.startswith("-") else []
    decls = [d for d in (*first, *(getattr(info, "param_decls", None) or ())) if d.startswith("-")]
    flags = decls or [f"--{name.replace('_', '-')}"]
    return flags, base, info


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type inside Optional[...]/list[...], whether it is a list)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else tp
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    return tp, False


def parse(command: Callable[..., Any], argv: list[str]) -> tuple[dict[str, Any], str, list[str]] | None:
    """(keyword arguments, SCRIPT, script arguments) for ``command``, or None: let typer parse."""
    hints = typing.get_type_hints(command, include_extras=True)
    by_flag: dict[str, tuple[str, Any, bool, Any]] = {}
    values: dict[str, Any] = {}
    for name, param in inspect.signature(command).parameters.items():
        if name in ("ctx", "script"):
            continue
        found = _option(name, hints.get(name))
        if found is None:
            return None
        flags, base, info = found
        tp, many = _unwrap(base)
        if tp is not bool and tp not in _CONVERT and not (isinstance(tp, type) and issubclass(tp, Enum)):
            return None
        for flag in flags:
            by_flag[flag] = (name, tp, many, info)
        values[name] = param.default
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("-") or token == "-":
            return values, token, argv[i + 1:]
        flag, eq, inline = token.partition("=")
        spec = by_flag.get(flag)
        if spec is None:
            return None  # --help, --, an unknown option: typer's business
        name, tp, many, info = spec
        if tp is bool:
            if eq:
                return None
            values[name] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                return None
            inline = argv[i + 1]
            i += 1
        i += 1
        try:
            value = _CONVERT.get(tp, tp)(inline)  # an Enum: its value, or ValueError
        except ValueError:
            return None
        low = getattr(info, "min", None)
        if low is not None and value < low:
            return None
        if many:
            values[name] = [*(values[name] or []), value]
        else:
            values[name] = value
    return None  # no SCRIPT
