"""Complete settings (issue 25): every argument a framework object was built with, the configurator pattern's
module-level literals, and scheduled hyperparameters as series.

* ``constructor_params``: a ``Trainer``/``Fabric``/``Accelerator`` call bound to its signature with the defaults
  applied -- every argument, not a curated subset -- as ``<prefix>.<name>`` parameters (objects by their class
  name, secrets redacted, values that cannot be told plainly by their type).
* ``script_literals``: the main script's module-level assignments of plain literals (``learning_rate = 6e-4``),
  read from its source, with the values they hold at the first optimizer step -- what a configurator
  (``exec(open("configurator.py").read())``, ``globals().update(...)``) left there -- as ``config.<name>``;
  those that differ from the source are listed in ``p4t:configOverridden``.
* ``scheduled``: the learning rate (and momentum, weight decay) of every param group, logged as a metric series
  ``<optimizer>.<key>`` each time it changes (a scheduler's warm-up and decay), read once per step: a dict
  lookup and a comparison when nothing changed.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..safefs import read_regular
from .argv import redact

SIMPLE = (bool, int, float, str, type(None))
MAX_SOURCE = 4 << 20
SCHEDULED = ("lr", "momentum", "weight_decay")


def plain(value: Any) -> Any:
    """A parameter value: plain values as they are, classes and callables by name, objects by their class."""
    if isinstance(value, SIMPLE):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, SIMPLE) for v in value):
        return str(list(value))
    if isinstance(value, type) or callable(value):
        return getattr(value, "__qualname__", None) or type(value).__name__
    if isinstance(value, (list, tuple)):
        return str([type(v).__name__ for v in value])
    return type(value).__name__


def constructor_params(original: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                       kwargs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Every argument of a constructor call, defaults applied (``{}`` when it cannot be bound)."""
    try:
        bound = inspect.signature(original).bind(instance, *args, **kwargs)
    except (TypeError, ValueError):
        return {}
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        if isinstance(value, Mapping) and name in ("kwargs",):
            for k, v in value.items():
                out[f"{prefix}.{k}"] = redact(k, plain(v))
            continue
        if name in ("args",):
            continue
        out[f"{prefix}.{name}"] = redact(name, plain(value))
    return out


def source_literals(script: Path) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments of a script's source (the last one of each name wins)."""
    try:
        tree = ast.parse(read_regular(script, MAX_SOURCE).decode("utf-8", "replace"))
    except (OSError, SyntaxError, ValueError):
        return {}
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(value, SIMPLE) and not name.startswith("_"):
                out[name] = value
    return out


def script_literals(script: Path | None, namespace: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(``config.<name>`` parameters, names whose value differs from the source) for the main script."""
    if script is None:
        return {}, []
    params: dict[str, Any] = {}
    overridden = []
    for name, default in source_literals(script).items():
        if name not in namespace:
            continue
        value = namespace[name]
        if not isinstance(value, SIMPLE):
            continue
        params[f"config.{name}"] = redact(name, value)
        if value != default:
            overridden.append(name)
    return params, sorted(overridden)


class Scheduled:
    """The scheduled hyperparameters of each optimizer's first param group, as series when they change."""

    def __init__(self, log: Callable[[str, float, int], None]) -> None:
        self.log = log
        self.last: dict[tuple[str, str], float] = {}

    def step(self, prefix: str, optimizer: Any, step: int) -> None:
        group = optimizer.param_groups[0]
        for key in SCHEDULED:
            value = group.get(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and self.last.get((prefix, key)) != value:
                self.last[(prefix, key)] = value
                self.log(f"{prefix}.{key}", float(value), step)
