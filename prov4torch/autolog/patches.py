"""Zero-code capture for ``prov4torch run``: patches installed for one run, removed at its end.

What is captured from an unmodified script:
* argv as parameters (``--key value``, ``--key=value``, ``--flag``);
* every DataLoader's dataset when its first batch is requested — recorded, policy-checked
  (a blocked dataset raises before that batch exists), samples/batches/epochs counted;
* optimizers: class and hyperparameters at their first step, and the step count
  (torch's own global step hook, no patching);
* ``torch.save(obj, path)`` outputs as checkpoints, ``torch.load(path)`` inputs as used
  checkpoints (by sha256, so lineage joins across runs).

Patched functions return what the originals return and raise what they raise: a failure
to *record* is a warning; only a policy violation stops the script, on purpose.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PolicyViolation

if TYPE_CHECKING:
    from ..record.run import Run


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


_STATE = threading.local()


def _busy() -> bool:
    """Whether this thread is inside prov4torch's own recording (its own torch.load/save must pass through)."""
    return bool(getattr(_STATE, "busy", False))


@contextlib.contextmanager
def _recording() -> Iterator[None]:
    _STATE.busy = True
    try:
        yield
    finally:
        _STATE.busy = False


def _warn(what: str, exc: BaseException) -> None:
    with contextlib.suppress(Exception):  # warnings-as-errors must not break the script
        warnings.warn(f"prov4torch autolog could not record {what}: {type(exc).__name__}: {exc}",
                      RuntimeWarning, stacklevel=4)


class Autolog:
    """Installs the patches for ``run``; ``remove()`` puts every original back."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._undo: list[Callable[[], None]] = []
        self.optimizers: dict[int, dict[str, Any]] = {}

    def install(self, argv: Sequence[str]) -> None:
        try:
            params = parse_argv(argv)
            if params:
                self.run.log_params({f"argv.{k}" if not k.startswith("argv.") else k: v for k, v in params.items()})
        except Exception as exc:  # noqa: BLE001
            _warn("the command-line arguments", exc)
        import torch

        self._patch_save_load(torch)
        self._hook_optimizers(torch)
        self.run.on_end(lambda _run: self._summarise())

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()
        reset()

    # -- torch.save / torch.load -----------------------------------------------------------------
    def _patch_save_load(self, torch: Any) -> None:
        orig_save, orig_load = torch.save, torch.load
        run = self.run

        @functools.wraps(orig_save)
        def save(obj: Any, f: Any, *a: Any, **k: Any) -> Any:
            result = orig_save(obj, f, *a, **k)
            if isinstance(f, (str, os.PathLike)) and not run.ended and not _busy():
                with _recording():
                    try:
                        run.log_model(f, name=_model_name(f), saved=obj)
                    except Exception as exc:  # noqa: BLE001
                        _warn(f"the checkpoint {f}", exc)
            return result

        @functools.wraps(orig_load)
        def load(f: Any, *a: Any, **k: Any) -> Any:
            result = orig_load(f, *a, **k)  # loaded first: its weights give the checkpoint's identity
            if isinstance(f, (str, os.PathLike)) and not run.ended and not _busy() and os.path.exists(f):
                with _recording():
                    try:
                        run.use_model(f, loaded=result)  # a blocked checkpoint never reaches the script
                    except PolicyViolation:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        _warn(f"the loaded checkpoint {f}", exc)
            return result

        torch.save, torch.load = save, load

        def undo() -> None:
            torch.save, torch.load = orig_save, orig_load

        self._undo.append(undo)

    # -- optimizers --------------------------------------------------------------------------------
    def _hook_optimizers(self, torch: Any) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def after_step(opt: Any, args: Any, kwargs: Any) -> None:
            info = self.optimizers.get(id(opt))
            if info is None:
                info = self.optimizers[id(opt)] = {"class": type(opt).__name__, "steps": 0}
                try:
                    index = len(self.optimizers) - 1
                    prefix = "optimizer" if index == 0 else f"optimizer{index}"
                    self.run.log_param(prefix, type(opt).__name__)
                    group = opt.param_groups[0]
                    for key, value in sorted(group.items()):
                        if key != "params" and isinstance(value, (int, float, bool, str, tuple)):
                            self.run.log_param(f"{prefix}.{key}", str(value) if isinstance(value, tuple) else value)
                except Exception as exc:  # noqa: BLE001
                    _warn("the optimizer's hyperparameters", exc)
            info["steps"] += 1

        handle = register_optimizer_step_post_hook(after_step)
        self._undo.append(handle.remove)

    def _summarise(self) -> None:
        if self.optimizers:
            self.run.add_run_attributes({"p4t:optimizerSteps": sum(i["steps"] for i in self.optimizers.values())})


_COUNTER = re.compile(r"[-_.]?(epoch|ep|step|iter|it|e|s|v)?[-_.]?\d+$", re.IGNORECASE)


def _model_name(f: Any) -> str:
    """The model a checkpoint file is a version of: ``mnist-epoch2.pt`` -> ``mnist`` (so versions chain)."""
    stem = Path(f).stem
    base = _COUNTER.sub("", stem) or stem
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base).strip("_.-")
    return safe or "checkpoint"


def reset() -> None:
    """Nothing is kept between runs (the data-path hooks belong to the run: ``record.datapaths``)."""
