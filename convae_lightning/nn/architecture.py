"""Layer specifications shared by the forward network and the autoencoders, with shape checks.

Defaults reproduce Figure 2 of the thesis (frequency convolution, full padding, overlapping
pooling): on a 201x16 input the maps are 201x16x8 -> 99x8x8 -> 99x8x16 -> 48x4x16 -> 48x4x32 ->
22x2x32 -> 22x2x1000 -> 1x1x1000. Filter sizes after the first layer are not in the thesis; the
defaults follow cpu-performance-notes.md (16@5x3, 32@5x3, 1000@5x2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from convae_lightning.nn.pool import pool_output_size

__all__ = [
    "FIGURE2",
    "FORWARD_VARIANTS",
    "LayerSpec",
    "PoolSize",
    "PoolStride",
    "build_layer_specs",
    "pool_stride",
]

#: ``(kh, kw)`` window, ``"global"`` (whole map to 1x1) or ``None`` (no pooling).
PoolSize = tuple[int, int] | Literal["global"] | None
#: ``(sh, sw)`` stride of a pooling window, or ``None`` for :func:`pool_stride`'s default.
PoolStride = tuple[int, int] | None

#: The thesis's final forward architecture (Figure 2) and the default autoencoder.
FIGURE2: dict = {
    "conv_channels": (8, 16, 32, 1000),
    "kernel_sizes": ((8, 16), (5, 3), (5, 3), (5, 2)),
    "pool_sizes": ((5, 2), (5, 2), (5, 2), "global"),
    "padding": "same",
    "fc_sizes": (1000, 1000),
}

#: Table 2 variants. A kernel extent of 0 means "the whole input extent of that layer" (the
#: collapsing first layer of frequency/time convolution). Sizes the thesis leaves out are our
#: documented defaults (docs/models.md).
FORWARD_VARIANTS: dict[str, dict] = {
    # Figure 2: frequency convolution, deeper, fully padded, pooling overlap (61.8%).
    "frequency_padded_overlap": FIGURE2,
    # Frequency convolution, deeper, pooling overlap, unpadded: 3 conv + 4 FC (62.6%).
    "frequency_overlap": {
        "conv_channels": (8, 16, 32),
        "kernel_sizes": ((8, 0), (5, 1), (5, 1)),
        "pool_sizes": ((5, 1), (5, 1), (5, 1)),
        "padding": "valid",
        "fc_sizes": (1000, 1000, 1000),
    },
    # Frequency convolution, 2 conv + 2 FC, non-overlapping 2x1 pooling (59.1%).
    "frequency": {
        "conv_channels": (8, 16),
        "kernel_sizes": ((8, 0), (5, 1)),
        "pool_sizes": ((2, 1), (2, 1)),
        "padding": "valid",
        "fc_sizes": (1000,),
    },
    # Same with large first filters, 40x16 instead of 8x16 (56.4%).
    "frequency_large": {
        "conv_channels": (8, 16),
        "kernel_sizes": ((40, 0), (5, 1)),
        "pool_sizes": ((2, 1), (2, 1)),
        "padding": "valid",
        "fc_sizes": (1000,),
    },
    # Time convolution: the first layer spans all frequencies (201x3), then 1x3 (48.7%).
    "time": {
        "conv_channels": (8, 16),
        "kernel_sizes": ((0, 3), (1, 3)),
        "pool_sizes": ((1, 2), (1, 2)),
        "padding": "valid",
        "fc_sizes": (1000,),
    },
}


def pool_stride(pool_size: tuple[int, int]) -> tuple[int, int]:
    """Stride 2 along every axis the window spans (>1), 1 elsewhere (thesis: stride-2 pooling).

    The default reading; MatConvNet's scalar stride 2 (2 on both axes, even for a 5x1 window) is
    the literal one, set with ``pool_strides`` (docs/models.md, "Ambiguities").
    """
    return tuple(2 if k > 1 else 1 for k in pool_size)


@dataclass(frozen=True)
class LayerSpec:
    """One resolved conv(+pool) layer and the map sizes around it."""

    index: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    padding: Literal["same", "valid"]
    pool_size: tuple[int, int] | None  # None: global pooling or no pooling (see ``pool``)
    pool: Literal["window", "global", "none"]
    pool_stride: tuple[int, int] | None
    input_hw: tuple[int, int]
    conv_hw: tuple[int, int]
    output_hw: tuple[int, int]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, *self.output_hw)

    def conv_signature(self) -> dict:
        """What must match for a convolution's weights to transfer between models."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "padding": self.padding,
        }

    def signature(self) -> dict:
        """The layer as stored in checkpoints: its convolution and its pooling."""
        return {
            **self.conv_signature(),
            "pool": self.pool,
            "pool_size": list(self.pool_size) if self.pool_size else None,
            "pool_stride": list(self.pool_stride) if self.pool_stride else None,
        }


def build_layer_specs(
    input_shape: Sequence[int],
    conv_channels: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]],
    pool_sizes: Sequence[PoolSize],
    padding: str = "same",
    num_layers: int | None = None,
    owner: str = "model",
    pool_strides: Sequence[PoolStride] | None = None,
) -> list[LayerSpec]:
    """Resolve and validate a stack of conv+pool layers for an input of shape ``(C, F, T)``.

    ``pool_strides`` gives each window's stride (``None`` entries, or no list at all, use
    :func:`pool_stride`); entries of global or absent pooling are ignored.

    Raises:
        ValueError: naming the offending argument when sizes are non-positive, lists have
            different lengths, or the input is too small for the requested depth.
    """
    if len(input_shape) != 3 or any(int(n) <= 0 for n in input_shape):
        raise ValueError(
            f"{owner}: input_shape must be three positive ints (C, F, T), got {input_shape!r}"
        )
    if padding not in ("same", "valid"):
        raise ValueError(f"{owner}: padding must be 'same' or 'valid', got {padding!r}")
    n = len(conv_channels)
    strides = list(pool_strides) if pool_strides is not None else [None] * n
    if not (len(kernel_sizes) == n and len(pool_sizes) == n and len(strides) == n):
        raise ValueError(
            f"{owner}: conv_channels, kernel_sizes, pool_sizes and pool_strides must have equal "
            f"lengths, got {len(conv_channels)}, {len(kernel_sizes)}, {len(pool_sizes)}, "
            f"{len(strides)}"
        )
    if num_layers is None:
        num_layers = n
    if not 1 <= num_layers <= n:
        raise ValueError(
            f"{owner}: num_units must be between 1 and {n} (len(conv_channels)), got {num_layers}"
        )
    channels, h, w = (int(v) for v in input_shape)
    specs: list[LayerSpec] = []
    for i in range(num_layers):
        out_ch = conv_channels[i]
        if not isinstance(out_ch, int) or out_ch <= 0:
            raise ValueError(f"{owner}: conv_channels[{i}] must be a positive int, got {out_ch!r}")
        kernel = tuple(int(k) for k in kernel_sizes[i])
        if len(kernel) != 2 or min(kernel) < 0 or (padding == "same" and min(kernel) == 0):
            raise ValueError(
                f"{owner}: kernel_sizes[{i}] must be two positive ints (0 = whole extent, "
                f"unpadded only), got {kernel_sizes[i]!r}"
            )
        kernel = (kernel[0] or h, kernel[1] or w)
        if padding == "valid":
            conv_hw = (h - kernel[0] + 1, w - kernel[1] + 1)
            if min(conv_hw) <= 0:
                raise ValueError(
                    f"{owner}: kernel_sizes[{i}]={kernel} is larger than its {h}x{w} input "
                    f"(input_shape={tuple(input_shape)}); use fewer layers or a larger input"
                )
        else:
            conv_hw = (h, w)
        pool = pool_sizes[i]
        if pool is None:
            kind, psize, pstride, out_hw = "none", None, None, conv_hw
        elif pool == "global":
            kind, psize, pstride, out_hw = "global", None, None, (1, 1)
        else:
            psize = tuple(int(k) for k in pool)
            if len(psize) != 2 or min(psize) <= 0:
                raise ValueError(
                    f"{owner}: pool_sizes[{i}] must be two positive ints, 'global' or null, "
                    f"got {pool!r}"
                )
            pstride = pool_stride(psize)
            if strides[i] is not None:
                pstride = tuple(int(v) for v in strides[i])
                if len(pstride) != 2 or min(pstride) <= 0:
                    raise ValueError(
                        f"{owner}: pool_strides[{i}] must be two positive ints or null, "
                        f"got {strides[i]!r}"
                    )
            if psize[0] > conv_hw[0] or psize[1] > conv_hw[1]:
                raise ValueError(
                    f"{owner}: layer {i} pools {psize[0]}x{psize[1]} but its map is only "
                    f"{conv_hw[0]}x{conv_hw[1]} (input_shape={tuple(input_shape)}); "
                    "reduce num_units/the number of layers or use a larger input"
                )
            kind = "window"
            out_hw = pool_output_size(conv_hw, psize, pstride)
        specs.append(
            LayerSpec(
                index=i,
                in_channels=channels,
                out_channels=out_ch,
                kernel_size=kernel,
                padding=padding,
                pool_size=psize,
                pool=kind,
                pool_stride=pstride,
                input_hw=(h, w),
                conv_hw=conv_hw,
                output_hw=out_hw,
            )
        )
        channels, (h, w) = out_ch, out_hw
    return specs
