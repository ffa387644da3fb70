"""Straightforward PyTorch versions of the thesis's networks: the baseline the benchmarks compare
this package's modules with.

Same shapes as the package's models (Figure 2 layers from ``build_layer_specs``), written the way
a PyTorch user would: ``nn.Conv2d(padding="same")``, ``nn.MaxPool2d``, ``nn.MaxUnpool2d``,
``conv2d`` decoders, blind upsampling as a ones-kernel transposed convolution over the pooling
windows divided by the window count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convae_lightning.nn import FIGURE2, build_layer_specs

INPUT_SHAPE = (1, 201, 16)


def _specs(num_layers: int | None = None) -> list:
    return build_layer_specs(
        INPUT_SHAPE,
        FIGURE2["conv_channels"],
        FIGURE2["kernel_sizes"],
        FIGURE2["pool_sizes"],
        "same",
        num_layers=num_layers,
    )


def _pool(spec) -> nn.Module:
    if spec.pool == "global":
        return nn.AdaptiveMaxPool2d(1)
    return nn.MaxPool2d(spec.pool_size, spec.pool_stride)


class PlainForward(nn.Sequential):
    """Figure 2's forward network: 4 x (conv, max-pool, ReLU), FC 1000-1000, dropout, FC 48."""

    def __init__(self, num_classes: int = 48, dropout: float = 0.1) -> None:
        layers: list[nn.Module] = []
        for spec in _specs():
            layers += [
                nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, padding="same"),
                _pool(spec),
                nn.ReLU(),
            ]
        layers += [nn.Flatten()]
        features = FIGURE2["conv_channels"][-1]
        for size in FIGURE2["fc_sizes"]:
            layers += [nn.Linear(features, size), nn.ReLU()]
            features = size
        layers += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
        super().__init__(*layers)


class PlainAutoencoder(nn.Module):
    """A CAE of ``num_units`` units: conv, max-pool (indices kept), ReLU; then ReLU, unpooling
    (``MaxUnpool2d`` or blind), same-padded ``conv2d`` back to the unit's input channels."""

    def __init__(self, num_units: int = 4, unpool: str = "switch") -> None:
        super().__init__()
        self.specs = _specs(num_units)
        self.enc = nn.ModuleList(
            nn.Conv2d(s.in_channels, s.out_channels, s.kernel_size, padding="same")
            for s in self.specs
        )
        self.pool = nn.ModuleList(
            nn.AdaptiveMaxPool2d(1, return_indices=True)
            if s.pool == "global"
            else nn.MaxPool2d(s.pool_size, s.pool_stride, return_indices=True)
            for s in self.specs
        )
        self.unpool = nn.ModuleList(_unpool(s, unpool) for s in self.specs)
        self.dec = nn.ModuleList(
            nn.Conv2d(s.out_channels, s.in_channels, s.kernel_size, padding="same")
            for s in self.specs
        )

    def forward(self, x: Tensor) -> Tensor:
        saved = []
        for conv, pool in zip(self.enc, self.pool, strict=True):
            h = conv(x)
            x, idx = pool(h)
            saved.append((idx, h.shape[-2:]))
            x = F.relu(x)
        for i in reversed(range(len(self.specs))):
            idx, size = saved[i]
            x = self.dec[i](self.unpool[i](F.relu(x), idx, output_size=size))
        return x


def _unpool(spec, mode: str) -> nn.Module:
    if mode == "switch":
        if spec.pool == "global":
            return nn.MaxUnpool2d(spec.conv_hw)
        return nn.MaxUnpool2d(spec.pool_size, spec.pool_stride)
    return BlindUnpool(spec.pool_size, spec.pool_stride)


class BlindUnpool(nn.Module):
    """Each position gets the mean of the pooled values whose windows contain it (``None``
    kernel: global, the value everywhere)."""

    def __init__(self, kernel: tuple[int, int] | None, stride: tuple[int, int] | None) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, y: Tensor, indices: Tensor, output_size) -> Tensor:
        if self.kernel is None:
            return y.expand(*y.shape[:2], *output_size)
        return _blind(y, self.kernel, self.stride, output_size)


def _blind(y: Tensor, kernel: tuple[int, int], stride: tuple[int, int], size) -> Tensor:
    """Each position gets the mean of the pooled values whose windows contain it."""
    c = y.shape[1]
    ones = torch.ones(c, 1, *kernel, dtype=y.dtype, device=y.device)
    pad_h = size[0] - ((y.shape[-2] - 1) * stride[0] + kernel[0])
    pad_w = size[1] - ((y.shape[-1] - 1) * stride[1] + kernel[1])
    total = F.conv_transpose2d(y, ones, stride=stride, groups=c, output_padding=(pad_h, pad_w))
    count = F.conv_transpose2d(
        torch.ones_like(y[:1]), ones, stride=stride, groups=c, output_padding=(pad_h, pad_w)
    )
    return total / count.clamp_min(1)


def classifier_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


def reconstruction_loss(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    return (model(x) - x).pow(2).flatten(1).sum(1).mean()
