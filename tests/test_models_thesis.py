"""The thesis's experiments on real tiny fits: every Table 3 column-I condition from a trained
forward network, fixed transposes that cannot learn, and errors read beside the thesis's
reference (input norm, relative error, switch-only reconstruction)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import TINY_ARCH, TINY_SHAPE, TinyDataModule, tiny_trainer

from convae_lightning.callbacks import TiedTransposeSync
from convae_lightning.models import ConvAutoencoder, ForwardClassifier, reconstruction_measures
from convae_lightning.nn import conv_transpose_weight

#: Table 3's twelve rows (thesis-numbers.md) as ConvAutoencoder arguments. "Fixed and initialised
#: randomly" decoders are free decoders frozen by name; "fixed to the transpose" ones are
#: transpose_sync decoders kept in sync by TiedTransposeSync.
TABLE3_ROWS = {
    "baseline: encoder fixed random, decoder fixed random": {
        "encoder": "random_fixed",
        "frozen": ["decoder.*"],
    },
    "baseline: encoder fixed random, decoder fixed to transpose": {
        "encoder": "random_fixed",
        "decoder_conv": "transpose_sync",
    },
    "baseline: trained fixed encoder, decoder fixed random": {
        "encoder": "pretrained_fixed",
        "frozen": ["decoder.*"],
    },
    "fixed trained encoder, decoder fixed to transpose": {
        "encoder": "pretrained_fixed",
        "decoder_conv": "transpose_sync",
    },
    "fixed trained encoder, decoder initialised to transpose": {
        "encoder": "pretrained_fixed",
        "decoder_conv": "init_transpose",
    },
    "fixed trained encoder, decoder initialised randomly": {"encoder": "pretrained_fixed"},
    "initialised to trained encoder, decoder fixed to transpose": {
        "encoder": "pretrained",
        "decoder_conv": "transpose_sync",
    },
    "initialised to trained encoder, decoder initialised to transpose": {
        "encoder": "pretrained",
        "decoder_conv": "init_transpose",
    },
    "initialised to trained encoder, decoder initialised randomly": {"encoder": "pretrained"},
    "encoder initialised randomly, decoder fixed to transpose": {
        "encoder": "random",
        "decoder_conv": "transpose_sync",
    },
    "encoder fixed and initialised randomly, decoder initialised randomly": {
        "encoder": "random_fixed"
    },
    "encoder initialised randomly, decoder initialised randomly": {"encoder": "random"},
}


@pytest.fixture(scope="module")
def forward_checkpoint(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A trained Figure 2 forward network (5x2 pools): its first convolution feeds column I."""
    tmp = tmp_path_factory.mktemp("forward")
    dm = TinyDataModule()
    model = ForwardClassifier(TINY_SHAPE, **TINY_ARCH)
    trainer = tiny_trainer(tmp)
    trainer.fit(model, dm)
    path = str(tmp / "forward.ckpt")
    trainer.save_checkpoint(path)
    return path, {k: v.detach().clone() for k, v in model.state_dict().items()}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("row", list(TABLE3_ROWS))
def test_table3_column_i_condition_trains_from_a_forward_checkpoint(
    tmp_path, forward_checkpoint, row
):
    path, forward = forward_checkpoint
    kwargs = dict(TABLE3_ROWS[row])
    if kwargs["encoder"].startswith("pretrained"):
        kwargs["encoder_checkpoint"] = path
    model = ConvAutoencoder(
        TINY_SHAPE, num_units=1, architecture="conv_inverse", **kwargs, **TINY_ARCH
    )
    if "encoder_checkpoint" in kwargs:
        assert torch.equal(model.encoder[0].conv.weight, forward["encoder.0.conv.weight"])
    before = snapshot(model)
    trainer = tiny_trainer(tmp_path, callbacks=[TiedTransposeSync()])
    trainer.fit(model, TinyDataModule())
    after = snapshot(model)
    encoder_trains = kwargs["encoder"] in ("random", "pretrained")
    synced = kwargs.get("decoder_conv") == "transpose_sync"
    # A decoder fixed to the transpose moves only with its encoder; a frozen one never.
    decoder_moves = encoder_trains if synced else "frozen" not in kwargs
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert ("encoder.0.conv.weight" in changed) == encoder_trains
    assert ("decoder.0.conv.weight" in changed) == decoder_moves
    if synced:
        # "No capability to learn": the weight is the encoder's transpose, the bias stays zero.
        assert torch.equal(
            after["decoder.0.conv.weight"], conv_transpose_weight(after["encoder.0.conv.weight"])
        )
        assert torch.equal(after["decoder.0.conv.bias"], torch.zeros(TINY_SHAPE[0]))
    assert trainer.callback_metrics["val/euclid_balanced"] > 0


def test_transpose_sync_bias_trains_only_when_asked(tmp_path) -> None:
    model = ConvAutoencoder(
        TINY_SHAPE,
        num_units=2,
        decoder_conv="transpose_sync",
        transpose_sync_bias="trained",
        **TINY_ARCH,
    )
    before = snapshot(model)
    tiny_trainer(tmp_path, callbacks=[TiedTransposeSync()]).fit(model, TinyDataModule())
    assert not torch.equal(model.decoder[0].conv.bias, before["decoder.0.conv.bias"])


@pytest.mark.parametrize(("unpool", "zero_code"), [("switch", True), ("blind", False)])
def test_eval_metrics_relative_to_the_input_norm(tmp_path, unpool, zero_code) -> None:
    dm = TinyDataModule()
    model = ConvAutoencoder(TINY_SHAPE, num_units=2, unpool=unpool, **TINY_ARCH)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, dm)
    assert {"val/euclid_rel_balanced", "val/input_norm_natural"} <= set(trainer.callback_metrics)
    results = trainer.test(model, dm, verbose=False)
    for view, loader, logged in zip(dm.eval_views, dm.test_dataloader(), results, strict=True):
        x = next(iter(loader))[0]  # limit_test_batches=1: the one batch the test saw
        measures = reconstruction_measures(model.reconstruct(x), x)
        euclid, norm = measures["euclid"].mean(), measures["input_norm"].mean()
        assert logged[f"test/euclid_{view}"] == pytest.approx(float(euclid), rel=1e-5)
        assert logged[f"test/input_norm_{view}"] == pytest.approx(float(norm), rel=1e-5)
        assert logged[f"test/euclid_rel_{view}"] == pytest.approx(float(euclid / norm), rel=1e-5)
        assert (f"test/euclid_zero_code_{view}" in logged) == zero_code
        if zero_code:
            zero = reconstruction_measures(model.reconstruct(x, zero_code=True), x)
            assert logged[f"test/euclid_zero_code_{view}"] == pytest.approx(
                float(zero["euclid"].mean()), rel=1e-5
            )
            assert logged[f"test/corr_zero_code_{view}"] == pytest.approx(
                float(zero["corr"].mean()), rel=1e-4, abs=1e-6
            )
