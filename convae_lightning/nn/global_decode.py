"""Decoding the global pooling layer without convolving its zeros.

The unit that ends the encoder pools each of its C maps (Figure 2: 1000 maps of 22x2) to one
value. Unpooling puts that value back at one position (switch unpooling) or everywhere (blind
upsampling), and the decoder convolution follows. Done literally, the convolution runs over a
map that is 97.7% zeros (switch) or constant (blind): 28 MFLOP per sample in Figure 2, a third of
a 4-unit CAE. Both cases reduce to small dense products with exactly the same result (to float
rounding), gradients included:

- switch: every channel ``c`` adds ``z[c] * T[c]`` (its kernel, ``T`` the decoder's
  conv-transpose weight) around its switch. Summing the kernels of the channels that share a
  switch is an ``embedding_bag`` over channels sorted by switch; ``F.fold`` places the sums.
- blind: the constant map of channel ``c`` convolves to a fixed response ``A[c]``, so the output
  is ``z @ A``, with ``A = T @ taps`` (which taps reach which output position) per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["global_blind_decode", "global_switch_decode", "sparse_decode_allowed"]


def sparse_decode_allowed(x: Tensor) -> bool:
    """Whether the fused paths may run: not on CUDA under ``use_deterministic_algorithms``,
    where ``embedding_bag``'s backward is not guaranteed deterministic (the dense convolution
    is used there instead)."""
    return not (x.is_cuda and torch.are_deterministic_algorithms_enabled())


def _transpose_geometry(
    transposed_weight: Tensor, size: tuple[int, int], padding: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    # conv_transpose2d(y, T, padding=(top, left)) of an (H, W) map is (H - 1 + kh - 2 top,
    # W - 1 + kw - 2 left) before the crop to (H, W) that decoder_conv2d applies.
    kh, kw = transposed_weight.shape[-2:]
    full = (size[0] - 1 + kh - 2 * padding[0], size[1] - 1 + kw - 2 * padding[1])
    return (kh, kw), full


def global_switch_decode(
    z: Tensor,
    switches: Tensor,
    transposed_weight: Tensor,
    bias: Tensor | None,
    size: tuple[int, int],
    padding: tuple[int, int],
) -> Tensor:
    """``conv_transpose2d(switch_unpool(z, switches, size), T, bias, padding)`` cropped to
    ``size``, without building the unpooled map.

    Args:
        z: Pooled values ``(B, C, 1, 1)``.
        switches: Flat positions ``(B, C, 1, 1)`` in ``[0, H*W)``.
        transposed_weight: ``T`` of shape ``(C, O, kh, kw)`` (the encoder's layout).
        bias: ``(O,)`` or ``None``.
        size: ``(H, W)`` of the unpooled map and of the output.
        padding: ``(top, left)`` of the transposed convolution (see ``decoder_conv2d``).

    Returns:
        ``(B, O, H, W)``.
    """
    b, c = z.shape[:2]
    positions = size[0] * size[1]
    kernel, full = _transpose_geometry(transposed_weight, size, padding)
    flat_switches = switches.reshape(b, c)
    # Channels sorted by switch within each sample: bag (b, p) holds the channels pooled at p.
    _, channels = torch.sort(flat_switches, dim=1, stable=True)  # (B, C) channel ids
    counts = torch.zeros(b, positions, dtype=torch.long, device=z.device)
    counts.scatter_add_(1, flat_switches, torch.ones_like(flat_switches))
    offsets = counts.flatten().cumsum(0) - counts.flatten()  # first entry of each bag
    # One dtype for both (under autocast z may be bfloat16 while the weight is float32).
    dtype = torch.promote_types(z.dtype, transposed_weight.dtype)
    values = z.reshape(b, c).gather(1, channels).to(dtype)  # (B, C), in bag order
    kernels = transposed_weight.reshape(c, -1).to(dtype)  # (C, O*kh*kw)
    sums = F.embedding_bag(
        channels.flatten(), kernels, offsets, mode="sum", per_sample_weights=values.flatten()
    )  # (B*H*W, O*kh*kw): the summed kernels placed at each position
    columns = sums.view(b, positions, -1).transpose(1, 2)  # (B, O*kh*kw, H*W)
    out = F.fold(columns, full, kernel, padding=padding)[..., : size[0], : size[1]]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def global_blind_decode(
    z: Tensor,
    transposed_weight: Tensor,
    bias: Tensor | None,
    size: tuple[int, int],
    padding: tuple[int, int],
) -> Tensor:
    """``conv_transpose2d(z broadcast to size, T, bias, padding)`` cropped to ``size``, as one
    ``(B, C) @ (C, O*H*W)`` product.

    Args:
        z: Pooled values ``(B, C, 1, 1)``.
        transposed_weight: ``T`` of shape ``(C, O, kh, kw)``.
        bias: ``(O,)`` or ``None``.
        size: ``(H, W)`` of the output.
        padding: ``(top, left)`` of the transposed convolution.

    Returns:
        ``(B, O, H, W)``.
    """
    b, c = z.shape[:2]
    _, out_channels, kh, kw = transposed_weight.shape
    # Which kernel taps land on each output position from some position of the map: a
    # transposed convolution of a ones map with one identity kernel per tap, (kh*kw, H*W).
    identity = torch.eye(kh * kw, dtype=z.dtype, device=z.device).view(1, kh * kw, kh, kw)
    ones = z.new_ones(1, 1, *size)
    taps = F.conv_transpose2d(ones, identity, padding=padding)[..., : size[0], : size[1]]
    # Channel c's response to a constant 1: (C*O, kh*kw) @ (kh*kw, H*W) -> (C, O*H*W).
    response = transposed_weight.reshape(c * out_channels, kh * kw) @ taps.reshape(kh * kw, -1)
    out = (z.reshape(b, c) @ response.view(c, -1)).view(b, out_channels, *size)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
