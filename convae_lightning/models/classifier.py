"""Phone classifiers: the thesis's forward network (Figure 2, Table 2 variants) and the same
network with convolutions taken from a trained autoencoder (thesis 4.4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from convae_lightning.data.phones import FOLD_48_TO_39
from convae_lightning.models.base import ConvaeModule, default_optimizer, unpack_batch
from convae_lightning.models.metrics import ClassificationMetrics
from convae_lightning.models.transfer import (
    EncoderMode,
    check_encoder_mode,
    fixed_encoder_patterns,
    load_encoder_layers,
)
from convae_lightning.nn.architecture import (
    FIGURE2,
    FORWARD_VARIANTS,
    PoolSize,
    PoolStride,
    build_layer_specs,
)
from convae_lightning.nn.units import Activation, EncoderBlock, check_activation

__all__ = ["AutoencoderClassifier", "ConvClassifier", "ForwardClassifier"]

#: The keys of ``FORWARD_VARIANTS`` (a test keeps them equal), as a type LightningCLI validates.
ForwardVariant = Literal[
    "frequency_padded_overlap", "frequency_overlap", "frequency", "frequency_large", "time"
]


class ConvClassifier(ConvaeModule):
    """Conv layers (``encoder.{i}`` = conv, max-pool, ReLU) and a fully connected ``head`` with
    dropout before the output layer; what both classifiers share. Logs ``train/loss``,
    ``train/acc48``, ``train/acc39`` (48 classes folded to 39) and, per evaluation view,
    ``{stage}/loss_{view}``, ``{stage}/acc48_{view}``, ``{stage}/acc39_{view}``.

    Subclasses resolve their arguments into the layer sizes below, call this ``__init__`` and
    then ``save_hyperparameters`` with their own arguments.

    Args:
        input_shape: ``(C, F, T)`` of the inputs.
        num_classes: Number of classes; ``acc39`` is logged only for 48.
        conv_channels: Filters per conv layer.
        kernel_sizes: ``(kh, kw)`` per layer (0 = whole extent, unpadded only).
        pool_sizes: ``(kh, kw)``, ``"global"`` or ``None`` per layer.
        pool_strides: Stride per pooling window (``None``: 2 along pooled axes).
        padding: ``same`` (full) or ``valid``.
        fc_sizes: Hidden fully connected sizes (the output layer is added).
        dropout: Probability of dropping a unit before the output layer.
        frozen: Glob patterns of parameter names frozen from the start.
        optimizer: Optimiser factory.
        lr_scheduler: Optional scheduler factory.
        activation: Nonlinearity of the conv layers, ``relu`` or ``tanh`` (the fully connected
            layers keep their ReLUs).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        conv_channels: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        pool_sizes: Sequence[PoolSize],
        pool_strides: Sequence[PoolStride] | None,
        padding: str,
        fc_sizes: Sequence[int],
        dropout: float,
        frozen: Sequence[str],
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        owner = type(self).__name__
        self.activation = check_activation(activation)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{owner}: num_classes must be an int >= 2, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}")
        if any(not isinstance(n, int) or n <= 0 for n in fc_sizes):
            raise ValueError(f"{owner}: fc_sizes must be positive ints, got {list(fc_sizes)}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = num_classes
        self.specs = build_layer_specs(
            input_shape,
            conv_channels,
            kernel_sizes,
            pool_sizes,
            padding,
            owner=owner,
            pool_strides=pool_strides,
        )
        self.encoder = nn.ModuleList(
            EncoderBlock(spec, activation=activation) for spec in self.specs
        )
        last = self.specs[-1]
        features = last.out_channels * last.output_hw[0] * last.output_hw[1]
        layers: list[nn.Module] = []
        for size in fc_sizes:
            layers += [nn.Linear(features, size), nn.ReLU(inplace=True)]
            features = size
        # Figure 2: dropout sits between the feature extraction and the classification layer.
        layers += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
        self.head = nn.Sequential(*layers)
        self._fold = FOLD_48_TO_39 if num_classes == len(FOLD_48_TO_39) else None
        # The training loss is logged per step as well; its epoch mean needs no metric object.
        self.train_metrics = ClassificationMetrics(num_classes, self._fold, loss=False)
        self._apply_frozen(frozen)

    @override
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of inputs ``(B, C, F, T)``."""
        for block in self.encoder:
            x = block(x)  # Figure 2: (B, 8, 99, 8) ... (B, 1000, 1, 1)
        return self.head(x.flatten(1))  # (B, C' * F' * T') -> (B, num_classes)

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        x, y, _ = unpack_batch(batch)
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.check_finite(loss, "training")
        self.train_metrics.add_batch(logits, y)
        # Not on the progress bar: Lightning would read it back from the device every step.
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log_metrics("train", None, self.train_metrics, "train_metrics", self._accuracies())
        # All parameters frozen (a "no training" baseline): nothing to optimise.
        return loss if loss.requires_grad else None

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> None:
        x, y, _ = unpack_batch(batch)
        view = self.view_name(dataloader_idx)
        metrics, attribute = self.metrics_for(
            stage, view, lambda: ClassificationMetrics(self.num_classes, self._fold)
        )
        metrics.add_batch(self(x), y)
        names = ("loss", *self._accuracies())
        self.log_metrics(stage, view, metrics, attribute, names, prog_bar="acc48")

    def _accuracies(self) -> tuple[str, ...]:
        return ("acc48", "acc39") if self._fold is not None else ("acc48",)

    @override
    def predict_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """``posteriors``: class probabilities ``(B, num_classes)``; ``predicted``: ``(B,)``."""
        posteriors = self(x).softmax(-1)
        return {"posteriors": posteriors, "predicted": posteriors.argmax(-1)}


class ForwardClassifier(ConvClassifier):
    """The thesis's forward network (Figure 2) and its Table 2 variants.

    Args:
        input_shape: ``(C, F, T)`` of the inputs (link from the datamodule's ``input_shape``).
        num_classes: Number of classes (link from ``num_classes``). ``acc39`` is logged only
            for 48 classes.
        variant: Table 2 architecture: ``frequency_padded_overlap`` (Figure 2, the default),
            ``frequency_overlap`` (unpadded, 3 conv + 4 FC), ``frequency`` (2+2, 2x1 pooling),
            ``frequency_large`` (40-bin first filters), ``time`` (time convolution).
        conv_channels: Override the variant's filters per conv layer.
        kernel_sizes: Override the variant's ``(kh, kw)`` per layer (0 = whole extent, unpadded
            only).
        pool_sizes: Override the variant's pooling per layer: ``(kh, kw)``, ``"global"`` or
            ``null``.
        pool_strides: Stride per pooling window; ``null`` strides 2 along the axes a window
            spans, 1 elsewhere (``[[2, 2], ...]``: MatConvNet's literal scalar stride).
        padding: Override the variant's padding: ``same`` (full) or ``valid``.
        fc_sizes: Override the hidden fully connected sizes (the output layer is added).
        dropout: Probability of *dropping* a unit before the output layer. The thesis's "dropout
            rate 0.9" is read as keep probability 0.9 (drop 0.1): with drop 0.9 the network did
            not learn within a short synthetic run (docs/models.md,
            ``python benchmarks/dropout_study.py``); the literal reading is in
            ``conf/overlays/thesis_protocol.yaml``.
        frozen: Glob patterns of parameter names frozen from the start, e.g.
            ``["encoder.*.conv.bias"]`` (weights and biases separately) or ``["*"]``.
        optimizer: Optimiser factory (AdaGrad by default, as in the thesis).
        lr_scheduler: Optional scheduler factory.
    """

    checkpoint_kind = "forward_classifier"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 201, 16),
        num_classes: int = 48,
        variant: ForwardVariant = "frequency_padded_overlap",
        conv_channels: Sequence[int] | None = None,
        kernel_sizes: Sequence[tuple[int, int]] | None = None,
        pool_sizes: Sequence[PoolSize] | None = None,
        pool_strides: Sequence[PoolStride] | None = None,
        padding: Literal["same", "valid"] | None = None,
        fc_sizes: Sequence[int] | None = None,
        dropout: float = 0.1,
        frozen: Sequence[str] = (),
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if variant not in FORWARD_VARIANTS:
            raise ValueError(f"variant must be one of {list(FORWARD_VARIANTS)}, got {variant!r}")
        preset = FORWARD_VARIANTS[variant]
        super().__init__(
            input_shape=input_shape,
            num_classes=num_classes,
            conv_channels=conv_channels if conv_channels is not None else preset["conv_channels"],
            kernel_sizes=kernel_sizes if kernel_sizes is not None else preset["kernel_sizes"],
            pool_sizes=pool_sizes if pool_sizes is not None else preset["pool_sizes"],
            pool_strides=pool_strides,
            padding=padding if padding is not None else preset["padding"],
            fc_sizes=fc_sizes if fc_sizes is not None else preset["fc_sizes"],
            dropout=dropout,
            frozen=frozen,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])


class AutoencoderClassifier(ConvClassifier):
    """The Figure 2 forward network whose convolutions come from a trained autoencoder (4.4).

    Args:
        input_shape: ``(C, F, T)`` of the inputs.
        num_classes: Number of classes.
        autoencoder_checkpoint: A ``ConvAutoencoder``/``StackedAutoencoder`` checkpoint (of a
            stacked run, any ``checkpoints/unit{k}.ckpt``: its k trained units are loaded). Its
            convolutions must match this network's first ones in shape, else a ``ValueError``
            names this argument; layers beyond the autoencoder's depth keep their random
            initialisation and are trained.
        encoder: ``pretrained`` (initialised from the autoencoder, then trained),
            ``pretrained_fixed`` (initialised and frozen: the learnt representation is used as
            is), ``random`` (the baseline: an untrained network, equal to a plain forward
            network) or ``random_fixed`` (random, frozen convolutions: Table 5's fixed-encoder
            baseline).
        conv_channels: Conv filters per layer (Figure 2 by default; must match the autoencoder).
        kernel_sizes: Conv kernels per layer.
        pool_sizes: Pooling per layer.
        pool_strides: Stride per pooling window (``null``: 2 along pooled axes).
        fc_sizes: Hidden fully connected sizes.
        dropout: Drop probability before the output layer.
        frozen: Extra glob patterns of parameter names frozen from the start.
        activation: Nonlinearity of the conv layers: ``null`` (default) takes the
            autoencoder's (its checkpoint's ``activation``; ``relu`` for ``random*``); a value
            that differs from a pretrained autoencoder's is a ``ValueError``.
        optimizer: Optimiser factory (AdaGrad by default).
        lr_scheduler: Optional scheduler factory.
    """

    checkpoint_kind = "autoencoder_classifier"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 201, 16),
        num_classes: int = 48,
        autoencoder_checkpoint: str | None = None,
        encoder: EncoderMode = "pretrained",
        conv_channels: Sequence[int] = FIGURE2["conv_channels"],
        kernel_sizes: Sequence[tuple[int, int]] = FIGURE2["kernel_sizes"],
        pool_sizes: Sequence[PoolSize] = FIGURE2["pool_sizes"],
        pool_strides: Sequence[PoolStride] | None = None,
        fc_sizes: Sequence[int] = FIGURE2["fc_sizes"],
        dropout: float = 0.1,
        frozen: Sequence[str] = (),
        activation: Activation | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        pretrained = check_encoder_mode(encoder, autoencoder_checkpoint, "autoencoder_checkpoint")
        super().__init__(
            input_shape=input_shape,
            num_classes=num_classes,
            conv_channels=conv_channels,
            kernel_sizes=kernel_sizes,
            pool_sizes=pool_sizes,
            pool_strides=pool_strides,
            padding="same",
            fc_sizes=fc_sizes,
            dropout=dropout,
            frozen=frozen,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            activation=activation or "relu",
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.num_loaded_layers = 0
        if pretrained:
            loaded = load_encoder_layers(
                self.encoder,
                self.specs,
                autoencoder_checkpoint,
                expected_kinds=("autoencoder", "stacked_autoencoder"),
                arg_name="autoencoder_checkpoint",
                activation=activation,
            )
            self.num_loaded_layers, self.activation = loaded.count, loaded.activation
            # Filters of other features (log-mel rows against spectrogram bins) would load
            # silently when the kernels happen to have the same shape.
            if loaded.input_shape is not None and loaded.input_shape[:2] != self.input_shape[:2]:
                raise ValueError(
                    f"autoencoder_checkpoint {autoencoder_checkpoint!r} was trained on inputs of "
                    f"{loaded.input_shape[0]} channel(s) x {loaded.input_shape[1]} rows, this "
                    f"model's input_shape is {self.input_shape}: give it the autoencoder's "
                    "features (data.representation, data.n_mels, data.n_mfcc)"
                )
        self._apply_frozen(fixed_encoder_patterns(encoder, self.num_loaded_layers))
