"""Copying encoder convolutions between checkpoints and models (autoencoder <-> classifier)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convae_lightning.models.base import read_checkpoint
from convae_lightning.nn.architecture import LayerSpec

__all__ = ["load_encoder_layers"]


def load_encoder_layers(
    encoder: nn.ModuleList,
    specs: Sequence[LayerSpec],
    path: str | Path,
    expected_kinds: Sequence[str],
    arg_name: str,
    use_active_depth: bool = True,
) -> int:
    """Copy ``encoder.{i}.conv.weight|bias`` from a checkpoint into ``encoder`` (in place).

    Layers are matched by their signature (channels, kernel, padding, pooling), stored by every
    model in ``checkpoint["convae"]["layers"]``. The checkpoint may have fewer layers (e.g. a
    2-unit autoencoder into the 4-layer classifier: the rest keep their initialisation) or more
    (only the first ``len(specs)`` are used).

    Args:
        encoder: The target's ``ModuleList`` of encoder blocks.
        specs: The target's layer specs.
        path: Checkpoint file.
        expected_kinds: Accepted ``checkpoint["convae"]["kind"]`` values.
        arg_name: Argument to name in errors.
        use_active_depth: Copy only a stacked autoencoder's trained units
            (``checkpoint["convae"]["num_active_units"]``), not its untrained deeper ones.

    Returns:
        The number of layers copied.

    Raises:
        ValueError: naming ``arg_name`` when a layer does not fit.
    """
    state, meta = read_checkpoint(path, expected_kinds, arg_name)
    source_layers: list[dict[str, Any]] = meta.get("layers", [])
    count = min(len(source_layers), len(specs))
    active = meta.get("num_active_units")
    if use_active_depth and active is not None:
        count = min(count, int(active))
    if count == 0:
        raise ValueError(f"{arg_name}: {str(path)!r} describes no encoder layers to load")
    for i in range(count):
        want, got = specs[i].signature(), source_layers[i]
        if want != got:
            raise ValueError(
                f"{arg_name}: layer {i} of {str(path)!r} does not fit this model: checkpoint has "
                f"{got}, model expects {want}"
            )
        with torch.no_grad():
            for name in ("weight", "bias"):
                source = state[f"encoder.{i}.conv.{name}"]
                getattr(encoder[i].conv, name).copy_(source)
    return count
