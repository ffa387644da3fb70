"""The training step waits for the device only at logging steps: the non-finite-loss check is
recorded on the device and reported later, still within the epoch and before any checkpoint."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from model_helpers import TINY_ARCH, TINY_SHAPE, TinyDataModule, tiny_trainer

from convae_lightning.models import ConvAutoencoder, ForwardClassifier, NonFiniteLossError


class BreakWeights(pl.Callback):
    """Sets every weight to NaN before batch ``at`` and counts the batches that ran."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.at:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))

    def on_train_batch_end(self, *args) -> None:
        self.steps += 1


@pytest.mark.parametrize("model_class", [ForwardClassifier, ConvAutoencoder])
def test_non_finite_loss_is_reported_at_the_next_logging_step(tmp_path, model_class) -> None:
    breaker = BreakWeights(at=2)  # steps 0 and 1 are fine, step 2 is the first NaN
    trainer = tiny_trainer(
        tmp_path, limit_train_batches=12, log_every_n_steps=4, callbacks=[breaker]
    )
    model = model_class(input_shape=TINY_SHAPE, **TINY_ARCH)
    with pytest.raises(
        NonFiniteLossError, match=r"training loss is nan at epoch 0, global step 2\."
    ):
        trainer.fit(model, TinyDataModule(num_train=96, batch_size=8))  # 12 batches
    # Reported after global step 4 (the logging step after the NaN), long before the epoch ends.
    assert breaker.steps == 4


def test_no_checkpoint_holds_weights_broken_by_a_non_finite_loss(tmp_path) -> None:
    # A checkpoint after every step: the one after the NaN step must not be written.
    breaker = BreakWeights(at=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    trainer = tiny_trainer(
        tmp_path, limit_train_batches=6, enable_checkpointing=True, callbacks=[breaker, checkpoint]
    )
    model = ForwardClassifier(input_shape=TINY_SHAPE, **TINY_ARCH)
    with pytest.raises(NonFiniteLossError, match="global step 3"):
        trainer.fit(model, TinyDataModule(num_train=48, batch_size=8))
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]
    for name in saved:
        weights = torch.load(tmp_path / "ckpt" / name, weights_only=False)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_check_finite_outside_a_trainer_raises_at_once() -> None:
    model = ForwardClassifier(input_shape=TINY_SHAPE, **TINY_ARCH)
    model.check_finite(torch.tensor(1.0), "training")
    with pytest.raises(NonFiniteLossError, match=r"training loss is inf\. Lower the learning"):
        model.check_finite(torch.tensor(float("inf")), "training")
