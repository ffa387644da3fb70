"""``conf/overlays/thesis_protocol*.yaml``: the thesis's literal settings compose with every run
config of their model family and give Figure 2's maps, drop 0.9, validation on TEST and the
50-epoch / patience-5 stops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from convae_lightning.callbacks import StackGrowth
from convae_lightning.cli import ConvaeCLI
from convae_lightning.models import ConvAutoencoder

REPO = Path(__file__).resolve().parents[1]
FIGURE2_MAPS = [(99, 8), (48, 4), (22, 2), (1, 1)]

#: Run config -> the overlay of its model family.
FAMILIES = {
    "forward": "thesis_protocol",
    "pretrained_classifier": "thesis_protocol",
    "fixed_classifier": "thesis_protocol",
    "regular_ae": "thesis_protocol_autoencoder",
    "inversion": "thesis_protocol_autoencoder",
    "baseline_untrained": "thesis_protocol_autoencoder",
    "weak_stack": "thesis_protocol_stack",
    "strong_stack": "thesis_protocol_stack",
}


@pytest.fixture(scope="module")
def autoencoder_checkpoint(tmp_path_factory) -> str:
    """A Figure 2 autoencoder checkpoint (untrained: only its shapes matter here)."""
    model = ConvAutoencoder()
    path = tmp_path_factory.mktemp("ae") / "ae.ckpt"
    torch.save({"state_dict": model.state_dict(), "convae": model.checkpoint_metadata()}, path)
    return str(path)


@pytest.mark.parametrize("config", list(FAMILIES))
def test_overlay_composes_with_its_family(config, autoencoder_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # loggers resolve runs/ here; nothing is fitted
    args = [
        "--config", str(REPO / "conf" / f"{config}.yaml"),
        "--config", str(REPO / "conf" / "overlays" / f"{FAMILIES[config]}.yaml"),
        "--data.cache_dir", str(tmp_path.parent / "protocol_cache"),
        "--data.progress", "false",
        "--data.num_frames", "16",  # the thesis's 201 x 16 patches
    ]  # fmt: skip
    if config in ("pretrained_classifier", "fixed_classifier"):
        args += ["--model.init_args.autoencoder_checkpoint", autoencoder_checkpoint]
    cli = ConvaeCLI(args=args, run=False)
    model, trainer = cli.model, cli.trainer
    assert (cli.datamodule.hparams.val_split, cli.datamodule.hparams.val_fraction) == ("test", 0)
    assert trainer.check_val_every_n_epoch == 1
    if config != "inversion":  # conv + inverse has no pooling to set
        assert [s.output_hw for s in model.specs] == FIGURE2_MAPS[: len(model.specs)]
        assert model.specs[0].pool_size == (5, 1) and model.specs[0].pool_stride == (2, 2)
    if FAMILIES[config] == "thesis_protocol":
        assert model.head[-2].p == 0.9  # the dropout before the classification layer
    if FAMILIES[config] == "thesis_protocol_stack":
        growth = next(cb for cb in trainer.callbacks if isinstance(cb, StackGrowth))
        assert (growth.patience, growth.max_epochs_per_unit) == (5, 50)
    else:
        stop = next(cb for cb in trainer.callbacks if type(cb) is EarlyStopping)
        assert (stop.patience, trainer.max_epochs) == (5, 50)
