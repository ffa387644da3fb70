"""Features held in RAM (``hold_features``) give exactly the batches, and the training, of the
memory-mapped cache; ``auto`` picks where they fit."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import SequentialSampler

from convae_lightning.data import TimitDataModule
from convae_lightning.data.memory import AUTO_SHARE, TensorBatches, choose_hold
from convae_lightning.data.sampler import StratifiedResampler
from convae_lightning.models import ConvAutoencoder, ForwardClassifier

SMALL_ARCH = {"conv_channels": (4, 4, 8, 16)}


def train_small(dm: TimitDataModule, model_class: type, root, **trainer_args) -> pl.LightningModule:
    """A small ``model_class`` trained 2 epochs of 5 batches from seed 0, on any accelerator."""
    pl.seed_everything(0, verbose=False)
    model = model_class(input_shape=dm.input_shape, **SMALL_ARCH)
    trainer = pl.Trainer(
        **{"accelerator": "cpu", **trainer_args},
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, dm)
    return model


def _datamodule(toy_corpus, tmp_path, hold: str) -> TimitDataModule:
    dm = TimitDataModule(
        root=str(toy_corpus),
        cache_dir=str(tmp_path / "cache"),
        train_per_class=5,
        eval_per_class=3,
        batch_size=16,
        hold_features=hold,
        progress=False,
    )
    dm.setup("fit")
    return dm


def _epochs(loader, epochs: int) -> list[list[torch.Tensor]]:
    out = []
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):  # as Lightning does before every epoch
            loader.sampler.set_epoch(epoch)
        out.append([t.clone() for batch in loader for t in batch])
    return out


def test_memory_gives_the_batches_of_the_disk(toy_corpus, tmp_path):
    disk = _datamodule(toy_corpus, tmp_path, "disk")
    memory = _datamodule(toy_corpus, tmp_path, "memory")
    pairs = [(disk.train_dataloader(), memory.train_dataloader())]
    pairs += list(zip(disk.val_dataloader(), memory.val_dataloader(), strict=True))
    for from_disk, from_memory in pairs:
        assert isinstance(from_memory, TensorBatches)
        assert len(from_disk) == len(from_memory)
        a, b = _epochs(from_disk, 2), _epochs(from_memory, 2)
        for epoch_a, epoch_b in zip(a, b, strict=True):
            assert len(epoch_a) == len(epoch_b)
            for x, y in zip(epoch_a, epoch_b, strict=True):
                assert torch.equal(x, y)
    # A new epoch is a new draw (set_epoch reaches the sampler of a TensorBatches too).
    loader = memory.train_dataloader()
    first, second = _epochs(loader, 2)
    assert not all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


@pytest.mark.parametrize("model_class", [ForwardClassifier, ConvAutoencoder])
def test_training_from_memory_equals_training_from_disk(toy_corpus, tmp_path, model_class):
    weights = {}
    for hold in ("disk", "memory"):
        model = train_small(_datamodule(toy_corpus, tmp_path, hold), model_class, tmp_path)
        weights[hold] = {k: v.clone() for k, v in model.state_dict().items()}
    for name, value in weights["disk"].items():
        assert torch.equal(value, weights["memory"][name]), name


def test_tensor_batches_follow_the_sampler_and_give_indices():
    features = torch.arange(10.0).view(10, 1, 1, 1)
    labels = torch.tensor([0, 1] * 5)
    sampler = StratifiedResampler(labels.numpy(), per_class=3, seed=4)
    batches = list(TensorBatches(features, labels, sampler, batch_size=4, with_index=True))
    order = list(sampler)
    assert [len(b[0]) for b in batches] == [4, 2]
    assert torch.cat([b[2] for b in batches]).tolist() == order
    assert torch.cat([b[0] for b in batches]).flatten().tolist() == [float(i) for i in order]
    sequential = TensorBatches(features, labels, SequentialSampler(range(10)), 4, with_index=True)
    assert len(sequential) == 3
    assert [b[2].tolist() for b in sequential] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_choose_hold_resolves_auto_by_free_memory():
    cpu = torch.device("cpu")
    assert choose_hold("auto", 1_000, cpu) == "memory"
    # More than a quarter of any machine's RAM stays on disk.
    assert choose_hold("auto", 2**62, cpu) == "disk"
    assert AUTO_SHARE == 0.25
    assert choose_hold("disk", 1_000, cpu) == "disk"
    assert choose_hold("device", 1_000, cpu) == "memory"  # the CPU's device is its RAM
    with pytest.raises(ValueError, match=r"hold_features must be one of \['auto', 'disk'"):
        choose_hold("gpu", 1_000, cpu)


def test_datamodule_rejects_an_unknown_hold(toy_corpus, tmp_path):
    with pytest.raises(ValueError, match="hold_features must be one of"):
        TimitDataModule(root=str(toy_corpus), cache_dir=str(tmp_path), hold_features="ram")


def test_memory_patches_are_mean_subtracted(toy_corpus, tmp_path):
    dm = _datamodule(toy_corpus, tmp_path, "memory")
    x, _ = next(iter(dm.val_dataloader()[1]))  # natural view: the first rows, in order
    stored = np.load(dm.cache_path / "val_x.npy", mmap_mode="r")[: len(x)]
    np.testing.assert_array_equal(x.numpy(), stored - dm.mean_spectrogram)
