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
from convae_lightning.models.base import ConvaeModule, default_optimizer
from convae_lightning.models.metrics import ClassificationMetrics
from convae_lightning.models.transfer import load_encoder_layers
from convae_lightning.nn.architecture import FIGURE2, FORWARD_VARIANTS, PoolSize, build_layer_specs
from convae_lightning.nn.units import EncoderBlock

__all__ = ["AutoencoderClassifier", "ForwardClassifier"]

ForwardVariant = Literal[
    "frequency_padded_overlap", "frequency_overlap", "frequency", "frequency_large", "time"
]
AutoencoderEncoderMode = Literal["pretrained", "fixed", "random", "random_fixed"]
AUTOENCODER_ENCODER_MODES: tuple[str, ...] = ("pretrained", "fixed", "random", "random_fixed")


class ForwardClassifier(ConvaeModule):
    """The thesis's forward network (Figure 2) and its Table 2 variants.

    Layers: ``encoder.{i}`` = conv, max-pool, ReLU; then ``head`` = fully connected layers with
    ReLU, dropout before the last (classification) layer. Logs ``{stage}/loss``,
    ``{stage}/acc48`` and ``{stage}/acc39`` (48 classes folded to 39), for validation and test
    per evaluation view: ``val/acc48_balanced``, ``val/acc39_natural``, ...

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
        pool_sizes: Override the variant's pooling per layer: ``(kh, kw)`` (stride 2 along
            pooled axes), ``"global"`` or ``null``.
        padding: Override the variant's padding: ``same`` (full) or ``valid``.
        fc_sizes: Override the hidden fully connected sizes (the output layer is added).
        dropout: Probability of *dropping* a unit before the output layer. The thesis's "dropout
            rate 0.9" is read as keep probability 0.9 (drop 0.1): with drop 0.9 the network did
            not learn within a short synthetic run (docs/models.md,
            ``python benchmarks/dropout_study.py``).
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
        padding: Literal["same", "valid"] | None = None,
        fc_sizes: Sequence[int] | None = None,
        dropout: float = 0.1,
        frozen: Sequence[str] = (),
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if variant not in FORWARD_VARIANTS:
            raise ValueError(f"variant must be one of {list(FORWARD_VARIANTS)}, got {variant!r}")
        preset = FORWARD_VARIANTS[variant]
        self._build(
            input_shape=input_shape,
            num_classes=num_classes,
            conv_channels=conv_channels if conv_channels is not None else preset["conv_channels"],
            kernel_sizes=kernel_sizes if kernel_sizes is not None else preset["kernel_sizes"],
            pool_sizes=pool_sizes if pool_sizes is not None else preset["pool_sizes"],
            padding=padding if padding is not None else preset["padding"],
            fc_sizes=fc_sizes if fc_sizes is not None else preset["fc_sizes"],
            dropout=dropout,
        )
        self._apply_frozen(frozen)

    def _build(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        conv_channels: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        pool_sizes: Sequence[PoolSize],
        padding: str,
        fc_sizes: Sequence[int],
        dropout: float,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{owner}: num_classes must be an int >= 2, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}")
        if any(not isinstance(n, int) or n <= 0 for n in fc_sizes):
            raise ValueError(f"{owner}: fc_sizes must be positive ints, got {list(fc_sizes)}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = num_classes
        self.specs = build_layer_specs(
            input_shape, conv_channels, kernel_sizes, pool_sizes, padding, owner=owner
        )
        self.encoder = nn.ModuleList(EncoderBlock(spec) for spec in self.specs)
        last = self.specs[-1]
        features = last.out_channels * last.output_hw[0] * last.output_hw[1]
        layers: list[nn.Module] = []
        for size in fc_sizes:
            layers += [nn.Linear(features, size), nn.ReLU(inplace=True)]
            features = size
        # Figure 2: dropout sits between the feature extraction and the classification layer.
        layers += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
        self.head = nn.Sequential(*layers)
        fold = FOLD_48_TO_39 if num_classes == len(FOLD_48_TO_39) else None
        self._fold = fold
        self.train_metrics = ClassificationMetrics(num_classes, fold)
        # Created lazily per (stage, view): the number of evaluation views is the datamodule's.
        self.eval_metrics = nn.ModuleDict()

    @override
    def forward(self, x: Tensor) -> Tensor:
        for block in self.encoder:
            x = block(x)
        return self.head(x.flatten(1))

    def features(self, x: Tensor) -> Tensor:
        """The flattened output of the convolutional part (the encoder's representation)."""
        for block in self.encoder:
            x = block(x)
        return x.flatten(1)

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.check_finite(loss, "training")
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self._log_accuracy("train", "", self.train_metrics, "train_metrics")
        # All parameters frozen (a "no training" baseline): nothing to optimise.
        return loss if loss.requires_grad else None

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> None:
        x, y = batch
        view = self.view_name(dataloader_idx)
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metrics = self._metrics_for(stage, view)
        metrics.update(logits, y)
        self.log(f"{stage}/loss_{view}", loss, add_dataloader_idx=False, prog_bar=True)
        self._log_accuracy(stage, f"_{view}", metrics, f"eval_metrics.{stage}_{view}")

    def _metrics_for(self, stage: str, view: str) -> ClassificationMetrics:
        key = f"{stage}_{view}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = ClassificationMetrics(self.num_classes, self._fold).to(
                self.device
            )
        return self.eval_metrics[key]

    def _log_accuracy(
        self, stage: str, suffix: str, metrics: ClassificationMetrics, attribute: str
    ) -> None:
        # metric_attribute is explicit: Lightning caches the attribute map at the first log,
        # before the lazily created evaluation metrics exist.
        kwargs = {"on_step": False, "on_epoch": True, "add_dataloader_idx": False}
        self.log(
            f"{stage}/acc48{suffix}",
            metrics.acc,
            prog_bar=stage != "train",
            metric_attribute=f"{attribute}.acc",
            **kwargs,
        )
        if metrics.folded is not None:
            self.log(
                f"{stage}/acc39{suffix}",
                metrics.folded,
                metric_attribute=f"{attribute}.folded",
                **kwargs,
            )

    @override
    def checkpoint_metadata(self) -> dict[str, Any]:
        meta = super().checkpoint_metadata()
        meta["layers"] = [spec.signature() for spec in self.specs]
        meta["input_shape"] = list(self.input_shape)
        return meta


class AutoencoderClassifier(ForwardClassifier):
    """The Figure 2 forward network whose convolutions come from a trained autoencoder (4.4).

    Args:
        input_shape: ``(C, F, T)`` of the inputs.
        num_classes: Number of classes.
        autoencoder_checkpoint: A ``ConvAutoencoder``/``StackedAutoencoder`` checkpoint. Its
            (active) encoder layers must match this network's first conv layers, else a
            ``ValueError`` names this argument; layers beyond the autoencoder's depth keep their
            random initialisation and are trained.
        encoder: ``pretrained`` (initialised from the autoencoder, then trained), ``fixed``
            (initialised and frozen: the learnt representation is used as is), ``random`` (the
            baseline: an untrained network, equal to a plain forward network) or
            ``random_fixed`` (random, frozen convolutions: Table 5's fixed-encoder baseline).
        conv_channels: Conv filters per layer (Figure 2 by default; must match the autoencoder).
        kernel_sizes: Conv kernels per layer.
        pool_sizes: Pooling per layer.
        fc_sizes: Hidden fully connected sizes.
        dropout: Drop probability before the output layer.
        frozen: Extra glob patterns of parameter names frozen from the start.
        optimizer: Optimiser factory (AdaGrad by default).
        lr_scheduler: Optional scheduler factory.
    """

    checkpoint_kind = "autoencoder_classifier"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 201, 16),
        num_classes: int = 48,
        autoencoder_checkpoint: str | None = None,
        encoder: AutoencoderEncoderMode = "pretrained",
        conv_channels: Sequence[int] = FIGURE2["conv_channels"],
        kernel_sizes: Sequence[tuple[int, int]] = FIGURE2["kernel_sizes"],
        pool_sizes: Sequence[PoolSize] = FIGURE2["pool_sizes"],
        fc_sizes: Sequence[int] = FIGURE2["fc_sizes"],
        dropout: float = 0.1,
        frozen: Sequence[str] = (),
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        # Skip ForwardClassifier.__init__: its hparams (variant, padding) are not ours.
        ConvaeModule.__init__(self, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if encoder not in AUTOENCODER_ENCODER_MODES:
            raise ValueError(f"encoder must be one of {AUTOENCODER_ENCODER_MODES}, got {encoder!r}")
        needs_checkpoint = encoder in ("pretrained", "fixed")
        if needs_checkpoint and autoencoder_checkpoint is None:
            raise ValueError(f"encoder={encoder!r} needs autoencoder_checkpoint (a path), got None")
        if not needs_checkpoint and autoencoder_checkpoint is not None:
            raise ValueError(
                f"encoder={encoder!r} uses random convolutions; remove autoencoder_checkpoint "
                f"({autoencoder_checkpoint!r}) or use encoder='pretrained'/'fixed'"
            )
        self._build(
            input_shape=input_shape,
            num_classes=num_classes,
            conv_channels=conv_channels,
            kernel_sizes=kernel_sizes,
            pool_sizes=pool_sizes,
            padding="same",
            fc_sizes=fc_sizes,
            dropout=dropout,
        )
        self.num_loaded_layers = 0
        if needs_checkpoint:
            self.num_loaded_layers = load_encoder_layers(
                self.encoder,
                self.specs,
                autoencoder_checkpoint,
                expected_kinds=("autoencoder", "stacked_autoencoder"),
                arg_name="autoencoder_checkpoint",
            )
        fixed: list[str] = []
        if encoder == "fixed":
            fixed = [f"encoder.{i}.conv.*" for i in range(self.num_loaded_layers)]
        elif encoder == "random_fixed":
            fixed = ["encoder.*.conv.*"]
        self._apply_frozen([*fixed, *frozen])
