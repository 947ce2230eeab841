"""Governance across processes: a tensor sent to another process carries the tags its memory carries here.

``torch.multiprocessing`` pickles a tensor for another process (a ``mp.Process`` given a dataset, as Hogwild
training does; a queue) with ``ForkingPickler``: its storage moves to shared memory, which the other process maps at
another address, so the memory notes of ``sharedmem`` do not travel with it, and the data arrives untagged (and is
refused by a policy requiring tags). While a run watches data, the reducer torch registers for ``torch.Tensor`` and
``Parameter`` is wrapped, in the run's own process only: a tensor whose memory carries tags here is rebuilt over
there by ``rebuild``, which notes the rebuilt tensor with those tags when that process records (a helper of the
rank: ``record.helpers``; a run that begins there later, a spawned rank, too). Every other tensor is reduced exactly
as torch does, and the tensor rebuilt is torch's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, Protocol


class MemoryTags(Protocol):
    """What the wrapper needs of a run's dataset identifier (``DatasetIdentifier``)."""

    def memory_governance(self, tensor: Any) -> tuple[str, dict[str, Any]] | None: ...

    def note_memory(self, tensor: Any, where: str, governance: dict[str, Any]) -> None: ...


RECEIVER: list[MemoryTags] = []  # the recording run's, in this process: what a tensor received is noted in
# the tagged tensors this process received (kept, as the run keeps its tagged data): a run that begins here later
# notes them too -- ``torch.multiprocessing.spawn``'s arguments arrive while the process is a helper, before its
# function runs under a run of its rank
RECEIVED: list[tuple[Any, str, dict[str, Any]]] = []
MAX_RECEIVED = 100_000


def install(datasets: MemoryTags) -> Callable[[], None]:
    """Wrap torch's tensor reducer for ``datasets``' process; the undo."""
    from multiprocessing.reduction import ForkingPickler

    import torch
    from torch.multiprocessing import reductions

    original: Callable[[Any], Any] = reductions.reduce_tensor
    pid = os.getpid()

    def reduce_tensor(tensor: Any) -> Any:
        if os.getpid() != pid:  # a forked DataLoader worker sending a batch: as torch does
            return original(tensor)
        try:  # looked up first: torch moves the storage into shared memory, to another address
            found = datasets.memory_governance(tensor)
        except Exception:  # noqa: BLE001 - never in the way of the tensor
            found = None
        if found and tensor.device.type == "cpu" and not tensor.is_shared():
            # what pickling its storage does next (by the same sharing strategy), done first: the memory it moves
            # to is noted here too, for the next process it goes to and for this one's own later use of it
            with contextlib.suppress(Exception):  # never in the way of the tensor: torch's own reducer decides
                tensor.share_memory_()
                datasets.note_memory(tensor, found[0], found[1])
        reduced = original(tensor)
        if not found:
            return reduced
        return rebuild, (reduced[0], reduced[1], found[0], found[1])

    classes = (torch.Tensor, torch.nn.Parameter)
    for cls in classes:
        ForkingPickler.register(cls, reduce_tensor)
    RECEIVER[:] = [datasets]
    for tensor, where, governance in RECEIVED:  # received before this run began (a spawned rank's arguments)
        with contextlib.suppress(Exception):
            datasets.note_memory(tensor, where, governance)

    def undo() -> None:
        for cls in classes:
            ForkingPickler.register(cls, original)
        if RECEIVER and RECEIVER[0] is datasets:
            RECEIVER.clear()

    return undo


def rebuild(rebuild_tensor: Callable[..., Any], args: tuple[Any, ...], where: str, governance: dict[str, Any]) -> Any:
    """In the receiving process: torch's tensor, noted with the tags its memory carried in the sender."""
    tensor = rebuild_tensor(*args)
    where = f"{where} (received from another process)"
    with contextlib.suppress(Exception):  # never in the way of the tensor
        if len(RECEIVED) < MAX_RECEIVED:
            RECEIVED.append((tensor, where, governance))
        if RECEIVER:
            RECEIVER[0].note_memory(tensor, where, governance)
    return tensor
