"""Encoders taken from another model's checkpoint (autoencoder <-> classifier): one vocabulary
for how an encoder starts and whether it trains, and the copy of its convolutions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn

from convae_lightning.models.base import read_checkpoint
from convae_lightning.nn.architecture import LayerSpec
from convae_lightning.nn.units import Activation, check_activation

__all__ = [
    "ENCODER_MODES",
    "EncoderMode",
    "LoadedLayers",
    "check_encoder_mode",
    "fixed_encoder_patterns",
    "load_encoder_layers",
]

#: How an encoder starts (``random`` or from a checkpoint, ``pretrained``) and whether it then
#: trains (``_fixed``: it does not). Shared by autoencoders and autoencoder classifiers.
EncoderMode = Literal["random", "random_fixed", "pretrained", "pretrained_fixed"]
ENCODER_MODES: tuple[str, ...] = get_args(EncoderMode)


def check_encoder_mode(mode: str, checkpoint: str | None, checkpoint_arg: str) -> bool:
    """Validate ``encoder`` against the checkpoint argument; ``True`` when weights are loaded.

    Raises:
        ValueError: for an unknown mode, a ``pretrained*`` mode without checkpoint, or a
            checkpoint given to a ``random*`` mode (it would be ignored).
    """
    if mode not in ENCODER_MODES:
        raise ValueError(f"encoder must be one of {ENCODER_MODES}, got {mode!r}")
    pretrained = mode.startswith("pretrained")
    if pretrained and checkpoint is None:
        raise ValueError(f"encoder={mode!r} needs {checkpoint_arg} (a path), got None")
    if not pretrained and checkpoint is not None:
        raise ValueError(
            f"encoder={mode!r} does not load weights; remove {checkpoint_arg} ({checkpoint!r}) "
            "or use encoder='pretrained'/'pretrained_fixed'"
        )
    return pretrained


def fixed_encoder_patterns(mode: str, num_loaded: int) -> list[str]:
    """Parameter patterns an encoder mode freezes: every encoder convolution (``random_fixed``),
    the loaded ones (``pretrained_fixed``; deeper layers stay random and trained), or none."""
    if mode == "random_fixed":
        return ["encoder.*.conv.*"]
    if mode == "pretrained_fixed":
        return [f"encoder.{i}.conv.*" for i in range(num_loaded)]
    return []


class LoadedLayers(NamedTuple):
    """What :func:`load_encoder_layers` took from a checkpoint."""

    count: int
    #: The checkpoint's nonlinearity (``relu`` for checkpoints that do not say).
    activation: str
    #: ``(C, F, T)`` of the inputs the checkpoint's model was built for (``None``: not said).
    input_shape: tuple[int, ...] | None


def load_encoder_layers(
    encoder: nn.ModuleList,
    specs: Sequence[LayerSpec],
    path: str | Path,
    expected_kinds: Sequence[str],
    arg_name: str,
    activation: Activation | None = None,
) -> LoadedLayers:
    """Copy ``encoder.{i}.conv.weight|bias`` from a checkpoint into ``encoder`` (in place).

    Convolutions are matched by their own shapes (channels, kernel, padding), stored by every
    model in ``checkpoint["convae"]["layers"]``, whatever pooling either model uses (the
    pooling-free ``conv_inverse`` autoencoder takes a forward network's first convolution). The
    checkpoint may have fewer layers (e.g. a 2-unit autoencoder into the 4-layer classifier: the
    rest keep their initialisation) or more (only the first ``len(specs)`` are used); of a stacked
    autoencoder only the trained units (``num_active_units``) are taken.

    Args:
        encoder: The target's ``ModuleList`` of encoder blocks.
        specs: The target's layer specs.
        path: Checkpoint file.
        expected_kinds: Accepted ``checkpoint["convae"]["kind"]`` values.
        arg_name: Argument to name in errors.
        activation: The target's nonlinearity, which must be the checkpoint's
            (``checkpoint["convae"]["activation"]``): filters trained under ``tanh`` are not a
            ``relu`` network's. ``None`` takes the checkpoint's and sets it on every block of
            ``encoder``.

    Returns:
        The number of layers copied and the checkpoint's activation.

    Raises:
        ValueError: naming ``arg_name`` when a convolution's shape does not fit, or
            ``activation`` when it differs from the checkpoint's.
    """
    checkpoint, meta = read_checkpoint(path, expected_kinds, arg_name)
    source_activation = check_activation(meta.get("activation", "relu"), f"{arg_name} activation")
    if activation is None:
        for block in encoder:
            block.activation = source_activation
    elif activation != source_activation:
        raise ValueError(
            f"activation={activation!r} differs from the {source_activation!r} the encoder of "
            f"{arg_name} {str(path)!r} was trained with; leave activation unset (classifiers) "
            "or set it to the checkpoint's"
        )
    source_layers: list[dict[str, Any]] = meta.get("layers", [])
    count = min(len(source_layers), len(specs))
    active = meta.get("num_active_units")
    if active is not None:
        count = min(count, int(active))
    if count == 0:
        raise ValueError(f"{arg_name}: {str(path)!r} describes no encoder layers to load")
    for i in range(count):
        want = specs[i].conv_signature()
        got = {key: source_layers[i].get(key) for key in want}
        if want != got:
            raise ValueError(
                f"{arg_name}: convolution {i} of {str(path)!r} does not fit this model: "
                f"checkpoint has {got}, model expects {want}"
            )
        with torch.no_grad():
            for name in ("weight", "bias"):
                source = checkpoint["state_dict"][f"encoder.{i}.conv.{name}"]
                getattr(encoder[i].conv, name).copy_(source)
    shape = meta.get("input_shape")
    return LoadedLayers(count, source_activation, tuple(shape) if shape is not None else None)
