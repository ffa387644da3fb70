"""Stride-1 convolutions for encoders and decoders, and the thesis's convolutional transpose.

All decoder convolutions go through :func:`decoder_conv2d`, the one place that decides how they
are computed (``conv_transpose2d`` with the flipped kernel, or a plain padded ``conv2d``).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DECODER_CONV_MODES",
    "DECODER_IMPLS",
    "SYNC_BIASES",
    "DecoderConv2d",
    "DecoderConvMode",
    "DecoderImpl",
    "EncoderConv2d",
    "SyncBias",
    "conv_transpose_weight",
    "decoder_conv2d",
    "same_padding",
]

DecoderConvMode = Literal["free", "init_transpose", "transpose_sync", "tied"]
DECODER_CONV_MODES: tuple[str, ...] = get_args(DecoderConvMode)
DecoderImpl = Literal["conv_transpose", "conv2d"]
DECODER_IMPLS: tuple[str, ...] = get_args(DecoderImpl)
#: Bias of a ``transpose_sync`` decoder: ``zero`` (fixed, the thesis's) or ``trained``.
SyncBias = Literal["zero", "trained"]
SYNC_BIASES: tuple[str, ...] = get_args(SyncBias)
Padding = Literal["same", "valid"]


def same_padding(kernel_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Full ("same") padding of a stride-1 convolution as ``(top, bottom, left, right)``.

    Total padding per axis is ``k - 1``; for even kernels the extra row/column goes to the
    bottom/right, as PyTorch's ``padding="same"`` does.
    """
    kh, kw = kernel_size
    return (kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2


def conv_transpose_weight(weight: Tensor) -> Tensor:
    """The thesis's convolutional transpose ``T(F)[i,j,k,d] = F[H-i+1, W-j+1, d, k]`` (B.8.1).

    In PyTorch layout ``(out, in, kh, kw)``: swap the channel axes and flip both spatial axes.
    ``T`` is an involution (``T(T(w)) == w``). A same-padded stride-1 convolution with ``T(w)``
    and mirrored padding (see :func:`decoder_conv2d`) is the exact adjoint of the convolution
    with ``w``, which is what makes it an approximate inverse.

    Args:
        weight: A convolution weight of shape ``(out_channels, in_channels, kh, kw)``.

    Returns:
        A new tensor of shape ``(in_channels, out_channels, kh, kw)``.
    """
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (out, in, kh, kw), got shape {tuple(weight.shape)}")
    return weight.transpose(0, 1).flip(-2, -1)


def decoder_conv2d(
    y: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    transposed_weight: Tensor | None = None,
    impl: DecoderImpl = "conv_transpose",
) -> Tensor:
    """Same-padded stride-1 decoder convolution ``conv2d(pad(y), weight) + bias``.

    The decoder pads with the *mirrored* split of the encoder (extra row/column at the top/left
    for even kernels) so that, with ``weight = T(F)``, it is the exact adjoint of the encoder's
    convolution with ``F``. That adjoint is what ``conv_transpose2d(y, F)`` computes, and on our
    CPUs it is ~3x faster for the 8->1 last decoder (cpu-performance-notes.md), so
    ``impl="conv_transpose"`` is the default. Both implementations agree to float rounding.

    Args:
        y: Input of shape ``(B, C_in, H, W)``.
        weight: Decoder weight in conv2d layout ``(C_out, C_in, kh, kw)``; may be ``None`` when
            ``transposed_weight`` is given.
        bias: Optional bias ``(C_out,)``.
        transposed_weight: ``T(weight)`` if the caller already has it (a tied decoder has it for
            free: it is the encoder's weight), saving the flip copy.
        impl: ``"conv_transpose"`` or ``"conv2d"``.
    """
    if transposed_weight is None:
        if weight is None:
            raise ValueError("decoder_conv2d needs weight or transposed_weight")
        transposed_weight = conv_transpose_weight(weight)
    kh, kw = transposed_weight.shape[-2:]
    top, bottom, left, right = same_padding((kh, kw))
    if impl == "conv_transpose":
        h, w = y.shape[-2:]
        # padding=(top, left) crops that much from both ends of the full transpose; for even
        # kernels one extra trailing row/column remains, which the slice drops.
        out = F.conv_transpose2d(y, transposed_weight, bias, padding=(top, left))
        if out.shape[-2] != h or out.shape[-1] != w:
            out = out[..., :h, :w]
        return out
    if impl == "conv2d":
        if weight is None:
            weight = conv_transpose_weight(transposed_weight)
        if top == bottom and left == right:
            return F.conv2d(y, weight, bias, padding=(top, left))
        return F.conv2d(F.pad(y, (right, left, bottom, top)), weight, bias)
    raise ValueError(f"impl must be one of {DECODER_IMPLS}, got {impl!r}")


class EncoderConv2d(nn.Module):
    """Stride-1 convolution with full ("same") or no ("valid") padding.

    Args:
        in_channels: Input channels (> 0).
        out_channels: Output channels (> 0).
        kernel_size: ``(kh, kw)``, both > 0.
        padding: ``"same"`` keeps the spatial size (needed for invertible units, thesis 4.2.1);
            ``"valid"`` is the unpadded variant of Table 2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        padding: Padding = "same",
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        _check_positive(kernel_size_h=kernel_size[0], kernel_size_w=kernel_size[1])
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        _default_init(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)`` (same) or ``(B, C_out, H-kh+1, W-kw+1)``."""
        if self.padding == "valid":
            return F.conv2d(x, self.weight, self.bias)
        top, bottom, left, right = same_padding(self.kernel_size)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, padding=(top, left))
        # Explicit asymmetric padding: padding="same" with even kernels also copies, and warns.
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding={self.padding!r}"
        )


class DecoderConv2d(nn.Module):
    """Same-padded stride-1 decoder convolution inverting an :class:`EncoderConv2d`.

    It maps the encoder's output channels back to its input channels. Its weight, in conv2d layout
    ``(encoder.in_channels, encoder.out_channels, kh, kw)``, is handled according to ``mode``:

    - ``free``: randomly initialised, trained.
    - ``init_transpose``: initialised to ``T(encoder.weight)``, then trained freely.
    - ``transpose_sync``: a *buffer* equal to ``T(encoder.weight)``: no gradient of its own.
      :meth:`sync_transpose_` re-sets it (the ``TiedTransposeSync`` callback calls it after every
      optimiser step, giving the thesis's "fixed transpose"). Its bias is a zero buffer too
      (``sync_bias="zero"``): the thesis's fixed-transpose decoders have "no capability to
      learn"; ``sync_bias="trained"`` gives it a trained bias instead.
    - ``tied``: no storage of its own; ``weight`` is ``T(encoder.weight)`` computed on the fly,
      so gradients flow into the encoder (beyond the thesis). The encoder's parameter is not
      registered a second time, so it appears once in ``parameters()`` (Lightning#16465).

    The bias is always the decoder's own (B.8.1): zeros for the transpose modes (so the decoder
    starts as the exact transpose), PyTorch's default init for ``free``. The kernel is the
    encoder's (the transpose keeps the filter size).

    Args:
        encoder: The convolution to invert (must be same-padded).
        mode: One of ``free | init_transpose | transpose_sync | tied``.
        impl: How the convolution is computed, see :func:`decoder_conv2d`.
        sync_bias: ``zero`` (a fixed zero buffer) or ``trained``; only for ``transpose_sync``.
    """

    def __init__(
        self,
        encoder: EncoderConv2d,
        mode: DecoderConvMode = "free",
        impl: DecoderImpl = "conv_transpose",
        sync_bias: SyncBias = "zero",
    ) -> None:
        super().__init__()
        if mode not in DECODER_CONV_MODES:
            raise ValueError(f"decoder_conv must be one of {DECODER_CONV_MODES}, got {mode!r}")
        if impl not in DECODER_IMPLS:
            raise ValueError(f"decoder_impl must be one of {DECODER_IMPLS}, got {impl!r}")
        if sync_bias not in SYNC_BIASES:
            raise ValueError(f"sync_bias must be one of {SYNC_BIASES}, got {sync_bias!r}")
        if encoder.padding != "same":
            raise ValueError("a decoder can only invert a same-padded (full padding) convolution")
        self.mode = mode
        self.impl = impl
        self.in_channels = encoder.out_channels
        self.out_channels = encoder.in_channels
        self.kernel_size = encoder.kernel_size
        # Not registered as a submodule: the encoder's parameters must not appear twice.
        object.__setattr__(self, "_encoder", encoder)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        if mode == "free":
            self.weight = nn.Parameter(torch.empty(shape))
            self.bias = nn.Parameter(torch.empty(self.out_channels))
            _default_init(self.weight, self.bias)
        elif mode == "transpose_sync":
            self.register_buffer("weight", conv_transpose_weight(encoder.weight.detach()).clone())
            if sync_bias == "zero":
                self.register_buffer("bias", torch.zeros(self.out_channels))
            else:
                self.bias = nn.Parameter(torch.zeros(self.out_channels))
        else:
            self.bias = nn.Parameter(torch.zeros(self.out_channels))
            if mode == "init_transpose":
                self.weight = nn.Parameter(conv_transpose_weight(encoder.weight.detach()).clone())

    @property
    def encoder(self) -> EncoderConv2d:
        """The convolution this decoder inverts."""
        return self._encoder

    def __getattr__(self, name: str) -> Tensor | nn.Module:
        # A tied decoder stores no weight (it would duplicate the encoder's parameter); reading
        # ``.weight`` gives T(encoder.weight), with gradient. Other modes register ``weight``.
        if name == "weight" and self.__dict__.get("mode") == "tied":
            return conv_transpose_weight(self._encoder.weight)
        return super().__getattr__(name)

    @torch.no_grad()
    def sync_transpose_(self) -> None:
        """Re-set a ``transpose_sync`` weight to ``T(encoder.weight)``; no-op for other modes."""
        if self.mode == "transpose_sync":
            self.weight.copy_(conv_transpose_weight(self._encoder.weight))

    def forward(self, y: Tensor) -> Tensor:
        """``(B, encoder.out_channels, H, W) -> (B, encoder.in_channels, H, W)``."""
        if self.mode == "tied":
            # T(T(F)) = F: the conv_transpose path needs the encoder's weight as it is stored.
            return decoder_conv2d(
                y, None, self.bias, transposed_weight=self._encoder.weight, impl=self.impl
            )
        return decoder_conv2d(y, self.weight, self.bias, impl=self.impl)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"mode={self.mode!r}, impl={self.impl!r}"
        )


def _default_init(weight: Tensor, bias: Tensor) -> None:
    # PyTorch's nn.Conv2d initialisation; the thesis does not state MatConvNet's init scale.
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
