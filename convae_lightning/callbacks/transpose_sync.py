"""Keep ``transpose_sync`` decoders equal to their encoder's convolutional transpose."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from convae_lightning.callbacks.checks import require_module


class TiedTransposeSync(Callback):
    """Re-sets every ``decoder_conv="transpose_sync"`` decoder to ``T(encoder.weight)``.

    The thesis's "decoder fixed to the transpose" (4.2.1): the decoder has no gradient and no
    optimiser state of its own (its bias is a fixed zero unless the model's
    ``transpose_sync_bias`` says ``trained``); after every optimiser step (and at fit start, and
    after a checkpoint is loaded) its weight is copied from the encoder it inverts. The module
    must expose ``sync_transposes()`` (every autoencoder of this package does).
    """

    @staticmethod
    def check_module(pl_module: pl.LightningModule) -> None:
        """Fail early on a module without ``sync_transposes``."""
        require_module(
            "TiedTransposeSync",
            pl_module,
            ["sync_transposes"],
            "Use it with ConvAutoencoder or StackedAutoencoder, or remove the callback.",
        )

    @classmethod
    def sync(cls, pl_module: pl.LightningModule) -> None:
        """Copy the transposes now."""
        cls.check_module(pl_module)
        pl_module.sync_transposes()

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check_module(pl_module)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sync(pl_module)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Runs after the optimiser step of this batch (a harmless re-copy when gradients are
        # being accumulated and no step was taken).
        self.sync(pl_module)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.sync(pl_module)
