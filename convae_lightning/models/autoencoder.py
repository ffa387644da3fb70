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
- ``reconstruct(x, zero_code=...)`` and ``uses_switches`` for ``ReconstructionLogger`` and
  ``convae reconstruct``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, get_args

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from convae_lightning.models.base import (
    CHECKPOINT_META_KEY,
    ConvaeModule,
    default_optimizer,
    unpack_batch,
)
from convae_lightning.models.metrics import MEASURES, ZERO_CODE_MEASURES, ReconstructionMetrics
from convae_lightning.models.objectives import ReconstructionLoss, TrainingObjective
from convae_lightning.models.transfer import (
    EncoderMode,
    check_encoder_mode,
    fixed_encoder_patterns,
    load_encoder_layers,
)
from convae_lightning.nn.architecture import FIGURE2, PoolSize, PoolStride, build_layer_specs
from convae_lightning.nn.conv import (
    DECODER_CONV_MODES,
    DECODER_IMPLS,
    SYNC_BIASES,
    DecoderConvMode,
    DecoderImpl,
    SyncBias,
    conv_transpose_weight,
)
from convae_lightning.nn.units import (
    UNPOOL_MODES,
    Activation,
    AutoencoderUnit,
    DecoderBlock,
    EncoderBlock,
    EncoderState,
    UnpoolMode,
    check_activation,
)

__all__ = ["ConvAutoencoder", "StackedAutoencoder"]

Architecture = Literal["units", "conv_inverse"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
StackMode = Literal["strong", "weak"]
STACK_MODES: tuple[str, ...] = get_args(StackMode)
T = TypeVar("T")


class ConvAutoencoder(ConvaeModule):
    """Convolutional autoencoder of 1..4 units, all trained together ("regular" training).

    A unit's encoder is conv (same padding, stride 1), max-pool, ReLU; its decoder an optional
    ReLU, unpooling and a decoder conv (Figure 4). Loss: squared Euclidean error per sample
    (B.7), averaged over the batch. Logged: ``train/loss``, ``train/euclid`` and, per evaluation
    view, ``{stage}/{name}_{view}`` for every name of
    :data:`~convae_lightning.models.metrics.MEASURES` (``val/euclid_natural``: the thesis's mean
    distance per sample; ``input_norm``, the inputs' distance to zero, and ``euclid_rel =
    euclid / input_norm`` to read errors beside the thesis's reference of 3.1), plus
    ``euclid_zero_code``/``corr_zero_code`` (decoding a zeroed code: what the switches alone
    carry) when some active unit unpools by switches.

    Per-unit options accept one value for all units or a list with one value per unit.

    Args:
        input_shape: ``(C, F, T)`` of the inputs (link from the datamodule).
        num_units: Number of units (1..len(conv_channels)); must fit the input size.
        architecture: ``units`` or ``conv_inverse`` (thesis 5.1 architecture I: one conv and its
            decoder conv, no pooling, no ReLU; needs ``num_units=1``).
        conv_channels: Filters per encoder conv (Figure 2: 8, 16, 32, 1000).
        kernel_sizes: ``(kh, kw)`` per encoder conv.
        pool_sizes: Pooling per unit: a ``(kh, kw)`` window or ``"global"`` (the pooling that
            ends the encoder).
        pool_strides: Stride per pooling window; ``null`` (or an entry ``null``) strides 2 along
            the axes a window spans and 1 elsewhere. ``[[2, 2], ...]`` is MatConvNet's literal
            scalar stride (``conf/overlays/thesis_protocol*.yaml``).
        unpool: ``switch`` or ``blind``, per unit.
        decoder_relu: ReLU at the start of each decoder, per unit (default: on; off and not
            allowed for ``conv_inverse``).
        decoder_conv: ``free``, ``init_transpose``, ``transpose_sync`` (needs the
            ``TiedTransposeSync`` callback to follow a trained encoder) or ``tied``, per unit.
        transpose_sync_bias: Bias of ``transpose_sync`` decoders: ``zero`` (fixed: the thesis's
            decoders "fixed to the transpose" cannot learn) or ``trained``.
        encoder: ``random`` (trained), ``random_fixed``, ``pretrained`` (from
            ``encoder_checkpoint``, trained) or ``pretrained_fixed``.
        encoder_checkpoint: A trained ``ForwardClassifier``/``AutoencoderClassifier`` checkpoint
            for ``pretrained*``; its convolutions are matched by shape, whatever its pooling.
        frozen: Glob patterns of parameter names frozen from the start, e.g.
            ``["decoder.*.conv.weight"]`` (a fixed random decoder) or ``["*"]`` (untrained
            baseline); weights and biases can be frozen separately.
        decoder_impl: How decoder convolutions are computed: ``auto`` (the fastest measured
            formulation per layer), ``conv_transpose``, ``conv2d`` or ``time_as_channels``
            (see ``nn.conv.decoder_conv2d``); results agree to rounding.
        predict_reconstructions: ``predict_step`` returns the reconstructions besides the codes.
        activation: ``relu`` (the thesis's) or ``tanh``, in encoders and decoder ReLUs; stored in
            checkpoints, so classifiers on this encoder build the same.
        reconstruction_loss: ``euclidean`` (the thesis's), ``relative`` or ``scale_invariant``
            (``models.objectives``); evaluation metrics stay Euclidean.
        input_noise_std: Gaussian noise (std in feature units) on training inputs; the target
            stays clean (denoising).
        freq_mask: Maximum width (rows) of a SpecAugment frequency mask on training inputs.
        time_mask: Maximum width (frames) of a SpecAugment time mask on training inputs.
        code_l1: Weight of the code's L1 norm (``train/code_l1``).
        contractive: Weight of the encoder Jacobian's squared Frobenius norm, a one-sample
            unbiased estimate (``train/contractive``).
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
        pool_strides: Sequence[PoolStride] | None = None,
        unpool: UnpoolMode | Sequence[UnpoolMode] = "switch",
        decoder_relu: bool | Sequence[bool] | None = None,
        decoder_conv: DecoderConvMode | Sequence[DecoderConvMode] = "free",
        transpose_sync_bias: SyncBias = "zero",
        encoder: EncoderMode = "random",
        encoder_checkpoint: str | None = None,
        frozen: Sequence[str] = (),
        decoder_impl: DecoderImpl = "auto",
        predict_reconstructions: bool = False,
        activation: Activation = "relu",
        reconstruction_loss: ReconstructionLoss = "euclidean",
        input_noise_std: float = 0.0,
        freq_mask: int = 0,
        time_mask: int = 0,
        code_l1: float = 0.0,
        contractive: float = 0.0,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        # Called from a subclass, this also records the subclass's own arguments (Lightning
        # collects every __init__ frame of the inheritance chain).
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        owner = type(self).__name__
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
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
            if activation != "relu":
                raise ValueError(
                    f"architecture='conv_inverse' has no nonlinearity; leave activation unset, "
                    f"got {activation!r}"
                )
            pool_sizes, pool_strides = [None] * len(conv_channels), None
            decoder_relu, relu_everywhere = False, False
        elif decoder_relu is None:
            decoder_relu = True
        pretrained = check_encoder_mode(encoder, encoder_checkpoint, "encoder_checkpoint")
        if decoder_impl not in DECODER_IMPLS:
            raise ValueError(f"decoder_impl must be one of {DECODER_IMPLS}, got {decoder_impl!r}")
        if transpose_sync_bias not in SYNC_BIASES:
            raise ValueError(
                f"transpose_sync_bias must be one of {SYNC_BIASES}, got {transpose_sync_bias!r}"
            )

        self.activation = check_activation(activation)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.architecture = architecture
        self.predict_reconstructions = predict_reconstructions
        self.specs = build_layer_specs(
            input_shape,
            conv_channels,
            kernel_sizes,
            pool_sizes,
            "same",
            num_layers=num_units,
            owner=owner,
            pool_strides=pool_strides,
        )
        unpools = _per_unit(unpool, num_units, "unpool", UNPOOL_MODES)
        relus = _per_unit(decoder_relu, num_units, "decoder_relu", (True, False))
        convs = _per_unit(decoder_conv, num_units, "decoder_conv", DECODER_CONV_MODES)
        if transpose_sync_bias != "zero" and "transpose_sync" not in convs:
            raise ValueError(
                f"transpose_sync_bias={transpose_sync_bias!r} needs a decoder_conv="
                f"'transpose_sync' unit, got decoder_conv={decoder_conv!r}"
            )

        self.objective = TrainingObjective(
            reconstruction_loss,
            input_noise_std,
            freq_mask,
            time_mask,
            code_l1,
            contractive,
            self.input_shape,
        )
        self.encoder = nn.ModuleList(
            EncoderBlock(spec, unpools[i] == "switch", relu_everywhere, activation)
            for i, spec in enumerate(self.specs)
        )
        num_loaded = 0
        if pretrained:
            # Before the decoders exist, so transpose decoders start from the pretrained filters.
            num_loaded = load_encoder_layers(
                self.encoder,
                self.specs,
                encoder_checkpoint,
                expected_kinds=("forward_classifier", "autoencoder_classifier"),
                arg_name="encoder_checkpoint",
                activation=activation,
            ).count
        self.decoder = nn.ModuleList(
            DecoderBlock(
                enc, unpools[i], relus[i], convs[i], decoder_impl, transpose_sync_bias, activation
            )
            for i, enc in enumerate(self.encoder)
        )
        self._units = [
            AutoencoderUnit(i, enc, dec)
            for i, (enc, dec) in enumerate(zip(self.encoder, self.decoder, strict=True))
        ]
        self._apply_frozen([*fixed_encoder_patterns(encoder, num_loaded), *frozen])
        self._warned_out_of_sync = False
        self._sync_checked_depth = 0

    # --------------------------------------------------------------------- structure / hooks
    @property
    def num_units(self) -> int:
        """Units built (the maximum depth)."""
        return len(self._units)

    @property
    def num_active_units(self) -> int:
        """Units used in forward; all of them for regular training."""
        return self.num_units

    @property
    def uses_switches(self) -> bool:
        """Whether a zeroed code still decodes to something: some active unit unpools by
        switches (the "chirp" switch leakage of thesis 4.2.2)."""
        return any(u.decoder.needs_switches for u in self.active_units())

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

    # ---------------------------------------------------------------------------- forward
    def encode(self, x: Tensor) -> tuple[Tensor, list[EncoderState]]:
        """Code of the active units and what their decoders need (switches, sizes).

        Figure 2 sizes: ``(B, 1, 201, 16)`` -> ``(B, 8, 99, 8)`` (1 unit) -> ``(B, 16, 48, 4)``
        -> ``(B, 32, 22, 2)`` -> ``(B, 1000, 1, 1)`` (4 units).
        """
        states = []
        for block in self.encoder[: self.num_active_units]:
            x, state = block.encode(x)
            states.append(state)
        return x, states

    def decode(self, code: Tensor, states: Sequence[EncoderState]) -> Tensor:
        """The code of ``len(states)`` units back to the input shape ``(B, C, F, T)``."""
        for i in reversed(range(len(states))):
            code = self.decoder[i](code, states[i])  # to the input shape of encoder i
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
        x, _, _ = unpack_batch(batch)
        terms = self.objective(x, self.encode, self.decode)
        loss = terms.loss
        self.check_finite(loss, "training")
        # Not on the progress bar: Lightning would read it back from the device every step.
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/euclid", terms.euclid.mean().detach(), on_step=True, on_epoch=True)
        if self.objective.has_penalties:
            # train/loss = train/reconstruction + the weighted penalties.
            self.log(
                "train/reconstruction", terms.reconstruction.detach(), on_step=True, on_epoch=True
            )
            for name, value in terms.penalties.items():
                self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=True)
        # Every part frozen (a "no training" baseline): nothing to optimise this step.
        return loss if loss.requires_grad else None

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> None:
        x, _, _ = unpack_batch(batch)
        view = self.view_name(dataloader_idx)
        code, states = self.encode(x)
        recon = self.decode(code, states)
        zero = self.decode(torch.zeros_like(code), states) if self.uses_switches else None
        metrics, attribute = self.metrics_for(stage, view, ReconstructionMetrics)
        metrics.add_batch(recon, x, zero)
        names = MEASURES + (ZERO_CODE_MEASURES if zero is not None else ())
        self.log_metrics(stage, view, metrics, attribute, names, prog_bar="euclid")

    @override
    def predict_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """``codes``: the active units' code ``(B, C', F', T')``; ``reconstructions`` ``(B, C,
        F, T)`` too when ``predict_reconstructions``."""
        code, states = self.encode(x)
        outputs = {"codes": code}
        if self.predict_reconstructions:
            outputs["reconstructions"] = self.decode(code, states)
        return outputs

    @override
    def on_fit_start(self) -> None:
        self._warned_out_of_sync = False
        self._sync_checked_depth = 0

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        # Runs after the callbacks' hook: a transpose_sync decoder that differs from its
        # encoder's transpose now has nothing re-syncing it (whatever the callback's class).
        # Comparing waits for the device, so it runs after the first step at each depth and
        # then only at logging steps.
        if self._warned_out_of_sync or self.global_step < 1:
            return
        trainer = self._trainer
        logging_step = trainer is not None and (
            self.global_step % max(1, trainer.log_every_n_steps) == 0
        )
        if self._sync_checked_depth == self.num_active_units and not logging_step:
            return
        self._sync_checked_depth = self.num_active_units
        for unit in self.active_units():
            conv = unit.decoder.conv
            if conv.mode == "transpose_sync" and not torch.equal(
                conv.weight, conv_transpose_weight(unit.encoder.conv.weight.detach())
            ):
                self._warned_out_of_sync = True
                warnings.warn(
                    "decoder_conv='transpose_sync' decoders stay at their initial transpose "
                    "unless re-synced after each step; add the TiedTransposeSync callback (or "
                    "use decoder_conv='tied').",
                    stacklevel=2,
                )
                return

    @override
    def checkpoint_metadata(self) -> dict[str, Any]:
        meta = super().checkpoint_metadata()
        meta["num_units"] = self.num_units
        meta["num_active_units"] = self.num_active_units
        return meta


class StackedAutoencoder(ConvAutoencoder):
    """The same units trained one level at a time (thesis 4.3): start with ``initial_units``,
    :meth:`grow` inserts the next (randomly initialised) unit between the trained encoders and
    decoders. Logs ``stack/active_units`` every epoch.

    All units are built at construction, so a checkpoint at any depth holds every parameter; the
    depth itself is stored in ``checkpoint["convae"]["num_active_units"]`` and restored in
    :meth:`on_load_checkpoint` (Lightning restores module state before callback state).
    Inactive units get no gradient; parameters of units fixed by strong stacking keep
    ``requires_grad=False`` but stay in the optimiser, so growing needs no new optimiser.

    Args:
        mode: ``strong`` (trained units are fixed when a unit is added) or ``weak`` (they keep
            training with the new unit).
        initial_units: Active units at the start (1 = the thesis's procedure).
        **kwargs: All :class:`ConvAutoencoder` arguments (``architecture`` must stay ``units``).
    """

    checkpoint_kind = "stacked_autoencoder"

    def __init__(self, mode: StackMode = "weak", initial_units: int = 1, **kwargs: Any) -> None:
        if mode not in STACK_MODES:
            raise ValueError(f"mode must be one of {STACK_MODES}, got {mode!r}")
        if kwargs.get("architecture", "units") != "units":
            raise ValueError(
                f"StackedAutoencoder stacks units; architecture must be 'units', got "
                f"{kwargs['architecture']!r}"
            )
        super().__init__(**kwargs)
        if not isinstance(initial_units, int) or not 1 <= initial_units <= self.num_units:
            raise ValueError(
                f"initial_units must be between 1 and num_units={self.num_units}, got "
                f"{initial_units!r}"
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
    def on_train_epoch_start(self) -> None:
        # After the callbacks' hook, so a unit StackGrowth adds now is counted in this epoch.
        self.log("stack/active_units", float(self._num_active), on_step=False, on_epoch=True)

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


def _per_unit(value: T | Sequence[T], n: int, name: str, allowed: Sequence[T]) -> list[T]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must be one value or {n} values (one per unit), got {value!r}")
    for v in values:
        if v not in allowed:
            raise ValueError(f"{name} must be one of {tuple(allowed)}, got {v!r}")
    return values
