"""Shapes at every depth, Table 2 variants, and construction-time validation."""

from __future__ import annotations

import pytest
import torch

from convae_lightning.models import (
    AutoencoderClassifier,
    ConvAutoencoder,
    ForwardClassifier,
    StackedAutoencoder,
)

FIGURE2_CODES = {1: (8, 99, 8), 2: (16, 48, 4), 3: (32, 22, 2), 4: (1000, 1, 1)}
SMALL_CODES = {1: (8, 18, 4), 2: (16, 7, 2), 3: (32, 2, 1), 4: (1000, 1, 1)}


@pytest.mark.parametrize(
    ("input_shape", "codes"), [((1, 201, 16), FIGURE2_CODES), ((1, 40, 8), SMALL_CODES)]
)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_autoencoder_shapes_every_depth(input_shape, codes, depth) -> None:
    model = ConvAutoencoder(input_shape=input_shape, num_units=depth, unpool="switch")
    x = torch.randn(2, *input_shape)
    with torch.no_grad():
        code, states = model.encode(x)
        assert tuple(code.shape[1:]) == codes[depth]
        assert len(states) == depth
        assert model(x).shape == x.shape
    blind = ConvAutoencoder(input_shape=input_shape, num_units=depth, unpool="blind")
    with torch.no_grad():
        assert blind(x).shape == x.shape


def test_forward_variant_literal_lists_every_preset() -> None:
    from typing import get_args

    from convae_lightning.models.classifier import ForwardVariant
    from convae_lightning.nn import FORWARD_VARIANTS

    assert set(get_args(ForwardVariant)) == set(FORWARD_VARIANTS)


THESIS_POOLS = {
    "pool_sizes": [[5, 1], [5, 1], [5, 1], "global"],
    "pool_strides": [[2, 2]] * 3 + [None],
}


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ConvAutoencoder(**THESIS_POOLS),
        lambda: StackedAutoencoder(initial_units=4, **THESIS_POOLS),
        lambda: ForwardClassifier(**THESIS_POOLS),
        lambda: AutoencoderClassifier(encoder="random", **THESIS_POOLS),
    ],
)
def test_literal_thesis_pooling_gives_figure2_maps(factory) -> None:
    model = factory()
    assert [s.output_shape for s in model.specs] == list(FIGURE2_CODES.values())
    x = torch.randn(2, 1, 201, 16)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.shape == ((2, 48) if hasattr(model, "head") else x.shape)


def test_conv_inverse_architecture_has_no_pooling() -> None:
    model = ConvAutoencoder(num_units=1, architecture="conv_inverse")
    x = torch.randn(2, 1, 201, 16)
    code, _ = model.encode(x)
    assert code.shape == (2, 8, 201, 16)
    assert (code < 0).any()  # no ReLU
    assert model(x).shape == x.shape


@pytest.mark.parametrize(
    "variant",
    ["frequency_padded_overlap", "frequency_overlap", "frequency", "frequency_large", "time"],
)
@pytest.mark.parametrize("input_shape", [(1, 201, 16), (1, 120, 12)])
def test_forward_classifier_variants(variant, input_shape) -> None:
    model = ForwardClassifier(input_shape=input_shape, variant=variant).eval()
    with torch.no_grad():
        assert model(torch.randn(3, *input_shape)).shape == (3, 48)


def test_forward_classifier_figure2_layers() -> None:
    model = ForwardClassifier()
    assert [s.output_shape for s in model.specs] == [
        (8, 99, 8),
        (16, 48, 4),
        (32, 22, 2),
        (1000, 1, 1),
    ]
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [
        1000,
        1000,
        48,
    ]
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ["encoder.0.conv.weight", "encoder.0.conv.bias"]


def test_parameter_names_are_shared_between_autoencoder_and_classifier() -> None:
    ae = {n for n, _ in ConvAutoencoder(decoder_conv="tied").named_parameters()}
    clf = {n for n, _ in ForwardClassifier().named_parameters()}
    assert {n for n in ae if n.startswith("encoder.")} == {
        n for n in clf if n.startswith("encoder.")
    }
    # Tied decoders add only their own biases; the encoder weight appears once.
    assert "decoder.0.conv.weight" not in ae and "decoder.0.conv.bias" in ae


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ConvAutoencoder(input_shape=(1, 20, 8), num_units=4), "pool|num_units"),
        (lambda: ConvAutoencoder(num_units=5), "num_units"),
        (lambda: ConvAutoencoder(num_units=0), "num_units"),
        (lambda: ConvAutoencoder(input_shape=(1, 0, 16)), "input_shape"),
        (lambda: ConvAutoencoder(conv_channels=(8, 0, 32, 1000)), r"conv_channels\[1\]"),
        (lambda: ConvAutoencoder(kernel_sizes=((8, 16), (5, 0), (5, 3), (5, 2))), "kernel_sizes"),
        (lambda: ConvAutoencoder(unpool="nearest"), "unpool"),
        (lambda: ConvAutoencoder(decoder_conv="fixed"), "decoder_conv"),
        (lambda: ConvAutoencoder(decoder_conv=["free", "tied"]), "decoder_conv"),
        (lambda: ConvAutoencoder(encoder="pretrained"), "encoder_checkpoint"),
        (lambda: ConvAutoencoder(encoder_checkpoint="x.ckpt"), "encoder_checkpoint"),
        (lambda: ConvAutoencoder(architecture="conv_inverse"), "num_units"),
        (lambda: ConvAutoencoder(decoder_impl="fft"), "decoder_impl"),
        (lambda: ConvAutoencoder(frozen=["nothing.*"]), "frozen"),
        (lambda: StackedAutoencoder(mode="medium"), "mode"),
        (lambda: StackedAutoencoder(architecture="conv_inverse"), "architecture must be 'units'"),
        (lambda: StackedAutoencoder(unpool="nearest"), "unpool"),
        (lambda: ConvAutoencoder(transpose_sync_bias="trained"), "needs a decoder_conv"),
        (lambda: ConvAutoencoder(transpose_sync_bias="learnt"), "transpose_sync_bias"),
        (lambda: ConvAutoencoder(pool_strides=[[2, 2]]), "equal lengths"),
        (lambda: ForwardClassifier(pool_strides=[[2, 0], None, None, None]), "pool_strides"),
        (lambda: StackedAutoencoder(num_units=2, initial_units=3), "initial_units"),
        (lambda: ForwardClassifier(variant="2d"), "variant"),
        (lambda: ForwardClassifier(num_classes=0), "num_classes"),
        (lambda: ForwardClassifier(dropout=1.0), "dropout"),
        (lambda: ForwardClassifier(fc_sizes=(1000, -1)), "fc_sizes"),
        (lambda: ForwardClassifier(input_shape=(1, 5, 16), variant="frequency"), "input_shape"),
        (lambda: AutoencoderClassifier(encoder="fixed"), "encoder must be one of"),
        (lambda: AutoencoderClassifier(encoder="pretrained_fixed"), "autoencoder_checkpoint"),
        (lambda: AutoencoderClassifier(encoder="random", autoencoder_checkpoint="a"), "random"),
        (
            lambda: AutoencoderClassifier(autoencoder_checkpoint="/nonexistent.ckpt"),
            "autoencoder_checkpoint",
        ),
    ],
)
def test_bad_configs_fail_at_construction(factory, match) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        factory()


def test_cli_lists_and_validates_every_autoencoder_argument_of_the_stacked_model() -> None:
    # StackedAutoencoder takes **kwargs; jsonargparse resolves them to ConvAutoencoder's
    # documented parameters, as LightningCLI's model.init_args does.
    import inspect

    from jsonargparse import ArgumentError, ArgumentParser

    from convae_lightning.models import ConvaeModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ConvaeModule, "model")
    stacked = "convae_lightning.models.StackedAutoencoder"
    config = parser.parse_args(["--model", stacked, "--model.init_args.unpool", "blind"])
    expected = set(inspect.signature(ConvAutoencoder).parameters) | {"mode", "initial_units"}
    assert set(vars(config.model.init_args)) == expected
    assert config.model.init_args.unpool == "blind"
    for bad in (["--model.init_args.unpool", "nearest"], ["--model.init_args.bogus", "1"]):
        with pytest.raises(ArgumentError, match=bad[0].rsplit(".", 1)[1]):
            parser.parse_args(["--model", stacked, *bad])
