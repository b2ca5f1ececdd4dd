"""DataLoader construction for training: worker count, pinned memory, and resuming mid-epoch.

A resumed run continues at batch ``k`` of an epoch. Iterating the loader and throwing away the
first ``k`` batches would decode (and augment) every one of their images; :class:`ResumableBatchSampler`
instead yields an *empty* index list for each of them, so those positions cost nothing and the
loader's length and batch numbering stay those of the whole epoch (batch ``i`` of a resumed epoch
holds exactly the images of batch ``i`` of an uninterrupted one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from regioncap.data.dataset import collate_fn

MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """DataLoader worker processes when none are asked for: min(4, CPUs this process may use), the CPUs
    shared among the processes ``torchrun`` starts on this node (``LOCAL_WORLD_SIZE``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // local))


class ResumableBatchSampler(BatchSampler):
    """A BatchSampler whose first ``skip`` batches of the next epoch are empty (nothing is loaded).

    Set ``skip`` before iterating (e.g. to the checkpoint's ``batch_in_epoch``); it applies to one
    epoch and resets to 0. ``set_epoch`` is passed on to the wrapped sampler (DistributedSampler).
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for i, batch in enumerate(super().__iter__()):
            yield [] if i < skip else batch


def make_train_loader(dataset, batch_size: int, sampler: Sampler, workers: int | None = None,
                      device: torch.device | str = "cpu", pin_memory: bool | None = None) -> DataLoader:
    """The training DataLoader: ``collate_fn`` batches, ``workers`` processes (None: ``default_workers()``),
    pinned memory (None: when training on CUDA; faster, asynchronous host-to-device copies), and a
    :class:`ResumableBatchSampler` reachable as ``loader.batch_sampler``. A skipped (empty) batch
    collates to ``([], [], text with no rows)``."""
    workers = default_workers() if workers is None else workers
    return DataLoader(dataset, batch_sampler=ResumableBatchSampler(sampler, batch_size), collate_fn=collate_fn,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.device(device).type == "cuda" if pin_memory is None else pin_memory)
