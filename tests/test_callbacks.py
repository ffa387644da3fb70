"""The callbacks on real tiny Trainer runs over the embedded corpus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import soundfile as sf
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from model_helpers import tiny_trainer

from convae_lightning.callbacks import (
    LayerFreezing,
    ReconstructionLogger,
    StackGrowth,
    TiedTransposeSync,
)
from convae_lightning.callbacks.stack_growth import unit_converged
from convae_lightning.data import TimitDataModule
from convae_lightning.loggers import OfflineWandbLogger
from convae_lightning.models import (
    AutoencoderClassifier,
    ConvAutoencoder,
    NonFiniteLossError,
    StackedAutoencoder,
)
from convae_lightning.nn import conv_transpose_weight
from convae_lightning.runs import RunRecord

#: Figure 2 kernels and pools with few channels: a fit over the embedded corpus takes seconds.
SMALL = {"conv_channels": (4, 4, 8, 16)}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedded_cache")


def datamodule(cache_dir: Path, seed: int = 0, **overrides) -> TimitDataModule:
    options = {"eval_distribution": "balanced", **overrides}
    dm = TimitDataModule(
        cache_dir=str(cache_dir),
        train_per_class=2,
        eval_per_class=1,
        batch_size=32,
        progress=False,
        seed=seed,
        **options,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def trainer(tmp_path: Path, callbacks: list[Callback], **overrides) -> pl.Trainer:
    """model_helpers.tiny_trainer with a few more batches, callbacks and determinism."""
    options = {"limit_train_batches": 3, "limit_val_batches": 2, "deterministic": True}
    return tiny_trainer(tmp_path, callbacks=callbacks, **{**options, **overrides})


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class AfterEachBatch(Callback):
    """Records a check after every training batch (i.e. after every optimiser step)."""

    def __init__(self, check) -> None:
        self.check = check
        self.results: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.results.append(self.check(pl_module))


@torch.no_grad()
def transpose_gap(module: ConvAutoencoder) -> float:
    return max(
        float((u.decoder.conv.weight - conv_transpose_weight(u.encoder.conv.weight)).abs().max())
        for u in module.units()
    )


# --------------------------------------------------------------------------- TiedTransposeSync
def test_transpose_sync_keeps_decoders_equal_to_the_encoder_transpose(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = ConvAutoencoder(dm.input_shape, num_units=2, decoder_conv="transpose_sync", **SMALL)
    before = snapshot(model)
    sync = TiedTransposeSync()
    probe = AfterEachBatch(transpose_gap)  # runs after TiedTransposeSync (callback order)
    trainer(tmp_path, [sync, probe]).fit(model, dm)
    assert len(probe.results) == 3
    assert max(probe.results) == 0.0
    assert not torch.equal(model.encoder[0].conv.weight, before["encoder.0.conv.weight"])
    # The decoder weight has no gradient and is no optimiser parameter.
    decoder_weight = model.decoder[0].conv.weight
    assert not decoder_weight.requires_grad
    optimised = {id(p) for g in model.trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(decoder_weight) not in optimised


def test_without_the_callback_transpose_sync_decoders_fall_behind(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = ConvAutoencoder(dm.input_shape, num_units=1, decoder_conv="transpose_sync", **SMALL)
    with pytest.warns(UserWarning, match="TiedTransposeSync"):
        trainer(tmp_path, []).fit(model, dm)
    assert transpose_gap(model) > 0


def test_transpose_sync_rejects_modules_without_transposes(cache_dir, tmp_path):
    from convae_lightning.models import ForwardClassifier

    dm = datamodule(cache_dir)
    model = ForwardClassifier(dm.input_shape, conv_channels=(4, 4, 8, 16), fc_sizes=(16,))
    with pytest.raises(MisconfigurationException, match="sync_transposes"):
        trainer(tmp_path, [TiedTransposeSync()]).fit(model, dm)


# ------------------------------------------------------------------------------ LayerFreezing
def test_layer_freezing_freezes_weights_and_biases_separately(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = ConvAutoencoder(dm.input_shape, num_units=2, **SMALL)
    before = snapshot(model)
    freezing = LayerFreezing(freeze=["encoder.0.conv.weight", "decoder.1.conv.bias"])
    fit_trainer = trainer(tmp_path, [freezing])
    fit_trainer.fit(model, dm)
    after = snapshot(model)
    for name in ("encoder.0.conv.weight", "decoder.1.conv.bias"):
        assert torch.equal(after[name], before[name]), name
    for name in ("encoder.0.conv.bias", "decoder.1.conv.weight", "encoder.1.conv.weight"):
        assert not torch.equal(after[name], before[name]), name
    optimizer = fit_trainer.optimizers[0]
    frozen = {id(model.encoder[0].conv.weight), id(model.decoder[1].conv.bias)}
    assert not frozen & {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not frozen & {id(p) for p in optimizer.state}


def test_layer_freezing_unfreezes_at_the_given_epoch(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = ConvAutoencoder(dm.input_shape, num_units=1, **SMALL)
    name = "encoder.0.conv.weight"
    seen = []

    class Watch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(pl_module.encoder[0].conv.weight.detach().clone())

    start = model.encoder[0].conv.weight.detach().clone()
    freezing = LayerFreezing(freeze=[name], unfreeze_at_epoch={1: [name]})
    fit_trainer = trainer(tmp_path, [freezing, Watch()], max_epochs=2)
    fit_trainer.fit(model, dm)
    assert torch.equal(seen[0], start)  # frozen in epoch 0
    assert not torch.equal(seen[1], seen[0])  # trained in epoch 1
    params = {id(p) for g in fit_trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(model.encoder[0].conv.weight) in params
    assert freezing.state_dict()["frozen"] == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"freeze": ["encoder.9.*"]}, "matches no parameter"),
        ({"unfreeze_at_epoch": {-1: ["*"]}}, "epochs must be >= 0"),
    ],
)
def test_layer_freezing_bad_arguments(cache_dir, tmp_path, kwargs, match):
    dm = datamodule(cache_dir)
    with pytest.raises(ValueError, match=match):
        callback = LayerFreezing(**kwargs)
        model = ConvAutoencoder(dm.input_shape, num_units=1, **SMALL)
        trainer(tmp_path, [callback]).fit(model, dm)


# -------------------------------------------------------------------------------- StackGrowth
class DepthLog(Callback):
    def __init__(self) -> None:
        self.depths: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.depths.append(pl_module.num_active_units)


@pytest.mark.parametrize("mode", ["strong", "weak"])
def test_stack_growth_grows_at_convergence_and_stops_after_the_last_unit(cache_dir, tmp_path, mode):
    dm = datamodule(cache_dir)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=3, mode=mode, **SMALL)
    unit0_before = snapshot(model.encoder[0])
    growth = StackGrowth(monitor="val/euclid_balanced", max_epochs_per_unit=2)
    depths = DepthLog()
    snapshots = {}

    class AfterFirstGrowth(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if pl_module.num_active_units == 2 and "grown" not in snapshots:
                snapshots["grown"] = snapshot(pl_module.encoder[0])

    fit_trainer = trainer(tmp_path, [growth, depths, AfterFirstGrowth()], max_epochs=20)
    fit_trainer.fit(model, dm)
    assert depths.depths == [1, 1, 2, 2, 3, 3]  # two epochs per unit, then stop
    assert fit_trainer.current_epoch == 6
    assert [h["units"] for h in growth.history] == [1, 2, 3]
    unit0_after = snapshot(model.encoder[0])
    changed = any(not torch.equal(unit0_after[k], snapshots["grown"][k]) for k in unit0_after)
    # strong: the first unit is fixed once the second is added; weak: it keeps training.
    assert changed == (mode == "weak")
    assert any(not torch.equal(unit0_after[k], unit0_before[k]) for k in unit0_after)


def test_stack_growth_patience_decides_convergence(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=2, **SMALL)
    # An improvement must exceed an impossible margin: every check counts as "no improvement"
    # except the first, so patience=1 converges after two epochs.
    growth = StackGrowth(monitor="val/euclid_balanced", patience=1, min_delta=1e9)
    depths = DepthLog()
    trainer(tmp_path, [growth, depths], max_epochs=10).fit(model, dm)
    assert depths.depths == [1, 1, 2, 2]
    assert growth.history[0]["reason"].startswith("no improvement")


def test_stack_growth_names_missing_metric(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=2, **SMALL)
    with pytest.raises(MisconfigurationException, match=r"val/nope.*available"):
        trainer(tmp_path, [StackGrowth(monitor="val/nope")]).fit(model, dm)


def test_stack_growth_needs_a_stacked_autoencoder(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = ConvAutoencoder(dm.input_shape, num_units=1, **SMALL)
    with pytest.raises(MisconfigurationException, match="StackGrowth needs a module with grow"):
        trainer(tmp_path, [StackGrowth()]).fit(model, dm)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mode": "up"}, "mode must be"), ({"patience": -1}, "patience"),
     ({"max_epochs_per_unit": 0}, "max_epochs_per_unit")],
)  # fmt: skip
def test_stack_growth_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StackGrowth(**kwargs)


@pytest.mark.parametrize(
    ("epochs_in_unit", "wait", "patience", "cap", "done", "reason"),
    [
        (1, 0, 5, None, False, ""),
        (7, 4, 5, None, False, ""),
        (7, 5, 5, None, True, "no improvement for 5 epochs (patience=5)"),
        (3, 0, 0, None, True, "no improvement for 0 epochs (patience=0)"),
        (3, 1, 5, 3, True, "reached max_epochs_per_unit=3"),
        (3, 5, 5, 3, True, "reached max_epochs_per_unit=3"),  # the cap is reported first
        (2, 1, 5, 3, False, ""),
    ],
)
def test_unit_converged(epochs_in_unit, wait, patience, cap, done, reason) -> None:
    assert unit_converged(epochs_in_unit, wait, patience, cap) == (done, reason)


def test_stack_growth_keeps_each_depths_best_epoch(cache_dir, tmp_path, caplog) -> None:
    dm = datamodule(cache_dir, eval_distribution="natural")
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=2, mode="weak", **SMALL)
    growth = StackGrowth(monitor="val/euclid_natural", max_epochs_per_unit=2)
    logger = CSVLogger(tmp_path, name="run")
    with caplog.at_level("INFO"):
        fit_trainer = trainer(tmp_path, [growth], max_epochs=10, logger=logger)
        fit_trainer.fit(model, dm)
    assert "now training 2 units" in caplog.text
    run = RunRecord.load(logger.log_dir)
    assert [v for _, v in run.series("stack/active_units")] == [1, 1, 2, 2]
    val = dict(run.series("val/euclid_natural"))  # epoch -> value
    for units, epochs in ((1, [0, 1]), (2, [2, 3])):
        best_epoch = min(epochs, key=val.__getitem__)
        assert run.final(f"val_unit{units}/euclid_natural") == pytest.approx(val[best_epoch])
        assert run.final(f"val_unit{units}/epochs") == 2
        assert run.final(f"val_unit{units}/best_epoch") == best_epoch
        assert f"val_unit{units}/corr_natural" in run.metric_keys
        path = Path(logger.log_dir) / "checkpoints" / f"unit{units}.ckpt"
        assert torch.load(path, weights_only=False)["epoch"] == best_epoch
        # The file loads at its depth, and evaluating it gives the depth's logged result.
        restored = StackedAutoencoder.load_from_checkpoint(path)
        assert restored.num_active_units == units
        results = trainer(tmp_path, []).validate(model, dm, ckpt_path=str(path), verbose=False)
        assert model.num_active_units == units
        assert results[0]["val/euclid_natural"] == pytest.approx(val[best_epoch], rel=1e-5)
        # A classifier config takes the depth's trained units.
        classifier = AutoencoderClassifier(
            input_shape=dm.input_shape, autoencoder_checkpoint=str(path), fc_sizes=(16,), **SMALL
        )
        assert classifier.num_loaded_layers == units
    assert [h["units"] for h in growth.history] == [1, 2]


def test_stack_growth_logs_the_unfinished_unit_when_training_ends(cache_dir, tmp_path):
    dm = datamodule(cache_dir)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=3, **SMALL)
    growth = StackGrowth(max_epochs_per_unit=2)
    logger = CSVLogger(tmp_path, name="run")
    trainer(tmp_path, [growth], max_epochs=3, logger=logger).fit(model, dm)
    run = RunRecord.load(logger.log_dir)
    assert run.final("val_unit1/epochs") == 2
    assert run.final("val_unit2/epochs") == 1  # stopped by max_epochs, one epoch into unit 2
    assert run.epochs_trained == 3  # the unit's row is the last epoch's, not a fourth
    assert sorted(p.name for p in (Path(logger.log_dir) / "checkpoints").glob("*.ckpt")) == [
        "unit1.ckpt",
        "unit2.ckpt",
    ]


def test_stack_growth_stops_on_a_non_finite_metric(cache_dir, tmp_path) -> None:
    dm = datamodule(cache_dir)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=2, **SMALL)

    class Poison(Callback):  # NaN inputs in validation only: the training loss stays finite
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, idx=0):
            batch[0].fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"val/euclid_balanced is nan"):
        trainer(tmp_path, [Poison(), StackGrowth()]).fit(model, dm)


def fit_stacked(cache_dir: Path, root: Path, max_epochs: int, ckpt_path: str | None = None):
    pl.seed_everything(0)
    dm = datamodule(cache_dir)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=3, mode="strong", **SMALL)
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=0)
    growth = StackGrowth(monitor="val/euclid_balanced", max_epochs_per_unit=2)
    fit_trainer = trainer(
        root, [growth, checkpoint], max_epochs=max_epochs, enable_checkpointing=True
    )
    fit_trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model, growth


@pytest.mark.slow
def test_resume_mid_growth_matches_the_uninterrupted_run(cache_dir, tmp_path):
    full, full_growth = fit_stacked(cache_dir, tmp_path / "full", max_epochs=5)
    # Interrupted after epoch 3: one epoch into the second unit.
    first, _ = fit_stacked(cache_dir, tmp_path / "part", max_epochs=3)
    assert first.num_active_units == 2
    resumed, resumed_growth = fit_stacked(
        cache_dir, tmp_path / "part", max_epochs=5, ckpt_path=str(tmp_path / "part/ckpt/last.ckpt")
    )
    assert resumed.num_active_units == full.num_active_units == 3
    assert resumed_growth.history == full_growth.history
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


# --------------------------------------------------------------------- ReconstructionLogger
def test_reconstruction_logger_writes_images_and_audio(cache_dir, tmp_path):
    # An 8 kHz corpus: every clip must say 8000 Hz, or it plays at twice the speed.
    dm = datamodule(cache_dir, sample_rate=8000)
    model = ConvAutoencoder(dm.input_shape, num_units=2, **SMALL)
    wandb_logger = OfflineWandbLogger(save_dir=str(tmp_path / "wandb_run"), name="recon")
    csv = CSVLogger(tmp_path, name="csv")
    callback = ReconstructionLogger(every_n_epochs=1, num_examples=3)
    trainer(tmp_path, [callback], logger=[csv, wandb_logger]).fit(model, dm)
    out = Path(csv.log_dir) / "reconstructions"
    assert (out / "epoch=0.png").stat().st_size > 1000
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 9  # 3 patches x (input, reconstruction, code zeroed)
    assert {sf.info(p).samplerate for p in wavs} == {8000}
    assert sf.info(wavs[0]).frames == dm.segment_length
    media = list((tmp_path / "wandb_run").rglob("media/images/**/*.png"))
    audio = list((tmp_path / "wandb_run").rglob("media/audio/**/*.wav"))
    assert media
    # W&B stores identical clips once (content-addressed): every kind is there, maybe fewer files.
    kinds = {p.name.split("_0_")[0] for p in audio}
    assert kinds == {"audio_input", "audio_reconstruction", "audio_code_zeroed"}
    assert {sf.info(p).samplerate for p in audio} == {8000}


def test_reconstruction_logger_needs_reconstruct(cache_dir, tmp_path):
    from convae_lightning.models import ForwardClassifier

    dm = datamodule(cache_dir)
    model = ForwardClassifier(dm.input_shape, conv_channels=(4, 4, 8, 16), fc_sizes=(16,))
    with pytest.raises(MisconfigurationException, match="reconstruct"):
        trainer(tmp_path, [ReconstructionLogger()]).fit(model, dm)


# ------------------------------------------------------------------------------------- DDP
DDP_SCRIPT = """
import sys, torch, lightning.pytorch as pl
from convae_lightning.callbacks import LayerFreezing, ReconstructionLogger, StackGrowth
from convae_lightning.data import TimitDataModule
from convae_lightning.models import StackedAutoencoder, reconstruction_measures

out = sys.argv[1]
pl.seed_everything(0)
dm = TimitDataModule(cache_dir=sys.argv[2], train_per_class=2, eval_per_class=1, batch_size=16,
                     eval_distribution="balanced", progress=False)
model = StackedAutoencoder(input_shape=dm.input_shape, num_units=2, mode="strong",
                           conv_channels=(4, 4, 8, 16))
frozen_bias = model.decoder[0].conv.bias.detach().clone()
class Snap(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.unit0 = pl_module.encoder[0].conv.weight.detach().clone()
snap = Snap()
class LocalEuclid(pl.Callback):  # this rank's own sum over the last validation epoch
    def on_validation_epoch_start(self, trainer, pl_module):
        self.total, self.count = 0.0, 0
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, idx=0):
        x = batch[0]
        self.total += float(reconstruction_measures(pl_module.reconstruct(x), x)["euclid"].sum())
        self.count += len(x)
local = LocalEuclid()
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true",
                     max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=False,
                     default_root_dir=out,
                     enable_checkpointing=False, enable_progress_bar=False,
                     num_sanity_val_steps=0, callbacks=[
                         StackGrowth(monitor="val/euclid_balanced", max_epochs_per_unit=1),
                         LayerFreezing(freeze=["decoder.0.conv.bias"]), snap, local,
                         ReconstructionLogger(every_n_epochs=1, num_examples=2)])
trainer.fit(model, dm)
torch.save({"state": model.state_dict(), "unit0_at_growth": snap.unit0,
            "depth": model.num_active_units, "frozen_bias": frozen_bias,
            "per_rank": len(trainer.train_dataloader.sampler),
            "draw": len(trainer.train_dataloader.sampler.draw()),
            "logged": float(trainer.callback_metrics["val/euclid_balanced"]),
            "total": local.total, "count": local.count},
           f"{out}/rank{trainer.global_rank}.pt")
"""


@pytest.mark.slow
def test_growth_and_freezing_under_ddp_with_two_cpu_processes(cache_dir, tmp_path):
    datamodule(cache_dir)  # build the cache once, before two processes race for it
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted(p.name for p in (tmp_path / "reconstructions").glob("*.png"))
    assert images == ["epoch=0.png", "epoch=1.png"]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for rank in ranks:
        # Each rank gets half of the epoch's draw: the resampler is not sharded a second time.
        assert rank["per_rank"] == -(-rank["draw"] // 2)
        assert rank["depth"] == 2
        assert torch.equal(rank["state"]["decoder.0.conv.bias"], rank["frozen_bias"])
        # strong stacking: unit 0 fixed once unit 1 was added, on every rank
        assert torch.equal(rank["state"]["encoder.0.conv.weight"], rank["unit0_at_growth"])
    for name, value in ranks[0]["state"].items():  # gradients stayed synchronised
        assert torch.allclose(value, ranks[1]["state"][name]), name
    # Validation metrics are means over both ranks' samples, not rank 0's alone.
    local = [rank["total"] / rank["count"] for rank in ranks]
    assert abs(local[0] - local[1]) > 1e-4  # the ranks saw different patches
    pooled = sum(rank["total"] for rank in ranks) / sum(rank["count"] for rank in ranks)
    for rank in ranks:
        assert rank["logged"] == pytest.approx(pooled, rel=1e-5)


def fit_with_freezing(cache_dir: Path, root: Path, max_epochs: int, ckpt_path: str | None = None):
    pl.seed_everything(0)
    dm = datamodule(cache_dir)
    model = ConvAutoencoder(dm.input_shape, num_units=2, **SMALL)
    name = "encoder.0.conv.weight"
    freezing = LayerFreezing(freeze=[name, "decoder.1.*"], unfreeze_at_epoch={1: [name]})
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=0)
    fit_trainer = trainer(
        root, [freezing, checkpoint], max_epochs=max_epochs, enable_checkpointing=True
    )
    fit_trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model, fit_trainer


@pytest.mark.slow
def test_layer_freezing_resumes_with_the_same_optimizer_groups(cache_dir, tmp_path):
    full, full_trainer = fit_with_freezing(cache_dir, tmp_path / "full", max_epochs=3)
    fit_with_freezing(cache_dir, tmp_path / "part", max_epochs=2)  # unfrozen in epoch 1
    resumed, resumed_trainer = fit_with_freezing(
        cache_dir, tmp_path / "part", 3, ckpt_path=str(tmp_path / "part/ckpt/last.ckpt")
    )
    groups = [len(g["params"]) for g in resumed_trainer.optimizers[0].param_groups]
    assert groups == [len(g["params"]) for g in full_trainer.optimizers[0].param_groups]
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_reconstruction_logger_sends_images_and_audio_to_tensorboard(cache_dir, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = datamodule(cache_dir, sample_rate=8000)
    model = ConvAutoencoder(dm.input_shape, num_units=2, **SMALL)
    logger = TensorBoardLogger(tmp_path, name="tb")
    callback = ReconstructionLogger(every_n_epochs=1, num_examples=2)
    trainer(tmp_path, [callback], logger=logger).fit(model, dm)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "audio": 0}).Reload()
    assert events.Tags()["images"] == ["reconstructions/spectrograms"]
    assert sorted(events.Tags()["audio"]) == [
        f"reconstructions/audio_{kind}_{i}"
        for kind in ("code_zeroed", "input", "reconstruction")
        for i in range(2)
    ]
    assert {e.sample_rate for t in events.Tags()["audio"] for e in events.Audio(t)} == {8000}
