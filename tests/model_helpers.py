"""A tiny in-memory LightningDataModule following the project's data contract, and tiny models.

Contract (as ``convae_lightning.data.TimitDataModule``): batches ``(x, y)`` with x float32
``(B, C, F, T)`` and y int64 class ids; after ``setup()`` it exposes ``input_shape``,
``num_classes``, ``class_names``, ``mean_spectrogram`` and ``eval_views``;
``val_dataloader()``/``test_dataloader()`` return one loader per view, in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from convae_lightning.data import TimitDataModule
from convae_lightning.data.phones import PHONES_48

#: Small input for training tests: 4 Figure-2 units still fit (32x8 -> 14x4 -> 5x2 -> 1x1).
TINY_SHAPE = (1, 32, 8)
#: Figure 2 kernels and pools with few channels: seconds per fit on 2 cores.
TINY_ARCH = {
    "conv_channels": (4, 4, 8, 16),
    "kernel_sizes": ((8, 16), (5, 3), (5, 3), (5, 2)),
    "pool_sizes": ((5, 2), (5, 2), (5, 2), "global"),
}


class TinyDataModule(pl.LightningDataModule):
    """Random class templates plus noise: learnable, deterministic, in memory.

    Args:
        input_shape: ``(C, F, T)`` of the samples.
        num_classes: Number of classes (48 by default, like TIMIT).
        num_train: Training samples.
        num_eval: Samples per evaluation view.
        batch_size: Batch size of every loader.
        eval_views: View names; ``None`` hides the attribute (tests the fallback names).
        noise: Noise level relative to the templates.
        seed: Seed of the generated data.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = TINY_SHAPE,
        num_classes: int = 48,
        num_train: int = 96,
        num_eval: int = 48,
        batch_size: int = 16,
        eval_views: Sequence[str] | None = ("balanced", "natural"),
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.class_names = list(PHONES_48[:num_classes]) if num_classes <= 48 else None
        self.num_train = num_train
        self.num_eval = num_eval
        self.batch_size = batch_size
        if eval_views is not None:
            self.eval_views = list(eval_views)
        self._num_views = len(eval_views) if eval_views is not None else 2
        self.noise = noise
        self.seed = seed
        self._splits: dict[str, TensorDataset] = {}

    def _make(self, n: int, generator: torch.Generator, templates: torch.Tensor) -> TensorDataset:
        y = torch.randint(0, self.num_classes, (n,), generator=generator)
        x = templates[y] + self.noise * torch.randn(n, *self.input_shape, generator=generator)
        return TensorDataset(x.float(), y)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        g = torch.Generator().manual_seed(self.seed)
        templates = torch.randn(self.num_classes, *self.input_shape, generator=g)
        self._splits["train"] = self._make(self.num_train, g, templates)
        for i in range(self._num_views):
            self._splits[f"eval{i}"] = self._make(self.num_eval, g, templates)
        self.mean_spectrogram = self._splits["train"].tensors[0].mean(0).numpy()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._splits["train"], batch_size=self.batch_size, shuffle=True)

    def _eval_loaders(self) -> list[DataLoader]:
        return [
            DataLoader(self._splits[f"eval{i}"], batch_size=self.batch_size)
            for i in range(self._num_views)
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()


def embedded_datamodule(cache_dir: Path) -> TimitDataModule:
    """The embedded corpus with tiny epochs (2 train, 1 eval example per class), set up."""
    dm = TimitDataModule(
        cache_dir=str(cache_dir),
        train_per_class=2,
        eval_per_class=1,
        batch_size=32,
        progress=False,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_trainer(tmp_path, **overrides) -> pl.Trainer:
    """A CPU Trainer for smoke fits: 1 epoch, 2 batches, no logger or checkpoints."""
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "limit_test_batches": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": tmp_path,
    }
    options.update(overrides)
    return pl.Trainer(**options)
