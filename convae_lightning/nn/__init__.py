"""Layers of the convolutional autoencoders: same-padded convolutions, pooling with switches,
switch unpooling, blind upsampling, the convolutional transpose, and autoencoder units."""

from convae_lightning.nn.architecture import (
    FIGURE2,
    FORWARD_VARIANTS,
    LayerSpec,
    PoolSize,
    build_layer_specs,
    pool_stride,
)
from convae_lightning.nn.conv import (
    DECODER_CONV_MODES,
    DECODER_IMPLS,
    DecoderConv2d,
    DecoderConvMode,
    DecoderImpl,
    EncoderConv2d,
    conv_transpose_weight,
    decoder_conv2d,
    same_padding,
)
from convae_lightning.nn.pool import (
    BlindUpsample2d,
    MaxPool2dSwitches,
    SwitchUnpool2d,
    pool_output_size,
)
from convae_lightning.nn.units import (
    UNPOOL_MODES,
    AutoencoderUnit,
    DecoderBlock,
    EncoderBlock,
    EncoderState,
    UnpoolMode,
)

__all__ = [
    "DECODER_CONV_MODES",
    "DECODER_IMPLS",
    "FIGURE2",
    "FORWARD_VARIANTS",
    "UNPOOL_MODES",
    "AutoencoderUnit",
    "BlindUpsample2d",
    "DecoderBlock",
    "DecoderConv2d",
    "DecoderConvMode",
    "DecoderImpl",
    "EncoderBlock",
    "EncoderConv2d",
    "EncoderState",
    "LayerSpec",
    "MaxPool2dSwitches",
    "PoolSize",
    "SwitchUnpool2d",
    "UnpoolMode",
    "build_layer_specs",
    "conv_transpose_weight",
    "decoder_conv2d",
    "pool_output_size",
    "pool_stride",
    "same_padding",
]
