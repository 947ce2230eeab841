"""Watching data on its way to the script: DataLoader iterators and Dataset item access.

Installed for a run under ``prov4torch run`` and whenever a policy is in force (``start_run(policy=...)``),
removed when the run ends. Two hooks, each gating before data reaches the caller:

* every DataLoader iterator (also of DataLoader subclasses and of framework wrappers that build one):
  before its first batch the dataset is attached (identity, tags, policy check) and the policy gate
  asked; batches and samples are counted per dataset and role; once the run is BLOCKED no iterator
  yields again, even one opened before the block or before the run started;
* every ``torch.utils.data.Dataset`` subclass's ``__getitem__`` and ``__iter__`` (classes defined before
  the run and after it): the first access to a dataset that no DataLoader attached attaches it with
  role ``input``, so indexing or iterating ``loader.dataset`` directly is gated too.

The role a loader's data gets is decided by ``roles`` (pure rules, no torch); here it is only observed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import PolicyViolation
from ..patching import Patches
from ..warn import as_user, warn
from .roles import TRAINING_ROLES, batch_size, infer_role, settled
from .signals import from_signal_handler


class DataRun(Protocol):
    """What the hooks need of a run: whether it is over, and where data goes."""

    @property
    def ended(self) -> bool: ...

    @property
    def disabled(self) -> bool: ...

    def log_dataset(self, dataset_or_path: Any, name: str | None = None, role: str = "training",
                    source: str | None = None, **tags: Any) -> str: ...

    def gate(self, dataset_id: str) -> None: ...

    def count_usage(self, dataset_id: str, role: str, samples: int = 0, batches: int = 0,
                    epochs: int = 0, reads: int = 0) -> None: ...

    def on_end(self, callback: Any) -> None: ...

# loader -> its TrackedLoader: zero-code capture leaves these to track(), which knows their name, role and tags
TRACKED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def is_tracked(loader: Any) -> bool:
    return _weakly_in(TRACKED, loader)


def _weakly_in(collection: Any, obj: Any) -> bool:
    """``obj in`` a weak-keyed collection; False for an object that cannot be weakly referenced."""
    try:
        return obj in collection
    except TypeError:
        return False


REPORT_S = 1.0  # how often a loader's usage so far goes to the journal while it is read (the journal's own pace)


def _warn(what: str, exc: BaseException) -> None:
    """In an ``except`` block: one warning; an exception a signal handler raised there is the script's."""
    if from_signal_handler(exc):
        raise exc
    warn(f"prov4torch could not record {what}: {type(exc).__name__}: {exc}")


class _LoaderState:
    """Per-iterator bookkeeping: which dataset, how much of it went by."""

    def __init__(self, owner: DataPaths, dataset_id: str | None, role: str, loader: Any = None) -> None:
        self.owner = owner
        self.dataset_id = dataset_id
        self.role = role
        # an inferred role that training would change: the loader, and the optimizer steps counted at its first
        # batch (any step since came between two of its batches)
        self.loader = loader if loader is not None and dataset_id is not None and role not in TRAINING_ROLES \
            else None
        self.steps = owner.steps
        self.samples = 0  # not yet counted in the run's totals
        self.batches = 0
        self.reported = (0, 0, 0)  # (samples, batches, epochs) of this iterator already counted under its role
        self.epochs = 0  # epochs not yet counted (taken back by ``retract``)
        self.due = 0.0  # when the counts are next reported
        self.started = False
        self.done = False
        if dataset_id is not None:
            owner.open_states[id(self)] = self  # until it finishes: its last counts are reported at the run's end

    def count(self, batch: Any) -> None:
        if self.dataset_id is None:
            return
        self.batches += 1
        try:
            self.samples += batch_size(batch)
        except Exception:  # noqa: BLE001
            self.samples += 1
        if not self.started:  # data was delivered: the record says so from the first batch on
            self.started = True
            self.report(0)
        elif time.monotonic() >= self.due:  # and about once a second after: a killed run's record is not stale
            self.report(0)

    def finish(self, epoch_done: bool) -> None:
        if self.dataset_id is None or self.done:
            return
        self.done = True
        self.owner.open_states.pop(id(self), None)
        self.report(int(epoch_done))

    def report(self, epochs: int, closing: bool = False) -> None:
        """The counts since the last report, to the run (``closing``: from the run's own end, which has begun)."""
        self.due = time.monotonic() + REPORT_S
        run = self.owner.run
        epochs += self.epochs
        if self.dataset_id is not None and (closing or not run.ended):
            run.count_usage(self.dataset_id, self.role, self.samples, self.batches, epochs)
            done = self.reported
            self.reported = (done[0] + self.samples, done[1] + self.batches, done[2] + epochs)
        self.samples = self.batches = self.epochs = 0

    def retract(self) -> None:
        """What this iterator delivered so far, taken back from its role's totals and pending again (it is
        counted under the role it turns out to have had)."""
        samples, batches, epochs = self.reported
        run = self.owner.run
        if self.dataset_id is not None and (batches or epochs) and not run.ended:
            run.count_usage(self.dataset_id, self.role, -samples, -batches, -epochs)
        self.samples, self.batches, self.epochs = self.samples + samples, self.batches + batches, self.epochs + epochs
        self.reported = (0, 0, 0)


class DataPaths:
    """The hooks of one run (see the module docstring); ``install()`` / ``remove()``."""

    active: DataPaths | None = None  # the installed one (one run per process)

    def __init__(self, run: DataRun) -> None:
        self.run = run
        self.seen: dict[int, tuple[Any, str]] = {}  # id(dataset) -> (dataset kept alive, id)
        self.loader_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.loader_of: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.state_of: weakref.WeakKeyDictionary[Any, _LoaderState] = weakref.WeakKeyDictionary()
        self.local = threading.local()
        self.stage: str | None = None  # a framework's stage (Lightning, the HF Trainer): the role of its data
        self.steps = 0  # training steps taken in this process while installed (optimizer steps; see backward_done)
        self.optimizer_steps = 0
        self.trained_on: weakref.WeakSet[Any] = weakref.WeakSet()  # loaders an optimizer stepped between batches of
        # iterators not read to their end (a loop that breaks, an infinite sampler): their counts since the last
        # periodic report go to the record when the run ends, so the usage is exact, not a second stale
        self.open_states: dict[int, _LoaderState] = {}
        self.step_listeners: list[Callable[[], None]] = []
        self.evaluated: list[tuple[_LoaderState, Any]] = []  # evaluation passes no training decision followed yet
        self.validating: set[str] = set()  # datasets a training decision followed: each later pass is validation
        self.patches = Patches()

    # -- install / remove ------------------------------------------------------------------------------
    def install(self) -> DataPaths:
        if DataPaths.active is not None:
            return DataPaths.active
        from torch.optim.optimizer import register_optimizer_step_post_hook
        from torch.utils.data import Dataset
        from torch.utils.data import dataloader as dl

        self._patch_loader(dl._BaseDataLoaderIter)
        self.patches.add(register_optimizer_step_post_hook(self._optimizer_stepped).remove)
        import torch.autograd

        self.patches.replace(torch.autograd, "backward", functools.partial(_backward_hook, self))
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        self.patches.replace(ReduceLROnPlateau, "step", functools.partial(_deciding, self))
        for cls in _subclasses(Dataset):
            self.wrap(cls)
        paths = self

        def make(_original: Any) -> Any:
            def __init_subclass__(cls: type, /, **kwargs: Any) -> None:
                super(Dataset, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
                paths.wrap(cls)
            return classmethod(__init_subclass__)

        self.patches.replace(Dataset, "__init_subclass__", make)
        self.run.on_end(lambda _run: self.report_open())
        DataPaths.active = self
        return self

    def report_open(self) -> None:
        """At the run's end: the counts of every iterator not read to its end, as of now."""
        for state in list(self.open_states.values()):
            if state.samples or state.batches:
                state.report(0, closing=True)

    def remove(self) -> None:
        self.patches.restore()
        if DataPaths.active is self:
            DataPaths.active = None

    def _patch_loader(self, base: Any) -> None:
        paths = self

        def make_init(orig_init: Callable[..., None]) -> Callable[..., None]:
            @functools.wraps(orig_init)
            def __init__(it: Any, loader: Any, *a: Any, **k: Any) -> None:
                as_user(orig_init, it, loader, *a, **k)  # torch's warnings (pin_memory...) keep their place
                paths.loader_of[it] = loader
            return __init__

        self.patches.replace(base, "__init__", make_init)
        self.patches.replace(base, "__next__", lambda orig_next: _next_hook(paths, orig_next))

    def wrap(self, cls: type) -> None:
        """Hook the item access of a Dataset class (its own __getitem__/__iter__)."""
        if cls.__module__.startswith("torch.utils.data.datapipes"):
            return  # datapipes have their own __iter__ machinery
        for name, hook in (("__getitem__", _item_hook), ("__iter__", _iter_hook)):
            if inspect.isfunction(cls.__dict__.get(name)):  # not a static/class method, a C slot, or inherited
                self.patches.replace(cls, name, hook, own=True)

    # -- what the hooks do -----------------------------------------------------------------------------
    def _optimizer_stepped(self, *_: Any) -> None:
        self.optimizer_steps += 1
        self._stepped()

    def backward_done(self) -> None:
        """A backward pass. In a script that updates its weights by hand (``p.data.add_(p.grad, alpha=-lr)``, as
        pytorch/examples' word_language_model does) it is the only sign of a training step: it counts as one
        until an optimizer has stepped in this process, after which optimizer steps alone count."""
        if not self.optimizer_steps:
            self._stepped()

    def _stepped(self, *_: Any) -> None:
        self.steps += 1
        self.validated()
        for listener in self.step_listeners:  # files read as data (autolog.reads): a step makes them training
            listener()

    def next_state(self, it: Any) -> _LoaderState:
        """An iterator's state before its next batch: started (attached, gated) at its first, reclassified if an
        optimizer stepped since its last, gated; may raise PolicyViolation (the batch is not delivered)."""
        state = self.state_of.get(it)
        if state is None:
            loader = self.loader_of.get(it)
            # an iterator opened before the hooks were installed: its dataset is torch's attribute
            state = self.state_of[it] = (self.start(loader) if loader is not None
                                         else self.start_unknown(getattr(it, "_dataset", None)))
        elif state.dataset_id is not None:
            if state.loader is not None and state.steps != self.steps:
                self.trained(state)
            self.run.gate(state.dataset_id)  # nothing more once the run is BLOCKED
        return state

    def trained(self, state: _LoaderState) -> None:
        """An optimizer stepped between two batches of a loader whose role was inferred as something else: its
        data is training data from now on, the batches before the step included (they were stepped on)."""
        self._reclassify(state, "training")

    def settle(self, state: _LoaderState) -> None:
        """A loader whose role was inferred, read to its end: its role now (``roles.settled``); evaluation data
        until a training decision follows (``validated``)."""
        loader = state.loader
        role = settled(state.role, stepped=state.steps != self.steps)
        if role is not None:
            self._reclassify(state, role)
        if state.role == "evaluation" and state.dataset_id in self.validating:
            self._reclassify(state, "validation", loader)  # a later pass of data already steering training
        elif state.role == "evaluation":
            self.evaluated.append((state, loader))

    def validated(self) -> None:
        """A training decision is being taken (an optimizer step, a plateau scheduler reading its metric): data
        evaluated since the last one informed it, so it is validation data (``roles`` states the rule). May raise
        PolicyViolation (the data's consent does not cover validation)."""
        pending, self.evaluated = self.evaluated, []
        pending += [(s, s.loader) for s in list(self.open_states.values())
                    if s.role == "evaluation" and s.loader is not None and (s.batches or s.reported[1])]
        for state, loader in pending:
            if state.role == "evaluation" and loader is not None:
                self._reclassify(state, "validation", loader)
                if state.dataset_id is not None:
                    self.validating.add(state.dataset_id)

    def _reclassify(self, state: _LoaderState, role: str, loader: Any = None) -> None:
        """What the iterator delivered so far (and delivers from now on) counted under ``role`` instead: the
        dataset attached again under it (recorded, and checked by the policy: a deny raises here, after the
        record says what went by)."""
        loader, state.loader = loader if loader is not None else state.loader, None
        state.retract()
        try:
            dataset_id = self.run.log_dataset(loader, role=role)
        except PolicyViolation:
            state.role = role
            state.finish(epoch_done=False)  # the record says what was used so before the block
            raise
        except Exception as exc:  # noqa: BLE001
            state.finish(epoch_done=False)
            _warn(f"a DataLoader's data as {role} data", exc)
            return
        if role == "training":
            with contextlib.suppress(TypeError):
                self.trained_on.add(loader)
        state.dataset_id, state.role = dataset_id, role
        state.report(0)

    def start(self, loader: Any) -> _LoaderState:
        run = self.run
        tracked = TRACKED.get(loader) if loader is not None and is_tracked(loader) else None
        if loader is None or run.ended or run.disabled or (tracked is not None and tracked.iterating):
            return _LoaderState(self, None, "")  # iterated through track(): it records itself
        # a tracked loader iterated directly (track(loader).loader) keeps the name, role and tags it was given
        inferred = tracked is None and self.stage is None
        role = tracked.role if tracked is not None else self.stage or (
            "training" if _weakly_in(self.trained_on, loader) else infer_role(loader, _grad_enabled()))
        dataset_id = self.loader_ids.get(loader)
        if dataset_id is None:
            try:
                dataset_id = (run.log_dataset(loader, name=tracked.name, role=role, **tracked.tags)
                              if tracked is not None else run.log_dataset(loader, role=role))
            except PolicyViolation:
                raise
            except Exception as exc:  # noqa: BLE001
                _warn("a DataLoader's dataset", exc)
                return _LoaderState(self, None, role)
            self.loader_ids[loader] = dataset_id
            dataset = getattr(loader, "dataset", None)
            if dataset is not None:
                self.seen[id(dataset)] = (dataset, dataset_id)
        run.gate(dataset_id)
        return _LoaderState(self, dataset_id, role, loader if inferred else None)

    def start_unknown(self, dataset: Any) -> _LoaderState:
        """An iterator whose loader was never seen (opened before the run): its dataset, role ``input``."""
        if dataset is None or self.run.ended or self.run.disabled:
            return _LoaderState(self, None, "")
        entry = self.seen.get(id(dataset))
        did = entry[1] if entry is not None and entry[0] is dataset else self.run.log_dataset(dataset, role="input")
        self.seen[id(dataset)] = (dataset, did)
        self.run.gate(did)
        return _LoaderState(self, did, "input")

    def inside_item(self) -> bool:
        """Whether this thread is inside a dataset's ``__getitem__`` (what it reads is that dataset's)."""
        return bool(getattr(self.local, "depth", 0))

    def item(self, dataset: Any) -> None:
        """First access to a dataset outside a DataLoader: attach it (role ``input``), and gate."""
        if getattr(self.local, "depth", 0) or self.run.ended or in_loader_worker():
            return  # a DataLoader worker's items: its loader was attached and gated in the process reading it
        entry = self.seen.get(id(dataset))
        if entry is None or entry[0] is not dataset:
            self.local.depth = getattr(self.local, "depth", 0) + 1
            try:
                did = self.run.log_dataset(dataset, role="input")
            except PolicyViolation:
                raise
            except Exception as exc:  # noqa: BLE001
                _warn("a dataset read directly", exc)
                return
            finally:
                self.local.depth -= 1
            self.seen[id(dataset)] = (dataset, did)
            entry = self.seen[id(dataset)]
        self.run.gate(entry[1])


def _next_hook(paths: DataPaths, orig_next: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(orig_next)
    def __next__(it: Any) -> Any:
        state = paths.next_state(it)
        paths.local.depth = getattr(paths.local, "depth", 0) + 1  # items fetched here are this loader's
        try:
            batch = orig_next(it)
        except StopIteration:
            if state.loader is not None:
                paths.settle(state)  # its role, now that all of it went by; may raise PolicyViolation
            state.finish(epoch_done=True)
            raise
        finally:
            paths.local.depth -= 1
        state.count(batch)
        return batch

    return __next__


def _deciding(paths: DataPaths, orig: Callable[..., Any]) -> Callable[..., Any]:
    """A scheduler step that reads a metric to decide (``ReduceLROnPlateau``): what was evaluated is validation."""
    @functools.wraps(orig)
    def step(scheduler: Any, *args: Any, **kwargs: Any) -> Any:
        if DataPaths.active is paths:
            paths.validated()
        return orig(scheduler, *args, **kwargs)

    return step


def _item_hook(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def __getitem__(self: Any, index: Any) -> Any:
        paths = DataPaths.active
        if paths is None:
            return orig(self, index)
        paths.item(self)
        paths.local.depth = getattr(paths.local, "depth", 0) + 1  # nested datasets (Subset) are not separate reads
        try:
            return orig(self, index)
        finally:
            paths.local.depth -= 1

    return __getitem__


def _iter_hook(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def __iter__(self: Any) -> Any:
        paths = DataPaths.active
        if paths is not None:
            paths.item(self)
        return orig(self)

    return __iter__


def _backward_hook(paths: DataPaths, original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.autograd.backward`` (``Tensor.backward`` calls it): the pass, then ``paths.backward_done``."""
    @functools.wraps(original)
    def backward(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if not paths.optimizer_steps and not in_loader_worker():  # once an optimizer steps: one comparison
            paths.backward_done()
        return result
    return backward


def in_loader_worker() -> bool:
    """Whether this process is a DataLoader worker (any other forked process is a helper, gated as the run is)."""
    data = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None


def _grad_enabled() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch.is_grad_enabled()) if torch is not None else True


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    stack: list[type] = list(cls.__subclasses__())
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c.__subclasses__())
    return out
