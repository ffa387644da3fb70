"""Encoder and decoder blocks, and the autoencoder unit that pairs them (thesis 4.3, Figure 4).

Parameter names are stable and shared between models: ``encoder.{i}.conv.weight|bias`` in every
model, ``decoder.{i}.conv.weight|bias`` in autoencoders, where decoder ``i`` inverts encoder ``i``
(decoder 0 produces the reconstruction). Callbacks (LayerFreezing, TiedTransposeSync) and
checkpoint transfer between autoencoders and classifiers rely on these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convae_lightning.nn.architecture import LayerSpec
from convae_lightning.nn.conv import (
    DecoderConv2d,
    DecoderConvMode,
    DecoderImpl,
    EncoderConv2d,
    SyncBias,
    same_padding,
)
from convae_lightning.nn.global_decode import (
    global_blind_decode,
    global_switch_decode,
    sparse_decode_allowed,
)
from convae_lightning.nn.pool import BlindUpsample2d, MaxPool2dSwitches, SwitchUnpool2d

__all__ = [
    "ACTIVATIONS",
    "UNPOOL_MODES",
    "Activation",
    "AutoencoderUnit",
    "DecoderBlock",
    "EncoderBlock",
    "EncoderState",
    "UnpoolMode",
    "check_activation",
]

UnpoolMode = Literal["switch", "blind"]
UNPOOL_MODES: tuple[str, ...] = get_args(UnpoolMode)
#: The units' nonlinearity: ``relu`` (the thesis's) or ``tanh`` (its section 8 asks for it).
Activation = Literal["relu", "tanh"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
_ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "tanh": torch.tanh}


def check_activation(activation: str, arg_name: str = "activation") -> str:
    """``activation`` itself when it is one of :data:`ACTIVATIONS`.

    Raises:
        ValueError: naming ``arg_name`` and the allowed values.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"{arg_name} must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


class EncoderState(NamedTuple):
    """What an encoder block hands to its decoder: the switches and the pre-pooling size."""

    switches: Tensor | None
    conv_hw: tuple[int, int]


class EncoderBlock(nn.Module):
    """Convolution, max pooling (optional, possibly global), ReLU (or ``activation``).

    Args:
        spec: The resolved layer.
        return_switches: Record pooling switches (autoencoders with switch unpooling).
        relu: Apply the nonlinearity (off only for the "conv + inverse" architecture I of
            thesis 5.1).
        activation: Which nonlinearity: ``relu`` (the thesis's) or ``tanh``. A plain attribute
            (no parameters): a model taking a checkpoint's encoder may re-set it.
    """

    def __init__(
        self,
        spec: LayerSpec,
        return_switches: bool = False,
        relu: bool = True,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.conv = EncoderConv2d(
            spec.in_channels, spec.out_channels, spec.kernel_size, padding=spec.padding
        )
        self.pool: MaxPool2dSwitches | None = None
        if spec.pool != "none":
            self.pool = MaxPool2dSwitches(
                spec.pool_size, spec.pool_stride, return_switches=return_switches
            )
        self.return_switches = return_switches
        self.relu = relu
        self.activation = check_activation(activation)

    def encode(self, x: Tensor) -> tuple[Tensor, EncoderState]:
        """``(B, C_in, H, W) -> (B, C_out, H', W')`` (H', W' after pooling) and the state."""
        h = self.conv(x)  # (B, C_out, H, W) with same padding
        conv_hw = (h.shape[-2], h.shape[-1])
        switches = None
        if self.pool is not None:
            if self.return_switches:
                h, switches = self.pool(h)  # both (B, C_out, H', W')
            else:
                h = self.pool(h)  # (B, C_out, H', W')
        if self.relu:
            # Pool then ReLU (or tanh) equals ReLU then pool (both monotone) and touches 4x
            # fewer values.
            h = _ACTIVATION_FUNCTIONS[self.activation](h)
        return h, EncoderState(switches, conv_hw)

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x)[0]


class DecoderBlock(nn.Module):
    """Optional ReLU, unpooling (switch or blind), decoder convolution.

    Args:
        encoder: The block this decoder inverts.
        unpool: ``switch`` (B.8.2) or ``blind`` (B.8.3).
        relu: Apply a ReLU to the input first (thesis 5.2's "decoder ReLU").
        activation: The nonlinearity ``relu`` applies: ``relu`` or ``tanh`` (the encoder's).
        conv_mode: See :class:`~convae_lightning.nn.conv.DecoderConv2d`.
        impl: How the decoder convolution is computed.
        sync_bias: Bias of a ``transpose_sync`` decoder convolution (``zero`` or ``trained``).
    """

    def __init__(
        self,
        encoder: EncoderBlock,
        unpool: UnpoolMode = "switch",
        relu: bool = True,
        conv_mode: DecoderConvMode = "free",
        impl: DecoderImpl = "auto",
        sync_bias: SyncBias = "zero",
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        if unpool not in UNPOOL_MODES:
            raise ValueError(f"unpool must be one of {UNPOOL_MODES}, got {unpool!r}")
        spec = encoder.spec
        self.unpool_mode = unpool
        self.relu = relu
        self.activation = check_activation(activation)
        self.unpool: SwitchUnpool2d | BlindUpsample2d | None = None
        if spec.pool != "none":
            cls = SwitchUnpool2d if unpool == "switch" else BlindUpsample2d
            self.unpool = cls(spec.pool_size, spec.pool_stride)
        self.conv = DecoderConv2d(encoder.conv, mode=conv_mode, impl=impl, sync_bias=sync_bias)

    @property
    def needs_switches(self) -> bool:
        return isinstance(self.unpool, SwitchUnpool2d)

    @property
    def fuses_global_unpool(self) -> bool:
        """Whether unpooling a global pooling and the convolution run as one small product
        (:mod:`~convae_lightning.nn.global_decode`; ``impl="auto"`` only)."""
        return (
            self.unpool is not None and self.unpool.kernel_size is None and self.conv.impl == "auto"
        )

    def forward(self, z: Tensor, state: EncoderState) -> Tensor:
        """``(B, C_out, H', W') -> (B, C_in, H, W)``: the encoder block's input shape."""
        if self.relu:
            z = _ACTIVATION_FUNCTIONS[self.activation](z)
        if self.fuses_global_unpool and sparse_decode_allowed(z):
            conv = self.conv
            top, _, left, _ = same_padding(conv.kernel_size)
            if isinstance(self.unpool, SwitchUnpool2d):
                return global_switch_decode(
                    z,
                    state.switches,
                    conv.transposed_weight(),
                    conv.bias,
                    state.conv_hw,
                    (top, left),
                )
            return global_blind_decode(
                z, conv.transposed_weight(), conv.bias, state.conv_hw, (top, left)
            )
        if isinstance(self.unpool, SwitchUnpool2d):
            z = self.unpool(z, state.switches, state.conv_hw)  # (B, C_out, H, W)
        elif self.unpool is not None:
            z = self.unpool(z, state.conv_hw)  # (B, C_out, H, W)
        return self.conv(z)


class AutoencoderUnit:
    """A view pairing ``encoder[i]`` and ``decoder[i]`` of an autoencoder (one thesis "unit").

    Not an ``nn.Module``: the blocks are registered once, under ``encoder``/``decoder`` of the
    model, so parameter names stay ``encoder.{i}...``/``decoder.{i}...``.
    """

    def __init__(self, index: int, encoder: EncoderBlock, decoder: DecoderBlock) -> None:
        self.index = index
        self.encoder = encoder
        self.decoder = decoder

    def parameters(self) -> Iterator[nn.Parameter]:
        """The unit's parameters, each once (a tied decoder adds only its bias)."""
        yield from self.encoder.parameters()
        yield from self.decoder.parameters()

    def sync_transpose_(self) -> None:
        """Re-set a ``transpose_sync`` decoder weight to the encoder's transpose."""
        self.decoder.conv.sync_transpose_()

    def __repr__(self) -> str:
        return f"AutoencoderUnit(index={self.index}, decoder_conv={self.decoder.conv.mode!r})"
