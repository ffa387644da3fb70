"""Tiny real ``Trainer.fit`` runs: every module, freezing, checkpoint transfer, stacking."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import TINY_ARCH, TINY_SHAPE, TinyDataModule, tiny_trainer

from convae_lightning.data import TimitDataModule
from convae_lightning.models import (
    AutoencoderClassifier,
    ConvAutoencoder,
    ForwardClassifier,
    NonFiniteLossError,
    StackedAutoencoder,
)
from convae_lightning.nn import conv_transpose_weight


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embedded_cache")


# Every fit runs on synthetic tensors (fast, exact control) and on the embedded Festival corpus
# through the real TimitDataModule (201 x T patches of real speech).
@pytest.fixture(params=["tiny", "embedded"])
def datamodule(request, embedded_cache):
    factories = {
        "tiny": lambda: TinyDataModule(input_shape=TINY_SHAPE),
        "embedded": lambda: TimitDataModule(
            cache_dir=str(embedded_cache),
            train_per_class=1,
            eval_per_class=1,
            batch_size=16,
            progress=False,
        ),
    }
    return factories[request.param]()


def _input_shape(dm) -> tuple[int, int, int]:
    dm.setup("fit")
    return tuple(dm.input_shape)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict, key: str) -> bool:
    return not torch.equal(before[key], after[key])


def _fit_ae(tmp_path, dm, **kwargs) -> ConvAutoencoder:
    model = ConvAutoencoder(input_shape=_input_shape(dm), **TINY_ARCH, **kwargs)
    tiny_trainer(tmp_path).fit(model, dm)
    return model


@pytest.mark.parametrize("kind", ["forward", "autoencoder", "stacked"])
def test_tiny_fit_and_test(tmp_path, datamodule, kind) -> None:
    shape = _input_shape(datamodule)
    model = {
        "forward": lambda: ForwardClassifier(input_shape=shape, dropout=0.5, **TINY_ARCH),
        "autoencoder": lambda: ConvAutoencoder(input_shape=shape, **TINY_ARCH),
        "stacked": lambda: StackedAutoencoder(input_shape=shape, **TINY_ARCH),
    }[kind]()
    before = _snapshot(model)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule)
    assert _changed(before, _snapshot(model), "encoder.0.conv.weight")
    metrics = trainer.callback_metrics
    if kind == "forward":
        expected = ["val/acc48_balanced", "val/acc39_natural", "val/loss_natural", "train/acc48"]
    else:
        expected = ["val/euclid_balanced", "val/cosine_natural", "val/corr_natural"]
        expected += ["val/euclid_scaled_balanced", "train/euclid"]
    assert set(expected) <= set(metrics)
    results = trainer.test(model, datamodule, verbose=False)
    assert len(results) == 2 and any("natural" in k for k in results[1])


def test_autoencoder_classifier_random_baseline_fits(tmp_path, datamodule) -> None:
    model = AutoencoderClassifier(
        input_shape=_input_shape(datamodule), encoder="random_fixed", **TINY_ARCH
    )
    before = _snapshot(model)
    tiny_trainer(tmp_path).fit(model, datamodule)
    after = _snapshot(model)
    assert not _changed(before, after, "encoder.3.conv.weight")
    assert _changed(before, after, "head.0.weight")


def test_single_val_loader_without_eval_views(tmp_path) -> None:
    dm = TinyDataModule(eval_views=None)
    dm.setup("fit")
    dm.val_dataloader = lambda: dm._eval_loaders()[0]  # a plain single loader
    model = ConvAutoencoder(input_shape=TINY_SHAPE, num_units=2, **TINY_ARCH)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, dm)
    assert "val/euclid_balanced" in trainer.callback_metrics


def test_frozen_parts_unchanged_after_training(tmp_path, datamodule) -> None:
    shape = _input_shape(datamodule)
    model = ConvAutoencoder(
        input_shape=shape,
        **TINY_ARCH,
        encoder="random_fixed",
        frozen=["decoder.1.conv.bias", "decoder.2.conv.weight"],
    )
    before = _snapshot(model)
    tiny_trainer(tmp_path).fit(model, datamodule)
    after = _snapshot(model)
    for key in ["encoder.0.conv.weight", "encoder.3.conv.bias"]:
        assert not _changed(before, after, key), key
    assert not _changed(before, after, "decoder.1.conv.bias")
    assert not _changed(before, after, "decoder.2.conv.weight")
    assert _changed(before, after, "decoder.1.conv.weight")
    assert _changed(before, after, "decoder.0.conv.bias")


def test_untrained_baseline_everything_frozen(tmp_path, datamodule) -> None:
    model = ConvAutoencoder(input_shape=_input_shape(datamodule), **TINY_ARCH, frozen=["*"])
    before = _snapshot(model)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule)
    assert all(torch.equal(v, _snapshot(model)[k]) for k, v in before.items())
    assert trainer.test(model, datamodule, verbose=False)[0]["test/euclid_balanced"] > 0


def test_transpose_sync_decoders_get_no_gradient_and_warn(tmp_path, datamodule) -> None:
    shape = _input_shape(datamodule)
    model = ConvAutoencoder(input_shape=shape, **TINY_ARCH, decoder_conv="transpose_sync")
    for i in range(4):
        assert torch.equal(
            model.decoder[i].conv.weight, conv_transpose_weight(model.encoder[i].conv.weight)
        )
    before = _snapshot(model)
    with pytest.warns(UserWarning, match="TiedTransposeSync"):
        tiny_trainer(tmp_path).fit(model, datamodule)
    after = _snapshot(model)
    assert not _changed(before, after, "decoder.0.conv.weight")
    assert _changed(before, after, "encoder.0.conv.weight")
    model.sync_transposes()
    assert torch.equal(
        model.decoder[0].conv.weight, conv_transpose_weight(model.encoder[0].conv.weight)
    )


def test_tied_autoencoder_trains_encoder_through_decoder(tmp_path, datamodule) -> None:
    model = _fit_ae(tmp_path, datamodule, decoder_conv="tied")
    params = model.optimizer_parameters()
    assert len(params) == len({id(p) for p in params})
    w = model.encoder[0].conv.weight
    assert torch.equal(model.decoder[0].conv.weight, conv_transpose_weight(w))


def test_autoencoder_checkpoint_into_classifier(tmp_path, datamodule) -> None:
    shape = _input_shape(datamodule)
    ae = ConvAutoencoder(input_shape=shape, **TINY_ARCH)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(ae, datamodule)
    path = str(tmp_path / "ae.ckpt")
    trainer.save_checkpoint(path)
    ae_state = _snapshot(ae)

    fixed = AutoencoderClassifier(
        input_shape=shape, autoencoder_checkpoint=path, encoder="pretrained_fixed", **TINY_ARCH
    )
    pre = AutoencoderClassifier(
        input_shape=shape, autoencoder_checkpoint=path, encoder="pretrained", **TINY_ARCH
    )
    for model in (fixed, pre):
        assert model.num_loaded_layers == 4
        for i in range(4):
            assert torch.equal(model.encoder[i].conv.weight, ae_state[f"encoder.{i}.conv.weight"])
    tiny_trainer(tmp_path).fit(fixed, datamodule)
    tiny_trainer(tmp_path).fit(pre, datamodule)
    for i in range(4):
        assert torch.equal(fixed.encoder[i].conv.weight, ae_state[f"encoder.{i}.conv.weight"])
    assert not torch.equal(pre.encoder[0].conv.weight, ae_state["encoder.0.conv.weight"])

    # A checkpoint whose architecture does not fit, and one of the wrong kind.
    other = dict(TINY_ARCH, conv_channels=(6, 4, 8, 16))
    with pytest.raises(ValueError, match="autoencoder_checkpoint: convolution 0"):
        AutoencoderClassifier(input_shape=shape, autoencoder_checkpoint=path, **other)
    clf_path = str(tmp_path / "clf.ckpt")
    trainer = tiny_trainer(tmp_path)
    trainer.fit(fixed, datamodule)
    trainer.save_checkpoint(clf_path)
    with pytest.raises(ValueError, match=r"autoencoder_checkpoint: .*'autoencoder_classifier'"):
        AutoencoderClassifier(input_shape=shape, autoencoder_checkpoint=clf_path, **TINY_ARCH)


def test_forward_classifier_checkpoint_into_autoencoder(tmp_path, datamodule) -> None:
    shape = _input_shape(datamodule)
    clf = ForwardClassifier(input_shape=shape, **TINY_ARCH)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(clf, datamodule)
    path = str(tmp_path / "clf.ckpt")
    trainer.save_checkpoint(path)
    ae = ConvAutoencoder(
        input_shape=shape,
        num_units=2,
        **TINY_ARCH,
        encoder="pretrained_fixed",
        encoder_checkpoint=path,
        decoder_conv="init_transpose",
    )
    w = clf.encoder[1].conv.weight
    assert torch.equal(ae.encoder[1].conv.weight, w)
    assert torch.equal(ae.decoder[1].conv.weight, conv_transpose_weight(w))
    tiny_trainer(tmp_path).fit(ae, datamodule)
    assert torch.equal(ae.encoder[1].conv.weight, w)
    assert not torch.equal(ae.decoder[1].conv.weight, conv_transpose_weight(w))
    # Wrong kind: an autoencoder checkpoint is not a forward classifier.
    ae_path = str(tmp_path / "ae.ckpt")
    trainer = tiny_trainer(tmp_path)
    trainer.fit(ae, datamodule)
    trainer.save_checkpoint(ae_path)
    with pytest.raises(ValueError, match=r"encoder_checkpoint: .*'autoencoder'"):
        ConvAutoencoder(
            input_shape=shape, **TINY_ARCH, encoder="pretrained", encoder_checkpoint=ae_path
        )


def test_stacked_strong_growth_and_checkpoint_depth(tmp_path, datamodule) -> None:
    shape = _input_shape(datamodule)
    model = StackedAutoencoder(input_shape=shape, **TINY_ARCH, mode="strong")
    assert (model.num_active_units, model.num_units, model.mode) == (1, 4, "strong")
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule)
    assert model.grow() == 2
    assert model.trained_unit_parameters() and all(
        not p.requires_grad for p in model.trained_unit_parameters()
    )
    before = _snapshot(model)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule)
    after = _snapshot(model)
    assert not _changed(before, after, "encoder.0.conv.weight")
    assert not _changed(before, after, "decoder.0.conv.bias")
    assert _changed(before, after, "encoder.1.conv.weight")
    assert not _changed(before, after, "encoder.2.conv.weight")  # not active yet
    path = str(tmp_path / "stacked.ckpt")
    trainer.save_checkpoint(path)

    restored = StackedAutoencoder.load_from_checkpoint(path)
    assert restored.num_active_units == 2
    assert not restored.encoder[0].conv.weight.requires_grad
    x = torch.randn(3, *shape)
    assert torch.allclose(restored.reconstruct(x), model.reconstruct(x))
    # Resuming the fit restores the depth before training continues.
    fresh = StackedAutoencoder(input_shape=shape, **TINY_ARCH, mode="strong")
    tiny_trainer(tmp_path, max_epochs=2).fit(fresh, datamodule, ckpt_path=path)
    assert fresh.num_active_units == 2
    for _ in range(2):
        fresh.grow()
    with pytest.raises(RuntimeError, match="already active"):
        fresh.grow()


def test_weak_stacking_keeps_training_old_units(datamodule, tmp_path) -> None:
    model = StackedAutoencoder(input_shape=_input_shape(datamodule), **TINY_ARCH, mode="weak")
    model.grow()
    before = _snapshot(model)
    tiny_trainer(tmp_path).fit(model, datamodule)
    assert _changed(before, _snapshot(model), "encoder.0.conv.weight")


def test_reconstruct_zero_code_decodes_from_switches(datamodule) -> None:
    model = ConvAutoencoder(input_shape=_input_shape(datamodule), **TINY_ARCH)
    x = torch.randn(4, *TINY_SHAPE)
    full = model.reconstruct(x)
    zero = model.reconstruct(x, zero_code=True)
    assert full.shape == zero.shape == x.shape
    assert not torch.allclose(full, zero)
    # The switches still carry information about the input: two inputs, two reconstructions.
    assert not torch.allclose(zero[0], zero[1])


def test_non_finite_loss_stops_the_run(tmp_path) -> None:
    dm = TinyDataModule()
    dm.setup("fit")
    dm._splits["train"].tensors[0][:] = float("nan")
    model = ForwardClassifier(input_shape=TINY_SHAPE, **TINY_ARCH)
    with pytest.raises(NonFiniteLossError, match="training loss is nan"):
        tiny_trainer(tmp_path).fit(model, dm)


def test_hparams_round_trip(tmp_path, datamodule) -> None:
    model = ConvAutoencoder(
        input_shape=_input_shape(datamodule), num_units=2, **TINY_ARCH, unpool=["switch", "blind"]
    )
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule)
    path = str(tmp_path / "ae.ckpt")
    trainer.save_checkpoint(path)
    restored = ConvAutoencoder.load_from_checkpoint(path)
    assert restored.hparams.unpool == ["switch", "blind"]
    x = torch.randn(2, *TINY_SHAPE)
    assert torch.allclose(restored.reconstruct(x), model.reconstruct(x))
    assert copy.deepcopy(restored).num_units == 2
