"""Patches held in memory (RAM or the accelerator's), served in a sampler's order.

A training set's features are small (TIMIT: about 1.8 GB as float32), so holding them where the
model runs makes a batch one ``index_select``: no per-batch file reads, no worker processes, and on
a GPU no host-to-device copies or synchronisation per step. The order is exactly the sampler's
(:class:`~convae_lightning.data.sampler.StratifiedResampler` draws on the host, once per epoch),
so the batches equal those of a ``DataLoader`` over the memory-mapped cache with the same sampler.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from typing import Literal, get_args

import numpy as np
import torch
from torch.utils.data import Sampler, SequentialSampler

log = logging.getLogger(__name__)

#: Where the DataModule keeps the features: ``disk`` (memory-mapped cache, read per batch),
#: ``memory`` (RAM), ``device`` (the trainer's accelerator) or ``auto``.
HoldFeatures = Literal["auto", "disk", "memory", "device"]
HOLD_FEATURES: tuple[str, ...] = get_args(HoldFeatures)
#: ``auto`` holds the features where they take at most this share of the free memory there.
AUTO_SHARE = 0.25

__all__ = ["AUTO_SHARE", "HOLD_FEATURES", "HoldFeatures", "TensorBatches", "choose_hold"]


class TensorBatches:
    """Batches ``(x, y)`` (``(x, y, index)`` with ``with_index``) of tensors on one device, in
    the order of ``sampler``; iterable like a ``DataLoader`` of the same sampler and batch size.

    Lightning calls ``set_epoch`` on :attr:`sampler` before each epoch, as for a ``DataLoader``.
    The sampler's indices go to the device once per epoch; a :class:`SequentialSampler` needs no
    indices at all (batches are slices).

    Args:
        features: ``(N, C, F, T)`` patches.
        labels: ``(N,)`` class ids, on the same device.
        sampler: Yields the row indices of one epoch.
        batch_size: Rows per batch (the last batch may be smaller).
        with_index: Add the rows' indices (int64) as a third element.
        dataset: What the rows come from, kept as :attr:`dataset` for code that inspects
            loaders as it would a ``DataLoader``.
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        sampler: Sampler,
        batch_size: int,
        with_index: bool = False,
        dataset: object | None = None,
    ) -> None:
        if features.device != labels.device:
            raise ValueError(f"features on {features.device} but labels on {labels.device}")
        self.features = features
        self.labels = labels
        self.sampler = sampler
        self.batch_size = batch_size
        self.with_index = with_index
        self.dataset = dataset
        self.batch_sampler = None  # as a DataLoader with a sampler (Lightning reads both)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        device = self.features.device
        if isinstance(self.sampler, SequentialSampler):
            for start in range(0, len(self.sampler), self.batch_size):
                rows = slice(start, min(start + self.batch_size, len(self.sampler)))
                batch = (self.features[rows], self.labels[rows])
                if self.with_index:
                    index = torch.arange(rows.start, rows.stop, device=device)
                    batch = (*batch, index)
                yield batch
            return
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        if device.type == "cpu":
            # numpy's gather runs on the calling thread: a 3 MB batch in ~0.1 ms, where an
            # OpenMP-parallel index_select waits for every thread of the pool (~10 ms when
            # another process holds a core).
            features, labels = self.features.numpy(), self.labels.numpy()
            for start in range(0, len(order), self.batch_size):
                index = order[start : start + self.batch_size]
                batch = (torch.from_numpy(features[index]), torch.from_numpy(labels[index]))
                yield (*batch, torch.from_numpy(index)) if self.with_index else batch
            return
        for index in torch.from_numpy(order).to(device).split(self.batch_size):
            batch = (self.features.index_select(0, index), self.labels.index_select(0, index))
            yield (*batch, index) if self.with_index else batch


def _available_ram() -> int | None:
    try:
        for line in open("/proc/meminfo").read().splitlines():  # noqa: SIM115
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_hold(
    requested: HoldFeatures, num_bytes: int, device: torch.device, processes: int = 1
) -> Literal["disk", "memory", "device"]:
    """Resolve ``auto``: the accelerator when on one and the features take at most
    :data:`AUTO_SHARE` of its free memory, else RAM on the same terms, else the disk; an explicit
    choice is kept (``device`` on the CPU is ``memory``).

    Args:
        requested: ``auto``, ``disk``, ``memory`` or ``device``.
        num_bytes: Size of the features to hold (one process's share).
        device: The device the model trains on.
        processes: Processes on this machine holding a copy each (DDP).
    """
    if requested not in HOLD_FEATURES:
        raise ValueError(f"hold_features must be one of {list(HOLD_FEATURES)}, got {requested!r}")
    on_accelerator = device.type != "cpu"
    if requested == "device":
        return "device" if on_accelerator else "memory"
    if requested != "auto":
        return requested  # type: ignore[return-value]
    need = num_bytes * max(1, processes)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need <= AUTO_SHARE * free:
            return "device"
    ram = _available_ram()
    if ram is not None and need <= AUTO_SHARE * ram:
        return "memory"
    log.info(
        "features (%.1f GB) kept on disk: more than %d%% of the free memory",
        need / 1e9,
        100 * AUTO_SHARE,
    )
    return "disk"
