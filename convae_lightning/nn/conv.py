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
    "CONV_IMPLS",
    "DECODER_CONV_MODES",
    "DECODER_IMPLS",
    "SYNC_BIASES",
    "ConvImpl",
    "DecoderConv2d",
    "DecoderConvMode",
    "DecoderImpl",
    "EncoderConv2d",
    "SyncBias",
    "conv_transpose_weight",
    "decoder_conv2d",
    "gemm_conv2d",
    "padded_conv2d",
    "prefers_gemm",
    "prefers_time_as_channels",
    "same_padding",
    "time_as_channels_conv2d",
]

DecoderConvMode = Literal["free", "init_transpose", "transpose_sync", "tied"]
DECODER_CONV_MODES: tuple[str, ...] = get_args(DecoderConvMode)
#: How a padded stride-1 convolution is computed (:func:`padded_conv2d`).
ConvImpl = Literal["auto", "direct", "time_as_channels", "gemm"]
CONV_IMPLS: tuple[str, ...] = get_args(ConvImpl)
#: How a decoder convolution is computed (:func:`decoder_conv2d`).
DecoderImpl = Literal["auto", "conv_transpose", "conv2d", "time_as_channels"]
DECODER_IMPLS: tuple[str, ...] = get_args(DecoderImpl)
#: ``(top, bottom, left, right)`` zero padding.
Padding4 = tuple[int, int, int, int]
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


def prefers_time_as_channels(
    in_channels: int, out_channels: int, kernel_width: int, input_width: int
) -> bool:
    """Whether :func:`time_as_channels_conv2d` beats a direct convolution (``impl="auto"``).

    It costs ``input_width / kernel_width`` times the direct FLOPs, so it is only chosen when the
    kernel spans the whole input width (no extra FLOPs). It wins where one side has very few
    channels (the 1 -> 8 first encoder and 8 -> 1 last decoder of Figure 2): oneDNN computes those
    on slow generic paths (the last decoder's weight gradient at ~5 GFLOP/s), whereas time as
    channels makes them 16 -> 128 and 128 -> 16 channel 1-D convolutions. Measured per layer by
    ``benchmarks/layers.py`` (2.8x for the first encoder, 6x for the last decoder on CPU).
    """
    return kernel_width >= input_width and min(in_channels, out_channels) <= 4


def _tap_index(width: int, out_width: int, kernel_width: int, left: int, device) -> Tensor:
    # (out_width, width): which kernel column joins output column t to input column t'
    # (t' - t + left), or ``kernel_width`` (a zero column) where none does.
    tap = (
        torch.arange(width, device=device)[None, :]
        - torch.arange(out_width, device=device)[:, None]
    )
    tap = tap + left
    return torch.where((tap >= 0) & (tap < kernel_width), tap, kernel_width)


def time_as_channels_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: Padding4
) -> Tensor:
    """``conv2d(pad(x, padding), weight) + bias`` computed as a 1-D convolution over frequency
    with the time axis folded into the channels.

    Output ``(t, o)`` at frequency ``f`` sums input ``(t', c)`` over the kernel rows with the
    block-Toeplitz weight ``W'[(t, o), (t', c), i] = weight[o, c, i, t' - t + left]`` (zero where
    the kernel does not reach): for a kernel as wide as the input it is the same arithmetic, in
    GEMM shapes oneDNN runs fast (see :func:`prefers_time_as_channels`). Equal to the direct
    convolution to float rounding, gradients included (``W'`` is a gather of ``weight``).

    Folding ``(t, c)`` into channels is free in the channels-last layout ``(B, H, W, C)``: a
    channels-last (or single-channel) input is read in place and the output comes back
    channels-last, the layout in which the max pooling that follows is fastest.

    Args:
        x: ``(B, C, H, W)``.
        weight: ``(O, C, kh, kw)``.
        bias: ``(O,)`` or ``None``.
        padding: ``(top, bottom, left, right)``.

    Returns:
        ``(B, O, H + top + bottom - kh + 1, W + left + right - kw + 1)``, channels-last.
    """
    top, bottom, left, right = padding
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = h + top + bottom - kh + 1, w + left + right - kw + 1
    taps = _tap_index(w, wo, kw, left, x.device)  # (wo, w)
    toeplitz = F.pad(weight, (0, 1))[..., taps]  # (o, c, kh, wo, w), zero column at kw
    toeplitz = toeplitz.permute(3, 0, 4, 1, 2).reshape(wo * o, w * c, kh, 1)  # (t,o), (t',c)
    # A channels-last weight makes the convolution channels-last whatever the input's strides.
    toeplitz = toeplitz.contiguous(memory_format=torch.channels_last)
    # (B, H, W, C) memory viewed as (B, W*C, H, 1) channels-last: no copy for such inputs.
    folded = x.permute(0, 2, 3, 1).reshape(b, h, w * c).transpose(1, 2).unsqueeze(-1)
    if bias is not None:
        bias = bias.repeat(wo)  # (t, o) order
    if top == bottom:
        out = F.conv2d(folded, toeplitz, bias, padding=(top, 0))
    elif w * c <= wo * o:
        # Uneven padding: copy whichever side is smaller (here the input) to pad it.
        out = F.conv2d(F.pad(folded, (0, 0, top, bottom)), toeplitz, bias)
    else:
        pad = max(top, bottom)
        out = F.conv2d(folded, toeplitz, bias, padding=(pad, 0))[:, :, pad - top : pad - top + ho]
    # (B, (t, o), ho, 1) -> (B, ho, wo, o) -> (B, o, ho, wo) channels-last.
    out = out.permute(0, 2, 3, 1).reshape(b, ho, wo, o)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def gemm_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: Padding4) -> Tensor:
    """``conv2d(pad(x, padding), weight) + bias`` as one GEMM over channels-last patches.

    The patches ``(B*H'*W', kh*kw*C)`` times the filters ``(kh*kw*C, O)``: for a layer with
    more filters than patch values (Figure 2's 1000-filter layer: 1000 vs 320) the patch matrix
    is no larger than the output, and one large GEMM runs ~1.3x faster than oneDNN's
    convolution on our CPUs (``benchmarks/layers.py``). The output is channels-last.

    Args:
        x: ``(B, C, H, W)``.
        weight: ``(O, C, kh, kw)``.
        bias: ``(O,)`` or ``None``.
        padding: ``(top, bottom, left, right)``.
    """
    top, bottom, left, right = padding
    b, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    rows = F.pad(x.permute(0, 2, 3, 1), (0, 0, left, right, top, bottom))  # (B, H+, W+, C)
    patches = rows.unfold(1, kh, 1).unfold(2, kw, 1)  # (B, H', W', C, kh, kw), a view
    ho, wo = patches.shape[1:3]
    patches = patches.permute(0, 1, 2, 4, 5, 3).reshape(b * ho * wo, kh * kw * c)
    filters = weight.permute(0, 2, 3, 1).reshape(o, kh * kw * c)  # same (i, j, c) order
    out = F.linear(patches, filters, bias)  # (B*H'*W', O)
    return out.view(b, ho, wo, o).permute(0, 3, 1, 2)


def prefers_gemm(in_channels: int, out_channels: int, kernel_size: tuple[int, int]) -> bool:
    """Whether :func:`gemm_conv2d` is chosen by ``impl="auto"``: when the patch matrix is no
    larger than the output (more filters than values in a patch)."""
    return out_channels >= in_channels * kernel_size[0] * kernel_size[1]


def padded_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: Padding4, impl: ConvImpl = "auto"
) -> Tensor:
    """Stride-1 ``conv2d(pad(x, padding), weight) + bias``: every encoder convolution, and the
    decoders' when computed as ``conv2d``.

    Args:
        x: ``(B, C, H, W)``.
        weight: ``(O, C, kh, kw)``.
        bias: ``(O,)`` or ``None``.
        padding: ``(top, bottom, left, right)`` zeros.
        impl: ``direct`` (``F.conv2d``; symmetric padding inside the call, asymmetric padding as
            an explicit ``F.pad``, as ``padding="same"`` with even kernels would do with a
            warning), ``time_as_channels`` (:func:`time_as_channels_conv2d`), ``gemm``
            (:func:`gemm_conv2d`) or ``auto``: time as channels where
            :func:`prefers_time_as_channels`, else GEMM where :func:`prefers_gemm`, else
            direct.
    """
    if impl == "auto":
        o, c, kh, kw = weight.shape
        if prefers_time_as_channels(c, o, kw, x.shape[-1]):
            impl = "time_as_channels"
        elif prefers_gemm(c, o, (kh, kw)):
            impl = "gemm"
        else:
            impl = "direct"
    if impl == "time_as_channels":
        return time_as_channels_conv2d(x, weight, bias, padding)
    if impl == "gemm":
        return gemm_conv2d(x, weight, bias, padding)
    if impl != "direct":
        raise ValueError(f"impl must be one of {CONV_IMPLS}, got {impl!r}")
    top, bottom, left, right = padding
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, padding=(top, left))
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias)


def decoder_conv2d(
    y: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    transposed_weight: Tensor | None = None,
    impl: DecoderImpl = "auto",
) -> Tensor:
    """Same-padded stride-1 decoder convolution ``conv2d(pad(y), weight) + bias``.

    The decoder pads with the *mirrored* split of the encoder (extra row/column at the top/left
    for even kernels) so that, with ``weight = T(F)``, it is the exact adjoint of the encoder's
    convolution with ``F``. That adjoint is what ``conv_transpose2d(y, F)`` computes, and on our
    CPUs it is ~3x faster than ``conv2d`` for the 8->1 last decoder (cpu-performance-notes.md);
    time as channels is faster still for that layer. All implementations agree to float
    rounding.

    Args:
        y: Input of shape ``(B, C_in, H, W)``.
        weight: Decoder weight in conv2d layout ``(C_out, C_in, kh, kw)``; may be ``None`` when
            ``transposed_weight`` is given.
        bias: Optional bias ``(C_out,)``.
        transposed_weight: ``T(weight)`` if the caller already has it (a tied decoder has it for
            free: it is the encoder's weight), saving the flip copy.
        impl: ``conv_transpose``, ``conv2d``, ``time_as_channels`` or ``auto``: time as channels
            where :func:`prefers_time_as_channels`, else ``conv_transpose``.
    """
    if transposed_weight is None:
        if weight is None:
            raise ValueError("decoder_conv2d needs weight or transposed_weight")
        transposed_weight = conv_transpose_weight(weight)
    if impl not in DECODER_IMPLS:
        raise ValueError(f"impl must be one of {DECODER_IMPLS}, got {impl!r}")
    c_in, c_out, kh, kw = transposed_weight.shape  # the encoder layout, in and out swapped
    if impl == "auto":
        wide = prefers_time_as_channels(c_in, c_out, kw, y.shape[-1])
        impl = "time_as_channels" if wide else "conv_transpose"
    top, bottom, left, right = same_padding((kh, kw))
    if impl == "conv_transpose":
        h, w = y.shape[-2:]
        # padding=(top, left) crops that much from both ends of the full transpose; for even
        # kernels one extra trailing row/column remains, which the slice drops.
        out = F.conv_transpose2d(y, transposed_weight, bias, padding=(top, left))
        if out.shape[-2] != h or out.shape[-1] != w:
            out = out[..., :h, :w]
        return out
    if weight is None:
        weight = conv_transpose_weight(transposed_weight)
    mirrored = (bottom, top, right, left)
    return padded_conv2d(
        y, weight, bias, mirrored, impl="direct" if impl == "conv2d" else "time_as_channels"
    )


class EncoderConv2d(nn.Module):
    """Stride-1 convolution with full ("same") or no ("valid") padding.

    Args:
        in_channels: Input channels (> 0).
        out_channels: Output channels (> 0).
        kernel_size: ``(kh, kw)``, both > 0.
        padding: ``"same"`` keeps the spatial size (needed for invertible units, thesis 4.2.1);
            ``"valid"`` is the unpadded variant of Table 2.
        impl: How the convolution is computed (:func:`padded_conv2d`); results agree to
            rounding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        padding: Padding = "same",
        impl: ConvImpl = "auto",
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        _check_positive(kernel_size_h=kernel_size[0], kernel_size_w=kernel_size[1])
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if impl not in CONV_IMPLS:
            raise ValueError(f"impl must be one of {CONV_IMPLS}, got {impl!r}")
        self.impl = impl
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        _default_init(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)`` (same) or ``(B, C_out, H-kh+1, W-kw+1)``."""
        padding = same_padding(self.kernel_size) if self.padding == "same" else (0, 0, 0, 0)
        return padded_conv2d(x, self.weight, self.bias, padding, impl=self.impl)

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
        impl: DecoderImpl = "auto",
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

    def transposed_weight(self) -> Tensor:
        """``T(weight)`` in the encoder's layout ``(in_channels, out_channels, kh, kw)``: what
        ``conv_transpose2d`` takes (for a tied decoder, the encoder's weight itself)."""
        if self.mode == "tied":
            return self._encoder.weight
        return conv_transpose_weight(self.weight)

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
