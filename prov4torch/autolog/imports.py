"""Post-import hooks: run a function when a module is imported (or at once, if it already is).

The frameworks stay optional: nothing here imports them. ``when_imported(name, hook)`` registers a hook;
a finder on ``sys.meta_path`` wraps the loader of that module so the hook runs right after the module
body (before ``from module import x`` in the importer reads ``x``). ``remove()`` takes the finder away.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ..warn import warn

Hook = Callable[[ModuleType], None]


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, hooks: dict[str, list[Hook]]) -> None:
        self.hooks = hooks
        self.local = threading.local()

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname not in self.hooks or getattr(self.local, "busy", False):
            return None
        self.local.busy = True
        try:  # the spec the rest of sys.meta_path would give, with its loader wrapped
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None:
                for finder in sys.meta_path:
                    if finder is not self and hasattr(finder, "find_spec"):
                        spec = finder.find_spec(fullname, path, target)
                        if spec is not None:
                            break
        finally:
            self.local.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader, hooks = spec.loader, self.hooks[fullname]

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                for hook in hooks:
                    _run(hook, module)

        spec.loader = Loader()
        return spec


def _run(hook: Hook, module: ModuleType) -> None:
    try:
        hook(module)
    except Exception as exc:  # noqa: BLE001 - an integration that cannot install is a warning, never a crash
        warn(f"prov4torch could not hook {module.__name__}: {type(exc).__name__}: {exc}")


class ImportHooks:
    """Hooks for modules that may be imported later; ``remove()`` uninstalls the finder."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[Hook]] = {}
        self.finder = _Finder(self.hooks)

    def when_imported(self, name: str, hook: Hook) -> None:
        module = sys.modules.get(name)
        if module is not None:
            _run(hook, module)
            return
        self.hooks.setdefault(name, []).append(hook)
        if self.finder not in sys.meta_path:
            sys.meta_path.insert(0, self.finder)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)
        self.hooks.clear()
