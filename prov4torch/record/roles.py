"""Which role a DataLoader's data has, from how the loader behaves: the rules alone (no torch, no hooks).

``record.datapaths`` observes loaders and asks these rules; ``docs/design-notes.md`` states them for users.

A role comes from behaviour (the rule, also in docs/design-notes.md): a loader whose sampler shuffles — its
sampler, its batch sampler's sampler, or a wrapper's (accelerate, Lightning, the HF Trainer wrap them) — is
training data when its first batch is fetched with gradients on (shuffled under ``no_grad``/``inference_mode``:
a random subset of batches for an estimate, karpathy/makemore's ``evaluate``, goes on to the rules below); else
a torchvision-style ``train`` flag says training/testing; else a ``split`` attribute
(``validation``/``val``/``dev``, ``test``); else ``evaluation`` when its first batch is fetched with gradients off
(``torch.no_grad``, ``inference_mode``), ``input`` (models derive from it, the policy judges it by the run's
purpose) when they are on. An inferred role that is not training becomes ``training`` as soon as an optimizer steps
(in a script without one, a backward pass) between two of the loader's batches (an unshuffled or streaming training
loader; a test split trained on): recorded, and checked by the policy before the next batch. An ``input`` loader
read to its end without a step is ``evaluation`` (evaluated with gradients on); either way the batches already
delivered count under the role found. ``evaluation`` data is testing data (EU AI Act Art. 3(32)) unless a training
decision follows it -- an optimizer step after it was read (the loop goes on training: its metric could steer it,
an early stop or a best-checkpoint choice), or a plateau scheduler reading a metric -- then it is validation data
(Art. 3(30)), and so is every later pass of it: recorded as such, and checked by the policy then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHUFFLING = ("RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler")


def batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (or length of a list)."""
    if hasattr(batch, "shape") and getattr(batch, "shape", None):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        for v in batch.values():
            return batch_size(v)
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if hasattr(first, "shape") and getattr(first, "shape", None):
            return int(first.shape[0])
        return len(batch) if not isinstance(first, (list, tuple)) else batch_size(first)
    return 1


def _shuffles(sampler: Any, depth: int = 0) -> bool:
    if sampler is None or depth > 4:
        return False
    name = type(sampler).__name__
    if name in SHUFFLING or ("Distributed" in name and getattr(sampler, "shuffle", False)):
        return True
    return any(_shuffles(getattr(sampler, attr, None), depth + 1) for attr in ("sampler", "batch_sampler"))


def infer_role(loader: Any, grad_enabled: bool = True) -> str:
    """The role of a DataLoader's data, from how the loader behaves (see the module docstring)."""
    if grad_enabled and any(_shuffles(getattr(loader, attr, None)) for attr in ("sampler", "batch_sampler")):
        return "training"
    dataset = getattr(loader, "dataset", None)
    train = getattr(dataset, "train", None)
    if isinstance(train, bool):
        return "training" if train else "testing"
    split = str(getattr(dataset, "split", "") or "").lower()
    if split in ("validation", "val", "dev", "valid"):
        return "validation"
    if split.startswith("test"):
        return "testing"
    if split.startswith("train"):
        return "training"
    return "input" if grad_enabled else "evaluation"


TRAINING_ROLES = frozenset({"training", "fine-tuning"})


def settled(role: str, *, stepped: bool) -> str | None:
    """The role of a loader whose role was inferred, once read to its end: stepped on after its last batch, it was
    training data; read with gradients on (``input``) but never stepped on, it was evaluation data; else as
    inferred (None)."""
    if stepped:
        return "training"
    return "evaluation" if role == "input" else None
