"""Per-epoch stratified resampling to a uniform class distribution (thesis 3.1)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

log = logging.getLogger(__name__)


class StratifiedResampler(DistributedSampler):
    """Draws exactly ``per_class`` indices of every class each epoch, reshuffled per epoch.

    A class with at least ``per_class`` examples is subsampled without replacement. A smaller class
    is repeated whole as often as it fits and the remainder is sampled without replacement: 60
    examples and 500 slots give every example 8 times and 20 of them a 9th time. The draw depends
    only on ``(seed, epoch)``, so runs are reproducible; call :meth:`set_epoch` each epoch
    (Lightning does so for samplers that have it).

    Under DDP each rank takes a disjoint, strided share of the epoch's draw. When the draw does not
    divide evenly, the first few indices are reused to pad every rank to the same length (as
    ``DistributedSampler`` does), so the exact per-class counts hold for single-process runs.
    It *is* a ``DistributedSampler`` so that Lightning does not wrap it in a second one
    (``use_distributed_sampler``), which would shard every rank's share again and stop
    ``set_epoch`` from reaching it.

    Args:
        labels: class id of every example.
        per_class: examples drawn per class and epoch (thesis: 500 training, 200 evaluation).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        num_classes: number of classes expected; classes with no example are reported once and
            left out of the draw.
        class_names: names used when reporting missing classes.
        num_replicas: DDP world size (default: from ``torch.distributed`` when initialised, else 1).
        rank: this process's rank (default: likewise).
        resample: draw anew every epoch (training). ``False`` keeps the epoch-0 draw for good:
            a balanced evaluation set must be the same set at every validation and when a
            checkpoint is validated later, or its metrics are not comparable.

    Raises:
        ValueError: if ``per_class`` is not positive, ``labels`` is empty or rank is out of range.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        per_class: int,
        seed: int = 0,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        resample: bool = True,
    ) -> None:
        Sampler.__init__(self)  # DistributedSampler's own __init__ needs a dataset we don't use
        if per_class <= 0:
            raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            raise ValueError("labels is empty: there is nothing to sample from")
        if num_replicas is None or rank is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        self.per_class = per_class
        self.resample = resample
        self.seed = seed
        self.epoch = 0
        self.num_replicas = num_replicas
        self.rank = rank
        order = np.argsort(labels, kind="stable")
        classes, starts = np.unique(labels[order], return_index=True)
        self.members = dict(zip(classes.tolist(), np.split(order, starts[1:]), strict=True))
        expected = range(num_classes) if num_classes is not None else classes.tolist()
        self.missing_classes = [c for c in expected if c not in self.members]
        if self.missing_classes:
            names = [class_names[c] if class_names else str(c) for c in self.missing_classes]
            log.warning(
                "StratifiedResampler: %d class(es) have no examples and are left out: %s",
                len(names),
                ", ".join(names),
            )
        self.total_size = per_class * len(self.members)
        self.num_samples = math.ceil(self.total_size / num_replicas)
        self.shuffle, self.drop_last = True, False  # DistributedSampler's attributes

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draw :meth:`__iter__` yields (a fixed sampler keeps epoch 0)."""
        if self.resample:
            self.epoch = epoch

    def draw(self) -> np.ndarray:
        """This epoch's full draw (all ranks), shuffled."""
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = []
        for members in self.members.values():
            repeats, remainder = divmod(self.per_class, len(members))
            parts.append(np.tile(members, repeats))
            parts.append(rng.choice(members, size=remainder, replace=False))
        draw = np.concatenate(parts)
        rng.shuffle(draw)
        return draw

    def __iter__(self) -> Iterator[int]:
        draw = self.draw()
        padded_size = self.num_samples * self.num_replicas
        if padded_size > len(draw):
            draw = np.concatenate([draw, draw[: padded_size - len(draw)]])
        return iter(draw[self.rank : padded_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


__all__ = ["StratifiedResampler"]
