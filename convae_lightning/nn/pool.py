"""Max pooling that records its switches, and the two ways of inverting it (thesis B.8.2, B.8.3).

A pooling window is ``(kh, kw)`` with stride ``(sh, sw)`` and no padding (201 -> 99 with 5/2, as in
Figure 2). ``kernel_size=None`` means *global* pooling over the whole map (the layer that ends the
encoder, thesis 4.2.1).

Switches are flat ``H*W`` indices into each channel's map, as ``F.max_pool2d(...,
return_indices=True)`` gives them; every operation here has a deterministic CUDA implementation,
so switch and blind autoencoders train under ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BlindUpsample2d",
    "MaxPool2dSwitches",
    "SwitchUnpool2d",
    "global_max_pool_with_switches",
    "pool_output_size",
]

Size2 = tuple[int, int]


def pool_output_size(size: Size2, kernel_size: Size2 | None, stride: Size2 | None) -> Size2:
    """Output ``(H', W')`` of an unpadded pooling layer; ``kernel_size=None`` is global (1, 1)."""
    if kernel_size is None:
        return (1, 1)
    stride = stride or kernel_size
    return tuple((n - k) // s + 1 for n, k, s in zip(size, kernel_size, stride, strict=True))


def global_max_pool_with_switches(x: Tensor) -> tuple[Tensor, Tensor]:
    """Global max pooling ``(B, C, H, W) -> (B, C, 1, 1)`` and its switches ``(B, C, 1, 1)``.

    Equal to ``F.adaptive_max_pool2d(x, 1, return_indices=True)`` in values, switches (the first
    maximum in scan order on ties) and gradients (all of it to the switch). Its backward is
    ``gather``'s, a ``scatter_add`` with a deterministic CUDA implementation, whereas
    ``adaptive_max_pool2d_backward_cuda`` has none and fails under
    ``torch.use_deterministic_algorithms(True)``.
    """
    flat = x.flatten(2)  # (B, C, H*W)
    switches = flat.argmax(-1, keepdim=True)  # (B, C, 1); argmax returns the first maximum
    y = flat.gather(-1, switches)  # (B, C, 1)
    return y.unsqueeze(-1), switches.unsqueeze(-1)


class MaxPool2dSwitches(nn.Module):
    """Max pooling that returns ``(y, switches)``, switches being flat ``H*W`` indices per channel.

    Ties go to the first maximum in scan order (PyTorch's rule), consistently in values and
    switches as B.6.2 asks.

    Args:
        kernel_size: Window ``(kh, kw)``; ``None`` for global pooling over the whole input.
        stride: Stride ``(sh, sw)``; defaults to the kernel size. Ignored for global pooling.
        return_switches: If ``False`` return only ``y`` (cheaper; the classifier needs no
            switches).
    """

    def __init__(
        self,
        kernel_size: Size2 | None,
        stride: Size2 | None = None,
        return_switches: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size is not None:
            kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
            stride = (int(stride[0]), int(stride[1])) if stride is not None else kernel_size
            for name, pair in (("kernel_size", kernel_size), ("stride", stride)):
                if min(pair) <= 0:
                    raise ValueError(f"pooling {name} must be positive, got {pair}")
        self.kernel_size = kernel_size
        self.stride = stride
        self.return_switches = return_switches

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``(B, C, H, W) -> (B, C, H', W')`` (and switches of the same shape)."""
        if self.kernel_size is None:
            if self.return_switches:
                return global_max_pool_with_switches(x)
            return torch.amax(x, dim=(-2, -1), keepdim=True)
        if self.return_switches:
            return F.max_pool2d(x, self.kernel_size, self.stride, return_indices=True)
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        if self.kernel_size is None:
            return "global"
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class SwitchUnpool2d(nn.Module):
    """Switch unpooling (B.8.2): each value goes back to its recorded maximum, zeros elsewhere.

    With overlapping windows one position can be the switch of several regions; it receives the
    *mean* of the values routed to it (the thesis's "same value written twice" when they agree).
    Implemented as a ``scatter_add`` of values and of counts, which is deterministic and allowed
    under ``torch.use_deterministic_algorithms(True)``, unlike ``max_unpool2d`` with repeated
    indices (pytorch#80827, #84766).

    Args:
        kernel_size: The pooling window (``None`` for global); used to skip the count pass
            when windows cannot overlap.
        stride: The pooling stride; defaults to the kernel size.
    """

    def __init__(self, kernel_size: Size2 | None, stride: Size2 | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size
        self.overlapping = kernel_size is not None and any(
            k > s for k, s in zip(kernel_size, self.stride, strict=True)
        )

    def forward(self, y: Tensor, indices: Tensor, output_size: Size2) -> Tensor:
        """Unpool ``y`` (B, C, H, W) with switches ``indices`` to ``(B, C, *output_size)``."""
        if indices.shape != y.shape:
            raise ValueError(
                f"switches shape {tuple(indices.shape)} must equal input shape {tuple(y.shape)}"
            )
        b, c = y.shape[:2]
        ho, wo = output_size
        flat_idx = indices.reshape(b, c, -1)  # (B, C, H*W), values in [0, Ho*Wo)
        flat_y = y.reshape(b, c, -1)  # (B, C, H*W)
        out = y.new_zeros(b, c, ho * wo).scatter_add(2, flat_idx, flat_y)  # (B, C, Ho*Wo)
        if self.overlapping:
            with torch.no_grad():
                counts = y.new_zeros(b, c, ho * wo).scatter_add_(
                    2, flat_idx, torch.ones_like(flat_y)
                )
            out = out / counts.clamp_min_(1)
        return out.reshape(b, c, ho, wo)

    def extra_repr(self) -> str:
        return "global" if self.kernel_size is None else f"kernel_size={self.kernel_size}"


class BlindUpsample2d(nn.Module):
    """Blind upsampling (B.8.3): each position gets the mean value of the regions containing it.

    The operation is linear and separable: ``out = P_h @ y @ P_w^T`` with ``P[i', i] =
    [i' in region i] / #regions containing i'``, so it is two small batched matmuls (no loops,
    deterministic, autograd for free). Positions covered by no region (the last row when
    ``(H-1)*stride + kernel < H'``, e.g. 48 -> 22 with 5/2) receive zero, like switch unpooling.

    Args:
        kernel_size: The pooling window (``None`` for global: the value is broadcast).
        stride: The pooling stride; defaults to the kernel size.
    """

    def __init__(self, kernel_size: Size2 | None, stride: Size2 | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size
        self._cache: dict[tuple, Tensor] = {}

    def _matrix(
        self, n_out: int, n_in: int, k: int, s: int, like: Tensor
    ) -> Tensor:  # (n_out, n_in)
        key = (n_out, n_in, k, s, like.dtype, like.device)
        matrix = self._cache.get(key)
        if matrix is None:
            pos = torch.arange(n_out, device=like.device).unsqueeze(1)
            start = (torch.arange(n_in, device=like.device) * s).unsqueeze(0)
            member = ((pos >= start) & (pos < start + k)).to(like.dtype)
            matrix = member / member.sum(1, keepdim=True).clamp_min(1)
            self._cache[key] = matrix
        return matrix

    def forward(self, y: Tensor, output_size: Size2) -> Tensor:
        """Upsample ``y`` (B, C, H, W) to ``(B, C, *output_size)``."""
        ho, wo = output_size
        h, w = y.shape[-2:]
        if self.kernel_size is None:
            return y.expand(*y.shape[:-2], ho, wo).contiguous()
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if pool_output_size((ho, wo), self.kernel_size, self.stride) != (h, w):
            raise ValueError(
                f"input {h}x{w} is not what pooling {kh}x{kw}/{sh}x{sw} makes of {ho}x{wo}"
            )
        p_h = self._matrix(ho, h, kh, sh, y)  # (Ho, H)
        p_w = self._matrix(wo, w, kw, sw, y)  # (Wo, W)
        return p_h @ y @ p_w.T  # (Ho, H) @ (B, C, H, W) @ (W, Wo) -> (B, C, Ho, Wo)

    def extra_repr(self) -> str:
        return "global" if self.kernel_size is None else f"kernel_size={self.kernel_size}"
