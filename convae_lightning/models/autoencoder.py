"""Convolutional autoencoders: regular training (all units at once) and stacked training (thesis
4.3, 5.1, 5.2).

Hooks for callbacks (documented here once):

- ``sync_transposes()``: re-set every ``transpose_sync`` decoder to its encoder's transpose; the
  ``TiedTransposeSync`` callback calls it after each optimiser step. ``units()`` gives the
  :class:`~convae_lightning.nn.units.AutoencoderUnit` views (each has ``sync_transpose_()``).
- Parameter names: ``encoder.{i}.conv.weight|bias`` and ``decoder.{i}.conv.weight|bias`` (decoder
  ``i`` inverts encoder ``i``), for ``LayerFreezing``.
- ``StackedAutoencoder.grow()``, ``num_active_units``, ``num_units``, ``mode``,
  ``trained_unit_parameters()`` and ``unit_parameters(i)`` for ``StackGrowth``.
- ``reconstruct(x, zero_code=...)`` for ``ReconstructionLogger``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from convae_lightning.models.base import CHECKPOINT_META_KEY, ConvaeModule, default_optimizer
from convae_lightning.models.metrics import reconstruction_measures
from convae_lightning.models.transfer import load_encoder_layers
from convae_lightning.nn.architecture import FIGURE2, PoolSize, build_layer_specs
from convae_lightning.nn.conv import DECODER_CONV_MODES, DECODER_IMPLS, DecoderConvMode, DecoderImpl
from convae_lightning.nn.units import (
    UNPOOL_MODES,
    AutoencoderUnit,
    DecoderBlock,
    EncoderBlock,
    EncoderState,
    UnpoolMode,
)

__all__ = ["ConvAutoencoder", "StackedAutoencoder"]

EncoderMode = Literal["random", "random_fixed", "pretrained", "pretrained_fixed"]
ENCODER_MODES: tuple[str, ...] = ("random", "random_fixed", "pretrained", "pretrained_fixed")
Architecture = Literal["units", "conv_inverse"]
MEASURES: tuple[str, ...] = ("euclid", "cosine", "corr", "euclid_scaled")
T = TypeVar("T")


class ConvAutoencoder(ConvaeModule):
    """Convolutional autoencoder of 1..4 units, all trained together ("regular" training).

    A unit's encoder is conv (same padding, stride 1), max-pool, ReLU; its decoder an optional
    ReLU, unpooling and a decoder conv (Figure 4). Loss: squared Euclidean error per sample
    (B.7), averaged over the batch. Logged: ``{stage}/loss``, ``{stage}/euclid`` (mean distance
    per sample: the thesis's figure), ``cosine``, ``corr`` and ``euclid_scaled`` (distance after
    the optimal scalar rescaling), per evaluation view for val/test (``val/euclid_natural``).

    Per-unit options accept one value for all units or a list with one value per unit.

    Args:
        input_shape: ``(C, F, T)`` of the inputs (link from the datamodule).
        num_units: Number of units (1..len(conv_channels)); must fit the input size.
        architecture: ``units`` or ``conv_inverse`` (thesis 5.1 architecture I: one conv and its
            decoder conv, no pooling, no ReLU; needs ``num_units=1``).
        conv_channels: Filters per encoder conv (Figure 2: 8, 16, 32, 1000).
        kernel_sizes: ``(kh, kw)`` per encoder conv.
        pool_sizes: Pooling per unit: ``(kh, kw)`` with stride 2 along pooled axes, or
            ``"global"`` (the pooling that ends the encoder).
        unpool: ``switch`` or ``blind``, per unit.
        decoder_relu: ReLU at the start of each decoder, per unit (default: on; off and not
            allowed for ``conv_inverse``).
        decoder_conv: ``free``, ``init_transpose``, ``transpose_sync`` (needs the
            ``TiedTransposeSync`` callback to follow a trained encoder) or ``tied``, per unit.
        encoder: ``random`` (trained), ``random_fixed``, ``pretrained`` (from
            ``encoder_checkpoint``, trained) or ``pretrained_fixed``.
        encoder_checkpoint: A trained ``ForwardClassifier`` checkpoint for ``pretrained*``.
        frozen: Glob patterns of parameter names frozen from the start, e.g.
            ``["decoder.*.conv.weight"]`` (a fixed random decoder) or ``["*"]`` (untrained
            baseline); weights and biases can be frozen separately.
        decoder_impl: How decoder convolutions are computed (``conv_transpose``, faster on CPU,
            or ``conv2d``); results agree to rounding.
        optimizer: Optimiser factory (AdaGrad by default, as in the thesis).
        lr_scheduler: Optional scheduler factory.
    """

    checkpoint_kind = "autoencoder"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 201, 16),
        num_units: int = 4,
        architecture: Architecture = "units",
        conv_channels: Sequence[int] = FIGURE2["conv_channels"],
        kernel_sizes: Sequence[tuple[int, int]] = FIGURE2["kernel_sizes"],
        pool_sizes: Sequence[PoolSize] = FIGURE2["pool_sizes"],
        unpool: UnpoolMode | Sequence[UnpoolMode] = "switch",
        decoder_relu: bool | Sequence[bool] | None = None,
        decoder_conv: DecoderConvMode | Sequence[DecoderConvMode] = "free",
        encoder: EncoderMode = "random",
        encoder_checkpoint: str | None = None,
        frozen: Sequence[str] = (),
        decoder_impl: DecoderImpl = "conv_transpose",
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        if type(self) is ConvAutoencoder:
            self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        owner = type(self).__name__
        if architecture not in ("units", "conv_inverse"):
            raise ValueError(
                f"architecture must be 'units' or 'conv_inverse', got {architecture!r}"
            )
        if not isinstance(num_units, int) or num_units <= 0:
            raise ValueError(f"num_units must be a positive int, got {num_units!r}")
        relu_everywhere = True
        if architecture == "conv_inverse":
            if num_units != 1:
                raise ValueError(f"architecture='conv_inverse' needs num_units=1, got {num_units}")
            if decoder_relu not in (None, False, [False], (False,)):
                raise ValueError(
                    "architecture='conv_inverse' has no ReLU; leave decoder_relu unset"
                )
            pool_sizes = [None] * len(conv_channels)
            decoder_relu, relu_everywhere = False, False
        elif decoder_relu is None:
            decoder_relu = True
        if encoder not in ENCODER_MODES:
            raise ValueError(f"encoder must be one of {ENCODER_MODES}, got {encoder!r}")
        pretrained = encoder.startswith("pretrained")
        if pretrained and encoder_checkpoint is None:
            raise ValueError(f"encoder={encoder!r} needs encoder_checkpoint (a path), got None")
        if not pretrained and encoder_checkpoint is not None:
            raise ValueError(
                f"encoder={encoder!r} does not load weights; remove encoder_checkpoint or use "
                "encoder='pretrained'/'pretrained_fixed'"
            )
        if decoder_impl not in DECODER_IMPLS:
            raise ValueError(f"decoder_impl must be one of {DECODER_IMPLS}, got {decoder_impl!r}")

        self.input_shape = tuple(int(v) for v in input_shape)
        self.architecture = architecture
        self.specs = build_layer_specs(
            input_shape,
            conv_channels,
            kernel_sizes,
            pool_sizes,
            "same",
            num_layers=num_units,
            owner=owner,
        )
        unpools = _per_unit(unpool, num_units, "unpool", UNPOOL_MODES)
        relus = _per_unit(decoder_relu, num_units, "decoder_relu", (True, False))
        convs = _per_unit(decoder_conv, num_units, "decoder_conv", DECODER_CONV_MODES)

        self.encoder = nn.ModuleList(
            EncoderBlock(spec, return_switches=unpools[i] == "switch", relu=relu_everywhere)
            for i, spec in enumerate(self.specs)
        )
        if pretrained:
            # Before the decoders exist, so transpose decoders start from the pretrained filters.
            load_encoder_layers(
                self.encoder,
                self.specs,
                encoder_checkpoint,
                expected_kinds=("forward_classifier", "autoencoder_classifier"),
                arg_name="encoder_checkpoint",
            )
        self.decoder = nn.ModuleList(
            DecoderBlock(enc, unpools[i], relus[i], convs[i], impl=decoder_impl)
            for i, enc in enumerate(self.encoder)
        )
        self._units = [
            AutoencoderUnit(i, enc, dec)
            for i, (enc, dec) in enumerate(zip(self.encoder, self.decoder, strict=True))
        ]
        fixed = ["encoder.*"] if encoder.endswith("_fixed") else []
        self._apply_frozen([*fixed, *frozen])

    # --------------------------------------------------------------------- structure / hooks
    @property
    def num_units(self) -> int:
        """Units built (the maximum depth)."""
        return len(self._units)

    @property
    def num_active_units(self) -> int:
        """Units used in forward; all of them for regular training."""
        return self.num_units

    def units(self) -> list[AutoencoderUnit]:
        """All units, outermost first."""
        return list(self._units)

    def active_units(self) -> list[AutoencoderUnit]:
        return self._units[: self.num_active_units]

    def unit_parameters(self, index: int) -> list[nn.Parameter]:
        """Parameters of unit ``index`` (encoder and decoder; each shared parameter once)."""
        return list(self._units[index].parameters())

    def sync_transposes(self) -> None:
        """Re-set all ``transpose_sync`` decoders to their encoder's transpose (after a step)."""
        for unit in self._units:
            unit.sync_transpose_()

    def has_transpose_sync(self) -> bool:
        return any(u.decoder.conv.mode == "transpose_sync" for u in self._units)

    # ---------------------------------------------------------------------------- forward
    def encode(self, x: Tensor) -> tuple[Tensor, list[EncoderState]]:
        """Code of the active units and what their decoders need (switches, sizes)."""
        states = []
        for block in self.encoder[: self.num_active_units]:
            x, state = block.encode(x)
            states.append(state)
        return x, states

    def decode(self, code: Tensor, states: Sequence[EncoderState]) -> Tensor:
        for i in reversed(range(len(states))):
            code = self.decoder[i](code, states[i])
        return code

    @override
    def forward(self, x: Tensor) -> Tensor:
        code, states = self.encode(x)
        return self.decode(code, states)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, zero_code: bool = False) -> Tensor:
        """Reconstruction of ``x`` without gradients.

        Args:
            x: Inputs ``(B, C, F, T)``.
            zero_code: Decode a zeroed code with the switches alone: the "chirp" switch-leakage
                experiment (thesis 4.2.2, Figure 3).
        """
        code, states = self.encode(x)
        if zero_code:
            code = torch.zeros_like(code)
        return self.decode(code, states)

    # --------------------------------------------------------------------------- training
    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        x = _inputs(batch)
        measures = reconstruction_measures(self(x), x)
        loss = measures["sq_error"].mean()
        self.check_finite(loss, "training")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/euclid", measures["euclid"].mean().detach(), on_step=True, on_epoch=True)
        # Every part frozen (a "no training" baseline): nothing to optimise this step.
        return loss if loss.requires_grad else None

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> None:
        x = _inputs(batch)
        view = self.view_name(dataloader_idx)
        measures = reconstruction_measures(self(x), x)
        kwargs = {"add_dataloader_idx": False, "batch_size": x.shape[0]}
        self.log(f"{stage}/loss_{view}", measures["sq_error"].mean(), **kwargs)
        for name in MEASURES:
            self.log(
                f"{stage}/{name}_{view}", measures[name].mean(), prog_bar=name == "euclid", **kwargs
            )

    @override
    def on_fit_start(self) -> None:
        trainable_encoder = any(
            p.requires_grad for u in self._units for p in u.encoder.parameters()
        )
        has_sync = any(
            hasattr(cb, "sync_transposes") or type(cb).__name__ == "TiedTransposeSync"
            for cb in self.trainer.callbacks
        )
        if self.has_transpose_sync() and trainable_encoder and not has_sync:
            warnings.warn(
                "decoder_conv='transpose_sync' decoders stay at their initial transpose unless "
                "re-synced after each step; add the TiedTransposeSync callback (or use "
                "decoder_conv='tied').",
                stacklevel=2,
            )

    @override
    def checkpoint_metadata(self) -> dict[str, Any]:
        meta = super().checkpoint_metadata()
        meta["layers"] = [spec.signature() for spec in self.specs]
        meta["input_shape"] = list(self.input_shape)
        meta["num_units"] = self.num_units
        meta["num_active_units"] = self.num_active_units
        return meta


class StackedAutoencoder(ConvAutoencoder):
    """The same units trained one level at a time (thesis 4.3): start with ``initial_units``,
    :meth:`grow` inserts the next (randomly initialised) unit between the trained encoders and
    decoders.

    All units are built at construction, so a checkpoint at any depth holds every parameter; the
    depth itself is stored in ``checkpoint["convae"]["num_active_units"]`` and restored in
    :meth:`on_load_checkpoint` (Lightning restores module state before callback state).
    Inactive units get no gradient; parameters of units fixed by strong stacking keep
    ``requires_grad=False`` but stay in the optimiser, so growing needs no new optimiser.

    Args:
        mode: ``strong`` (trained units are fixed when a unit is added) or ``weak`` (they keep
            training with the new unit).
        initial_units: Active units at the start (1 = the thesis's procedure).
        **kwargs: All :class:`ConvAutoencoder` arguments (see there).
    """

    checkpoint_kind = "stacked_autoencoder"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 201, 16),
        num_units: int = 4,
        mode: Literal["strong", "weak"] = "weak",
        initial_units: int = 1,
        conv_channels: Sequence[int] = FIGURE2["conv_channels"],
        kernel_sizes: Sequence[tuple[int, int]] = FIGURE2["kernel_sizes"],
        pool_sizes: Sequence[PoolSize] = FIGURE2["pool_sizes"],
        unpool: UnpoolMode | Sequence[UnpoolMode] = "switch",
        decoder_relu: bool | Sequence[bool] | None = None,
        decoder_conv: DecoderConvMode | Sequence[DecoderConvMode] = "free",
        encoder: EncoderMode = "random",
        encoder_checkpoint: str | None = None,
        frozen: Sequence[str] = (),
        decoder_impl: DecoderImpl = "conv_transpose",
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if mode not in ("strong", "weak"):
            raise ValueError(f"mode must be 'strong' or 'weak', got {mode!r}")
        super().__init__(
            input_shape=input_shape,
            num_units=num_units,
            architecture="units",
            conv_channels=conv_channels,
            kernel_sizes=kernel_sizes,
            pool_sizes=pool_sizes,
            unpool=unpool,
            decoder_relu=decoder_relu,
            decoder_conv=decoder_conv,
            encoder=encoder,
            encoder_checkpoint=encoder_checkpoint,
            frozen=frozen,
            decoder_impl=decoder_impl,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if not isinstance(initial_units, int) or not 1 <= initial_units <= num_units:
            raise ValueError(
                f"initial_units must be between 1 and num_units={num_units}, got {initial_units!r}"
            )
        self.mode = mode
        self._num_active = 0
        self._set_depth(initial_units)

    @property
    @override
    def num_active_units(self) -> int:
        return self._num_active

    def grow(self) -> int:
        """Activate the next unit; under ``strong`` stacking fix the units trained so far.

        Returns:
            The new number of active units.

        Raises:
            RuntimeError: when all ``num_units`` units are already active.
        """
        if self._num_active >= self.num_units:
            raise RuntimeError(f"cannot grow: all {self.num_units} units are already active")
        self._set_depth(self._num_active + 1)
        return self._num_active

    def trained_unit_parameters(self) -> list[nn.Parameter]:
        """Parameters of the units trained before the newest one (fixed under strong mode)."""
        return [p for i in range(self._num_active - 1) for p in self.unit_parameters(i)]

    def _set_depth(self, depth: int) -> None:
        self._num_active = depth
        trained = {id(p) for p in self.trained_unit_parameters()}
        for name, param in self.named_parameters():
            fixed = name in self._config_frozen or (self.mode == "strong" and id(param) in trained)
            param.requires_grad_(not fixed)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        depth = checkpoint.get(CHECKPOINT_META_KEY, {}).get("num_active_units")
        if depth is not None:
            if not 1 <= depth <= self.num_units:
                raise ValueError(
                    f"checkpoint has {depth} active units but this model has num_units="
                    f"{self.num_units}"
                )
            self._set_depth(int(depth))


def _inputs(batch: Any) -> Tensor:
    """Inputs of an ``(x, y)`` batch or of a bare tensor batch."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _per_unit(value: T | Sequence[T], n: int, name: str, allowed: Sequence[T]) -> list[T]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must be one value or {n} values (one per unit), got {value!r}")
    for v in values:
        if v not in allowed:
            raise ValueError(f"{name} must be one of {tuple(allowed)}, got {v!r}")
    return values
