"""Zero-code capture for ``prov4torch run``: patches installed for one run, removed at its end.

What is captured from an unmodified script:
* argv as parameters (``--key value``, ``--key=value``, ``--flag``);
* every DataLoader's dataset when its first batch is requested — recorded, policy-checked
  (a blocked dataset raises before that batch exists), samples/batches/epochs counted;
* optimizers: class and hyperparameters at their first step, and the step count
  (torch's own global step hook, no patching);
* ``torch.save(obj, path)`` outputs as checkpoints, ``torch.load(path)`` inputs as used
  checkpoints (by sha256, so lineage joins across runs); TorchScript's ``torch.jit.save``/``torch.jit.load``
  the same way (a scripted model holds the weights it was scripted from: the same model id).

Patched functions return what the originals return and raise what they raise: a failure
to *record* is a warning; only a policy violation stops the script, on purpose.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PolicyViolation
from ..patching import Patches
from ..record.context import main_script
from ..warn import as_user
from .argv import ArgparseCapture, parse_argv, redact
from .opens import OpenWatch
from .scope import busy, file_path, recording, warn_unrecorded
from .settings import Scheduled, script_literals

if TYPE_CHECKING:
    from ..record.run import Run


class Autolog:
    """Installs the patches for ``run``; ``remove()`` puts every original back."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.patches = Patches()
        self.optimizers: dict[int, dict[str, Any]] = {}
        self.scheduled = Scheduled(lambda name, value, step: run.log_metric(name, value, step=step,
                                                                             context="training"))

    def install(self, argv: Sequence[str],
                extra: Sequence[tuple[Callable[[Run], Callable[[], None]], str]] = ()) -> None:
        """Install the patches, then each ``(install, what)`` of ``extra`` (another process hook, say)."""
        try:
            params = parse_argv(argv)
            if params:
                self.run.log_params({name: redact(name, v) for name, v in
                                     ((f"argv.{k}" if not k.startswith("argv.") else k, v) for k, v in params.items())})
        except Exception as exc:  # noqa: BLE001
            warn_unrecorded("the command-line arguments", exc)
        self.patches.add(ArgparseCapture(self._log_namespace).install())
        import torch

        self._patch_save_load(torch)
        self._hook_optimizers(torch)
        from .frameworks import install_framework_hooks

        for install, what in ((install_framework_hooks, "the framework hooks"), *extra):
            try:
                self.patches.add(install(self.run))
            except Exception as exc:  # noqa: BLE001 - capture that cannot install never stops the script
                warn_unrecorded(what, exc)
        self.run.on_end(lambda _run: self._summarise())

    def _log_namespace(self, namespace: dict[str, Any]) -> None:
        """argparse's full namespace, defaults included, as ``args.*`` parameters (secrets redacted)."""
        for key, value in sorted(namespace.items()):
            name = "args." + "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(key))
            with contextlib.suppress(Exception):  # a value changed by a second parse: the first one stays
                self.run.log_param(name, redact(name, value))

    def remove(self) -> None:
        self.patches.restore()

    # -- torch.save / torch.load, torch.jit.save / torch.jit.load ----------------------------------------
    def _patch_save_load(self, torch: Any) -> None:
        """``torch.save``/``torch.load``, and TorchScript's ``torch.jit.save``/``torch.jit.load`` (a scripted
        model exported for serving holds the same weights: the same model id, its lineage found by path)."""
        for owner in (torch, torch.jit):
            self.patches.replace(owner, "save", self._saver)
            self.patches.replace(owner, "load", self._loader)

    def _saver(self, orig_save: Callable[..., Any]) -> Callable[..., Any]:
        run = self.run

        @functools.wraps(orig_save)
        def save(obj: Any, f: Any, *a: Any, **k: Any) -> Any:
            result = as_user(orig_save, obj, f, *a, **k)
            path = file_path(f)
            if path is not None and not run.ended and not busy():
                with recording():
                    try:
                        if not isinstance(f, (str, os.PathLike)):
                            with contextlib.suppress(Exception):
                                f.flush()  # an open file: its bytes on disk before they are hashed
                        run.record_saved(path, obj)
                    except Exception as exc:  # noqa: BLE001
                        warn_unrecorded(f"the checkpoint {path}", exc)
            elif path is None and not run.ended and not busy() and OpenWatch.active is not None:
                with recording():  # into a buffer: followed to the file its bytes are written to
                    try:
                        OpenWatch.active.saved_to_buffer(f, obj)
                    except Exception as exc:  # noqa: BLE001
                        warn_unrecorded("a checkpoint saved to a buffer", exc)
            return result

        return save

    def _loader(self, orig_load: Callable[..., Any]) -> Callable[..., Any]:
        run = self.run

        @functools.wraps(orig_load)
        def load(f: Any, *a: Any, **k: Any) -> Any:
            result = as_user(orig_load, f, *a, **k)  # loaded first: what it holds says what it is
            path = file_path(f)
            if path is not None and not run.ended and not busy() and os.path.exists(path):
                with recording():
                    try:
                        run.record_loaded(path, result)  # a blocked checkpoint or dataset never reaches the script
                    except PolicyViolation:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        warn_unrecorded(f"the loaded file {path}", exc)
            elif path is None and not run.ended and not busy() and OpenWatch.active is not None:
                OpenWatch.active.loaded_from_buffer(f, result)  # warns itself; a policy violation propagates
            return result

        return load

    # -- optimizers --------------------------------------------------------------------------------
    def _hook_optimizers(self, torch: Any) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def after_step(opt: Any, args: Any, kwargs: Any) -> None:
            info = self.optimizers.get(id(opt))
            if info is None:
                if not self.optimizers:
                    self._script_settings()  # the configurator pattern: the script's literals as they are now
                index = len(self.optimizers)
                prefix = "optimizer" if index == 0 else f"optimizer{index}"
                info = self.optimizers[id(opt)] = {"class": type(opt).__name__, "steps": 0, "prefix": prefix}
                try:
                    self.run.log_param(prefix, type(opt).__name__)
                    group = opt.param_groups[0]
                    for key, value in sorted(group.items()):
                        if key != "params" and isinstance(value, (int, float, bool, str, tuple)):
                            self.run.log_param(f"{prefix}.{key}", str(value) if isinstance(value, tuple) else value)
                except Exception as exc:  # noqa: BLE001
                    warn_unrecorded("the optimizer's hyperparameters", exc)
            info["steps"] += 1
            try:
                self.scheduled.step(info["prefix"], opt, info["steps"])
            except Exception as exc:  # noqa: BLE001 - a param group without numbers: nothing to follow
                warn_unrecorded("the optimizer's scheduled hyperparameters", exc)

        handle = register_optimizer_step_post_hook(after_step)
        self.patches.add(handle.remove)

    def _script_settings(self) -> None:
        """The main script's module-level literals at the first optimizer step (``settings.script_literals``)."""
        try:
            main = sys.modules.get("__main__")
            params, overridden = script_literals(main_script(), vars(main) if main is not None else {})
            self.run.log_params(params)
            if overridden:
                self.run.add_run_attributes({"p4t:configOverridden": overridden})
        except Exception as exc:  # noqa: BLE001 - telemetry never stops training
            warn_unrecorded("the script's settings", exc)

    def _summarise(self) -> None:
        if self.optimizers:
            self.run.add_run_attributes({"p4t:optimizerSteps": sum(i["steps"] for i in self.optimizers.values())})
