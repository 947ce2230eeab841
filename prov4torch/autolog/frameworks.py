"""Zero-code capture of real training stacks, installed when (and only if) the script imports them.

* PyTorch Lightning (``pytorch_lightning``, ``lightning``): checkpoints through its checkpoint IO
  (``TorchCheckpointIO.save_checkpoint``/``load_checkpoint``: the ``.ckpt`` that ``ModelCheckpoint``,
  ``trainer.save_checkpoint`` and a resume through ``ckpt_path`` write and read), and the
  ``ProvLightningCallback`` added to every ``Trainer`` (hparams, stages, epochs, steps, samples);
* transformers: ``save_pretrained``/``from_pretrained`` of a local directory as one checkpoint (sharded
  safetensors and their index included), and the ``ProvCallback`` added to every ``Trainer``
  (``TrainingArguments``, logged metrics, checkpoints, rank);
* accelerate: ``Accelerator.save_model`` as one checkpoint;
* safetensors: ``save_file``/``load_file``/``safe_open`` outside those;
* NumPy: ``load``/``loadtxt``/``genfromtxt`` of a file as a dataset read by the script (role ``input``);
* Hugging Face ``datasets``: ``load_dataset``/``load_from_disk`` results as datasets (role from the split), with
  the tags of the local files they were built from; a ``map``/``filter``/... or concatenation of one carries its tags;
* ``open()``: files under ``--data`` directories, checkpoints written through a buffer (``opens.py``).

A framework save records the checkpoint once: the files it writes inside are not recorded again.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..record.datapaths import DataPaths
from ..record.run import Run
from .imports import ImportHooks
from .opens import OpenWatch
from .reads import FileReads
from .scope import Patcher, busy, file_path, record_inside, record_once, recording
from .settings import constructor_params


class FrameworkHooks:
    """The hooks above for one run, each installed when its framework is imported (``ImportHooks``)."""

    MODULES = (
        (("lightning_fabric.plugins.io.torch_io", "lightning.fabric.plugins.io.torch_io"), "lightning_io"),
        (("pytorch_lightning.trainer.trainer", "lightning.pytorch.trainer.trainer"), "lightning_trainer"),
        (("lightning_fabric.fabric", "lightning.fabric.fabric"), "lightning_fabric"),
        (("transformers.modeling_utils",), "hf_models"),
        (("transformers.trainer",), "hf_trainer"),
        (("accelerate.accelerator",), "accelerate"),
        (("safetensors.torch",), "safetensors_torch"),
        (("safetensors",), "safetensors_root"),
        (("numpy",), "numpy"),
        (("pandas",), "pandas"),
        (("pyarrow.parquet",), "pyarrow_parquet"),
        (("datasets",), "hf_datasets"),
        (("PIL.Image",), "pil"),
    )

    def __init__(self, run: Run, patcher: Patcher) -> None:
        self.run = run
        self.p = patcher
        self.reads = FileReads(run)  # files read as data, and the role their use shows

    def lightning_io(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        io = module.TorchCheckpointIO
        p.after(io, "save_checkpoint", lambda _r, _self, checkpoint, path, *a, **k:
                run.record_saved(str(path), checkpoint) if os.path.exists(str(path)) else None,
                "a Lightning checkpoint")
        p.after(io, "load_checkpoint", lambda result, _self, path, *a, **k:
                run.record_loaded(str(path), result) if os.path.exists(str(path)) else None,
                "a Lightning checkpoint it resumed from")

    def record_arguments(self, original: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                         prefix: str) -> None:
        """Every argument a framework object was built with (``settings.constructor_params``)."""
        for name, value in constructor_params(original, instance, args, kwargs, prefix).items():
            with contextlib.suppress(Exception):  # a second object of the same kind: its first values stay
                self.run.log_param(name, value)

    def lightning_trainer(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        hooks = self

        def make(original: Any) -> Any:
            @functools.wraps(original)
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                from .lightning import with_callback  # here: Lightning is fully imported by now

                original(self, *args, **with_callback(kwargs, run))
                hooks.record_arguments(original, self, args, kwargs, "lightning.trainer")
            return __init__
        p.replace(module.Trainer, "__init__", make)

    def arguments_of(self, cls: Any, prefix: str) -> None:
        """Record every argument ``cls`` is constructed with (Fabric, Accelerator)."""
        hooks = self

        def make(original: Any) -> Any:
            @functools.wraps(original)
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                original(self, *args, **kwargs)
                hooks.record_arguments(original, self, args, kwargs, prefix)
            return __init__
        self.p.replace(cls, "__init__", make)

    def lightning_fabric(self, module: ModuleType) -> None:
        self.arguments_of(module.Fabric, "lightning.fabric")

    def hf_models(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        model = module.PreTrainedModel

        def saved(_r: Any, self: Any, save_directory: Any, *a: Any, **k: Any) -> None:
            run.log_model(str(save_directory), name=Path(str(save_directory)).name or "model", saved=self)

        p.after(model, "save_pretrained", saved, "a transformers model")

        def make_from_pretrained(original: Any) -> Any:
            func = original.__func__

            @functools.wraps(func)
            def from_pretrained(cls: Any, name_or_path: Any, *a: Any, **k: Any) -> Any:
                if busy():
                    return func(cls, name_or_path, *a, **k)
                with recording():
                    result = func(cls, name_or_path, *a, **k)
                if isinstance(name_or_path, (str, os.PathLike)) and os.path.isdir(name_or_path):
                    record_inside(lambda: run.use_model(str(name_or_path)), "a transformers model it loaded")
                return result
            return classmethod(from_pretrained)

        p.replace(model, "from_pretrained", make_from_pretrained)

    def hf_trainer(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        def make(original: Any) -> Any:
            @functools.wraps(original)
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                from .hf import staged, with_callback  # here: transformers is fully imported by now

                original(self, *args, **with_callback(kwargs, run))
                staged(self)
            return __init__
        p.replace(module.Trainer, "__init__", make)

    def accelerate(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        acc = module.Accelerator
        self.arguments_of(acc, "accelerate")
        p.after(acc, "save_model", lambda _r, _self, model, save_directory, *a, **k:
                run.log_model(str(save_directory), name=Path(str(save_directory)).name or "model"),
                "an accelerate model")

    def safetensors_torch(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        p.after(module, "save_file", lambda _r, tensors, filename, *a, **k:
                run.log_model(str(filename), saved=tensors) if isinstance(filename, (str, os.PathLike)) else None,
                "a safetensors file")
        p.after(module, "load_file", lambda result, filename, *a, **k:
                run.record_loaded(str(filename), result) if isinstance(filename, (str, os.PathLike)) else None,
                "a safetensors file it loaded")

    def safetensors_root(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        def make(original: Any) -> Any:
            def safe_open(filename: Any, *a: Any, **k: Any) -> Any:
                if isinstance(filename, (str, os.PathLike)) and os.path.isfile(filename):
                    record_once(lambda: run.use_model(str(filename)), "a safetensors file it opened")
                return original(filename, *a, **k)
            return safe_open
        p.replace(module, "safe_open", make)

    def data_read(self, result: Any, source: Any, *a: Any, **k: Any) -> None:
        """A file read as data by a reader (numpy, pandas, pyarrow): recorded by content, in the role its use
        shows (``autolog.reads``: training once an optimizer steps after it, evaluation under ``no_grad``)."""
        path = file_path(source)
        if path is None or not os.path.isfile(path) or threading.current_thread().name.startswith("prov4torch"):
            return  # (prov4torch's own threads read codecarbon's tables: not the script's data)
        self.reads.read(os.path.abspath(path))
        # what it read carries the file's tags: a tensor made on that memory is the file's data
        self.run.inputs.datasets.read_into(result, path)

    def image_read(self, result: Any, source: Any, *a: Any, **k: Any) -> None:
        """An image opened with PIL outside a dataset's ``__getitem__`` (a dataset recorded as a whole, a
        torchvision ``ImageFolder`` by its root's content, stands for the images it opens): by content, bounded
        per directory (an image folder past ``reads.MAX_FILES_PER_DIR`` files is recorded as the folder)."""
        path = file_path(source)
        if path is None or not os.path.isfile(path) or threading.current_thread().name.startswith("prov4torch"):
            return
        if DataPaths.active is not None and DataPaths.active.inside_item():
            return
        path = os.path.abspath(path)
        self.reads.read_under(path, os.path.dirname(path))

    def pil(self, module: ModuleType) -> None:
        self.p.after(module, "open", self.image_read, "an image opened with PIL.Image.open")

    def numpy(self, module: ModuleType) -> None:
        p = self.p
        for name in ("load", "loadtxt", "genfromtxt", "fromfile"):
            p.after(module, name, self.data_read, f"a file read with numpy.{name}")
        # np.memmap(path, ...): a class; its __new__ is the reader (nanoGPT's token files)
        p.after(module.memmap, "__new__", lambda result, _cls, filename, *a, **k: self.data_read(result, filename),
                "a file mapped with numpy.memmap")

    def pandas(self, module: ModuleType) -> None:
        for name in ("read_csv", "read_parquet", "read_json", "read_feather", "read_table", "read_excel"):
            if hasattr(module, name):
                self.p.after(module, name, self.data_read, f"a file read with pandas.{name}")

    def pyarrow_parquet(self, module: ModuleType) -> None:
        for name in ("read_table", "read_pandas"):
            if hasattr(module, name):
                self.p.after(module, name, self.data_read, f"a file read with pyarrow.parquet.{name}")

    def hf_datasets(self, module: ModuleType) -> None:
        run, p = self.run, self.p
        derive = run.inputs.datasets.derive

        def loaded(result: Any, *a: Any, **k: Any) -> None:
            files = _local_sources(a, k)  # the files it converted: their tags are its tags
            splits = result.items() if isinstance(result, dict) else [(getattr(result, "split", None), result)]
            for split, ds in splits:
                if files:
                    derive(ds, files)
                name = getattr(getattr(ds, "info", None), "dataset_name", None) or "dataset"
                run.log_dataset(ds, name=f"{name}:{split}" if split else name, role=role_of_split(split))

        def made(result: Any, source: Any, *_a: Any, **_k: Any) -> None:
            for out in (result.values() if isinstance(result, dict) else [result]):
                if out is not source:
                    derive(out, [source])

        def combined(result: Any, sources: Any, *_a: Any, **_k: Any) -> None:
            derive(result, list(sources))

        for name in ("load_dataset", "load_from_disk"):
            p.after(module, name, loaded, f"a Hugging Face dataset from {name}")
        for cls in (getattr(module, "Dataset", None), getattr(module, "IterableDataset", None)):
            for name in HF_DERIVATIONS:
                if cls is not None and callable(getattr(cls, name, None)):
                    p.after(cls, name, made, f"a Hugging Face dataset's {name}")
        for name in ("concatenate_datasets", "interleave_datasets"):
            if callable(getattr(module, name, None)):
                p.after(module, name, combined, f"a Hugging Face {name}")


def install_framework_hooks(run: Run) -> Callable[[], None]:
    """Install every hook above for ``run``; the function that removes them all."""
    hooks = ImportHooks()
    p = Patcher()
    installer = FrameworkHooks(run, p)
    for names, method in FrameworkHooks.MODULES:
        for name in names:
            hooks.when_imported(name, getattr(installer, method))
    OpenWatch(run, installer.reads).install(p)
    if DataPaths.active is not None:
        DataPaths.active.step_listeners.append(installer.reads.stepped)
        p.add(lambda: _discard(DataPaths.active, installer.reads.stepped))
    run.on_end(lambda _run: installer.reads.settle())

    def remove() -> None:
        hooks.remove()
        p.restore()

    return remove


# the Hugging Face methods whose result is made from the dataset they are called on (its tags follow)
HF_DERIVATIONS = ("map", "filter", "select", "shuffle", "sort", "train_test_split", "add_column", "remove_columns",
                  "rename_column", "rename_columns", "select_columns", "cast", "cast_column", "flatten",
                  "class_encode_column", "with_format", "with_transform", "to_iterable_dataset", "skip", "take",
                  "batch", "repeat", "shard", "flatten_indices", "align_labels_with_mapping")


def _local_sources(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """The local files and folders a ``load_dataset``/``load_from_disk`` call names (``path``, ``data_dir``,
    ``data_files`` as a string, list or dict of splits; ``dataset_path``), those that exist."""
    named: list[Any] = [*args[:1], kwargs.get("path"), kwargs.get("dataset_path"), kwargs.get("data_dir")]
    files = kwargs.get("data_files")
    for value in (files.values() if isinstance(files, dict) else [files]):
        named += value if isinstance(value, (list, tuple)) else [value]
    out: dict[str, None] = {}  # in order, each once
    for v in named:
        if isinstance(v, (str, os.PathLike)) and not str(v).startswith(("hf://", "http://", "https://")):
            with contextlib.suppress(OSError, ValueError):
                found = [str(v)] if os.path.exists(v) else sorted(itertools.islice(glob.iglob(str(v), recursive=True),
                                                                              MAX_SOURCES))  # lazily: bounded
                out.update(dict.fromkeys(found))  # a pattern ("data/*.csv"): the files it matches
    return list(out)[:MAX_SOURCES]


MAX_SOURCES = 1000  # local files followed for one load_dataset call


def role_of_split(split: Any) -> str:
    s = str(split or "").lower()
    if s.startswith("train"):
        return "training"
    if s.startswith(("val", "dev")):
        return "validation"
    if s.startswith("test"):
        return "testing"
    return "input"


def _discard(paths: Any, listener: Callable[[], None]) -> None:
    if paths is not None and listener in paths.step_listeners:
        paths.step_listeners.remove(listener)
