"""The autoencoder options beyond the thesis (docs/models.md, "Beyond the thesis"): denoising
corruption, L1 and contractive penalties, relative and scale-invariant losses, tanh units carried
into classifiers, and log-mel inputs through the console scripts."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from cli_helpers import CONF, load_checkpoint, read_metrics, run_cli
from conftest import TINY
from lightning.pytorch.loggers import CSVLogger
from model_helpers import TINY_ARCH, TINY_SHAPE, TinyDataModule, tiny_trainer

from convae_lightning.callbacks import StackGrowth
from convae_lightning.models import AutoencoderClassifier, ConvAutoencoder, StackedAutoencoder
from convae_lightning.models.objectives import contractive_penalty, reconstruction_loss


class Recorder(pl.Callback):
    """What the encoder saw and the decoder produced, per stage, beside the clean batch."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self._clean: torch.Tensor | None = None
        self._encoded: torch.Tensor | None = None
        self._decoded: torch.Tensor | None = None

    def setup(self, trainer, pl_module, stage) -> None:
        pl_module.encoder[0].conv.register_forward_pre_hook(self._on_encode)
        pl_module.decoder[0].register_forward_hook(self._on_decode)

    def _on_encode(self, module, args) -> None:
        self._encoded = args[0].detach().clone()

    def _on_decode(self, module, args, output) -> None:
        self._decoded = output.detach().clone()

    def _keep(self, stage: str, batch) -> None:
        self.seen.setdefault(stage, []).append((batch[0].clone(), self._encoded, self._decoded))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._keep("train", batch)
        self.seen.setdefault("loss", []).append(outputs["loss"].detach())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        self._keep("val", batch)


def tiny_autoencoder(**kwargs) -> ConvAutoencoder:
    return ConvAutoencoder(TINY_SHAPE, **TINY_ARCH, **kwargs)


def fit_recorded(tmp_path, model: ConvAutoencoder) -> Recorder:
    recorder = Recorder()
    trainer = tiny_trainer(tmp_path, callbacks=[recorder], limit_val_batches=2)
    trainer.fit(model, datamodule=TinyDataModule())
    return recorder


def fit_logged(tmp_path, model: ConvAutoencoder) -> list[dict[str, str]]:
    """Rows of metrics.csv of a 3-step fit logging every step."""
    logger = CSVLogger(tmp_path, name="run")
    trainer = tiny_trainer(tmp_path, logger=logger, log_every_n_steps=1, limit_train_batches=3)
    trainer.fit(model, datamodule=TinyDataModule())
    return read_metrics(tmp_path / "run" / "version_0" / "metrics.csv")


def step_rows(rows: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    return [row for row in rows if row.get(key)]


# ----------------------------------------------------------------------------------- denoising
def test_input_noise_corrupts_training_inputs_only_and_the_target_stays_clean(tmp_path):
    recorder = fit_recorded(tmp_path, tiny_autoencoder(input_noise_std=0.5))
    batches = zip(recorder.seen["train"], recorder.seen["loss"], strict=True)
    for (clean, encoded, decoded), loss in batches:
        noise = encoded - clean
        assert 0.4 < float(noise.std()) < 0.6
        # The loss is the reconstruction's error against the clean batch, not the noisy one.
        want = (decoded - clean).pow(2).flatten(1).sum(1).mean()
        torch.testing.assert_close(loss, want)
        assert not torch.allclose(loss, (decoded - encoded).pow(2).flatten(1).sum(1).mean())
    for clean, encoded, _ in recorder.seen["val"]:
        assert torch.equal(encoded, clean)


@pytest.mark.parametrize(("axis", "option", "width"), [(2, "freq_mask", 12), (3, "time_mask", 3)])
def test_specaugment_masks_zero_a_band_of_each_training_input_only(tmp_path, axis, option, width):
    recorder = fit_recorded(tmp_path, tiny_autoencoder(**{option: width}))
    masked_widths = []
    for clean, encoded, _ in recorder.seen["train"]:
        changed = encoded != clean  # (B, C, F, T)
        assert torch.all(encoded[changed] == 0)
        other = tuple(d for d in (1, 2, 3) if d != axis)
        for sample in changed:
            lines = sample.any(dim=tuple(d - 1 for d in other)).nonzero().flatten().tolist()
            # At most one contiguous band per input, narrower than the maximum width.
            assert lines == list(range(lines[0], lines[0] + len(lines)) if lines else [])
            assert len(lines) < width
            masked_widths.append(len(lines))
    assert max(masked_widths) > 0 and len(set(masked_widths)) > 1  # drawn per example
    for clean, encoded, _ in recorder.seen["val"]:
        assert torch.equal(encoded, clean)


# ---------------------------------------------------------------------------------- penalties
@pytest.mark.parametrize(("option", "weight"), [("code_l1", 0.05), ("contractive", 3.0)])
def test_penalty_is_added_to_the_logged_loss_with_its_weight(tmp_path, option, weight):
    rows = step_rows(fit_logged(tmp_path, tiny_autoencoder(**{option: weight})), "train/loss_step")
    assert len(rows) == 3
    for row in rows:
        penalty = float(row[f"train/{option}_step"])
        assert penalty > 0
        total = float(row["train/reconstruction_step"]) + weight * penalty
        assert math.isclose(float(row["train/loss_step"]), total, rel_tol=1e-5)


def test_no_penalty_is_logged_or_added_at_weight_zero(tmp_path):
    rows = fit_logged(tmp_path, tiny_autoencoder(code_l1=0.0, contractive=0.0))
    assert step_rows(rows, "train/loss_step")
    for key in ("train/code_l1_step", "train/contractive_step", "train/reconstruction_step"):
        assert key not in rows[0]
    model = tiny_autoencoder()
    x = torch.randn(4, *TINY_SHAPE)
    terms = model.objective(x, model.encode, model.decode)
    assert terms.penalties == {}
    torch.testing.assert_close(terms.loss, (model(x) - x).pow(2).flatten(1).sum(1).mean())


def test_l1_penalty_is_the_codes_l1_norm_per_sample():
    model = tiny_autoencoder(code_l1=1.0)
    x = torch.randn(4, *TINY_SHAPE)
    code, _ = model.encode(x)
    terms = model.objective(x, model.encode, model.decode)
    torch.testing.assert_close(terms.penalties["code_l1"], code.abs().flatten(1).sum(1).mean())


def test_contractive_estimate_averages_to_the_jacobians_squared_frobenius_norm():
    model = ConvAutoencoder((1, 13, 4), num_units=2, **TINY_ARCH)
    x = torch.randn(1, 1, 13, 4)
    jacobian = torch.autograd.functional.jacobian(lambda v: model.encode(v)[0], x)
    exact = float(jacobian.pow(2).sum())
    assert exact > 0
    # The batch's mean: 20,000 independent one-vector estimates at the same input.
    inputs = x.expand(20_000, -1, -1, -1).clone().requires_grad_(True)
    code, _ = model.encode(inputs)
    estimate = float(contractive_penalty(code, inputs))
    assert abs(estimate - exact) < 0.05 * exact
    single = [float(contractive_penalty(code[:1], inputs)) for _ in range(3)]
    assert len(set(single)) == 3  # each call draws its own vector


def test_contractive_penalty_trains_the_encoder(tmp_path):
    """The estimate keeps its graph: its gradient reaches the first convolution."""
    model = tiny_autoencoder(contractive=1.0)
    x = torch.randn(4, *TINY_SHAPE)
    terms = model.objective(x, model.encode, model.decode)
    (grad,) = torch.autograd.grad(terms.penalties["contractive"], model.encoder[0].conv.weight)
    assert grad.abs().sum() > 0


def test_stacked_autoencoders_take_the_options_at_every_depth(tmp_path):
    """The penalties apply to the code of the active units as the stack grows."""
    model = StackedAutoencoder(
        input_shape=TINY_SHAPE, **TINY_ARCH, code_l1=0.01, contractive=1.0, activation="tanh"
    )
    logger = CSVLogger(tmp_path, name="run")
    growth = StackGrowth(max_epochs_per_unit=1)
    trainer = tiny_trainer(tmp_path, logger=logger, log_every_n_steps=1, max_epochs=2,
                           callbacks=[growth])  # fmt: skip
    trainer.fit(model, datamodule=TinyDataModule())
    assert model.num_active_units == 2
    rows = step_rows(
        read_metrics(tmp_path / "run" / "version_0" / "metrics.csv"), "train/loss_step"
    )
    assert len(rows) == 4 and all(float(r["train/contractive_step"]) > 0 for r in rows)


# ------------------------------------------------------------------------------------- losses
def test_scale_invariant_loss_ignores_the_scale_of_the_reconstruction():
    x, recon = torch.randn(3, *TINY_SHAPE), torch.randn(3, *TINY_SHAPE)
    base = reconstruction_loss(recon, x, "scale_invariant")
    for scale in (0.01, 0.5, 7.0, -2.0):
        torch.testing.assert_close(reconstruction_loss(scale * recon, x, "scale_invariant"), base)
    assert not torch.allclose(reconstruction_loss(2 * recon, x, "relative"),
                              reconstruction_loss(recon, x, "relative"))  # fmt: skip
    # A reconstruction that is a scaled copy of the input has no error left.
    assert float(reconstruction_loss(3 * x, x, "scale_invariant").max()) < 1e-6
    assert torch.all((base >= 0) & (base <= 1 + 1e-6))


def test_relative_loss_is_the_squared_error_over_the_inputs_squared_norm():
    x, recon = torch.randn(3, *TINY_SHAPE), torch.randn(3, *TINY_SHAPE)
    euclidean = reconstruction_loss(recon, x, "euclidean")
    want = euclidean / x.flatten(1).pow(2).sum(1)
    torch.testing.assert_close(reconstruction_loss(recon, x, "relative"), want)
    # Loud and quiet inputs weigh alike.
    torch.testing.assert_close(reconstruction_loss(10 * recon, 10 * x, "relative"), want)


@pytest.mark.parametrize("kind", ["relative", "scale_invariant"])
def test_training_loss_changes_but_validation_metrics_stay_euclidean(tmp_path, kind):
    rows = fit_logged(tmp_path, tiny_autoencoder(reconstruction_loss=kind))
    plain = fit_logged(tmp_path / "plain", tiny_autoencoder())
    assert set(rows[0]) == set(plain[0])  # the same keys: val/euclid_* compare across options
    steps = step_rows(rows, "train/loss_step")
    for row in steps:
        loss, euclid = float(row["train/loss_step"]), float(row["train/euclid_step"])
        # Relative to the inputs' squared norms (about 320 here), not the squared error.
        assert 0 < loss < euclid**2 / 20
        if kind == "scale_invariant":
            assert loss <= 1 + 1e-6
    assert step_rows(rows, "val/euclid_balanced")


# --------------------------------------------------------------------------------- activation
def test_tanh_units_give_a_signed_bounded_code():
    torch.manual_seed(0)
    x = torch.randn(8, *TINY_SHAPE)
    code, _ = tiny_autoencoder(activation="tanh").encode(x)
    assert code.min() < 0 and code.abs().max() < 1
    relu_code, _ = tiny_autoencoder().encode(x)
    assert relu_code.min() >= 0


def test_a_classifier_cannot_take_a_tanh_encoder_as_relu(tmp_path):
    path = tmp_path / "tanh.ckpt"
    model = tiny_autoencoder(activation="tanh")
    torch.save({"state_dict": model.state_dict(), "convae": model.checkpoint_metadata()}, path)
    common = {"input_shape": TINY_SHAPE, "autoencoder_checkpoint": str(path), **TINY_ARCH}
    classifier = AutoencoderClassifier(**common)
    assert classifier.activation == "tanh"
    assert {block.activation for block in classifier.encoder} == {"tanh"}
    with pytest.raises(ValueError, match=r"activation='relu' differs from the 'tanh'"):
        AutoencoderClassifier(**common, activation="relu")
    assert AutoencoderClassifier(TINY_SHAPE, encoder="random", **TINY_ARCH).activation == "relu"


# -------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_noise_std": -0.1}, "input_noise_std must be a number >= 0"),
        ({"freq_mask": -1}, "freq_mask must be an int >= 0"),
        ({"time_mask": 9}, r"time_mask=9 is wider than the input \(8 frames"),
        ({"freq_mask": 2.5}, "freq_mask must be an int >= 0"),
        ({"code_l1": -1.0}, "code_l1 must be a number >= 0"),
        ({"contractive": float("nan")}, "contractive must be a number >= 0"),
        ({"contractive": float("inf")}, "contractive must be finite"),
        ({"reconstruction_loss": "cosine"}, "reconstruction_loss must be one of"),
        ({"activation": "sigmoid"}, r"activation must be one of \('relu', 'tanh'\)"),
    ],
)
def test_bad_option_values_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_autoencoder(**kwargs)


def test_conv_inverse_has_no_activation_to_choose():
    with pytest.raises(ValueError, match="conv_inverse' has no nonlinearity"):
        ConvAutoencoder(TINY_SHAPE, num_units=1, architecture="conv_inverse", activation="tanh")


# ------------------------------------------------------------------------ through the console
@pytest.fixture(scope="module")
def log_mel_runs(tmp_path_factory, cli_cache):
    """A tanh autoencoder on log-mel inputs, then the pretrained classifier on it, as users run
    them (`convae fit --config conf/...`)."""
    base = tmp_path_factory.mktemp("beyond")
    features = ["--data.representation", "log_mel"]
    autoencoder = run_cli(
        "convae",
        ["fit", "--config", str(CONF / "regular_ae.yaml"), *TINY, *features,
         "--model.init_args.activation", "tanh"],
        base / "ae", cli_cache, "regular_ae",
    )  # fmt: skip
    checkpoint = autoencoder.run_dir / "checkpoints" / "last.ckpt"
    classify = ["fit", "--config", str(CONF / "pretrained_classifier.yaml"), *TINY,
                "--model.init_args.autoencoder_checkpoint", str(checkpoint)]  # fmt: skip
    classifier = run_cli("convae", [*classify, *features], base / "clf", cli_cache,
                         "pretrained_classifier")  # fmt: skip
    mismatch = run_cli("convae", classify, base / "mismatch", cli_cache)
    return autoencoder, classifier, mismatch


@pytest.mark.slow
def test_log_mel_tanh_autoencoder_and_its_classifier_fit_through_the_console(log_mel_runs):
    autoencoder, classifier, _ = log_mel_runs
    assert autoencoder.returncode == 0, autoencoder.explain()
    assert classifier.returncode == 0, classifier.explain()
    source = load_checkpoint(autoencoder.run_dir / "checkpoints" / "last.ckpt")
    assert source["convae"]["activation"] == "tanh"
    assert source["convae"]["input_shape"][:2] == [1, 40]  # 40 mel bands, not 201 bins
    target = load_checkpoint(classifier.run_dir / "checkpoints" / "last.ckpt")
    assert target["convae"]["activation"] == "tanh"
    assert target["convae"]["input_shape"] == source["convae"]["input_shape"]
    metrics = read_metrics(classifier.run_dir / "metrics.csv")
    assert any(row.get("val/acc48_balanced") for row in metrics)
    # Rebuilt from its checkpoint, the classifier's convolutions are tanh units.
    model = AutoencoderClassifier.load_from_checkpoint(
        classifier.run_dir / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    assert {block.activation for block in model.encoder} == {"tanh"}
    x = torch.randn(4, *model.input_shape)
    assert model.encoder[0](x).min() < 0


@pytest.mark.slow
def test_a_classifier_on_other_features_than_its_autoencoder_is_refused(log_mel_runs):
    _, _, mismatch = log_mel_runs
    assert mismatch.returncode != 0
    assert "autoencoder_checkpoint" in mismatch.stderr
    assert "1 channel(s) x 40 rows" in mismatch.stderr
