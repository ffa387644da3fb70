"""``convae predict``'s parts: the DataModule's predict set (a split, or any audio file) and the
writer that gathers ``predict_step`` outputs into ``predictions.npz``."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch

from convae_lightning.data import TimitDataModule
from convae_lightning.predict import PredictionWriter


class StandIn(pl.LightningModule):
    """The ``predict_step`` contract of the models: a dict of per-row tensors, ``index`` passed
    through (autoencoders return ``codes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, _, index = batch
        return {"codes": x.flatten(1)[:, :4] * self.scale, "index": index}


@pytest.fixture
def datamodule(cli_cache):
    def make(**kwargs) -> TimitDataModule:
        dm = TimitDataModule(cache_dir=str(cli_cache), eval_per_class=3, progress=False, **kwargs)
        dm.prepare_data()
        return dm

    return make


def predict(dm: TimitDataModule, out: Path, model: pl.LightningModule | None = None) -> dict:
    writer = PredictionWriter(output_dir=str(out))
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[writer],
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.predict(model or StandIn(), dm, return_predictions=False)
    with np.load(out / "predictions.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.mark.parametrize("split", ["test", "val"])
def test_predictions_of_a_split(datamodule, tmp_path, split):
    dm = datamodule(predict_split=split, batch_size=50)
    arrays = predict(dm, tmp_path)
    labels = dm.datasets[split].labels.numpy()
    assert np.array_equal(arrays["index"], np.arange(len(labels)))  # every phone once, in order
    assert np.array_equal(arrays["labels"], labels)
    assert list(arrays["label_names"]) == [dm.class_names[c] for c in labels]
    assert list(arrays["class_names"]) == dm.class_names
    assert arrays["codes"].shape == (len(labels), 4)
    assert int(arrays["sample_rate"]) == dm.sample_rate
    if "utterance_ids" in arrays:  # caches that record where each phone comes from
        assert arrays["utterance_ids"].shape == (len(labels),)
        assert (arrays["spans"][:, 1] > arrays["spans"][:, 0]).all()


def test_predictions_of_an_audio_file(datamodule, tmp_path):
    """Any file, at any rate: resampled to the corpus rate, cut into one-patch segments."""
    rate, seconds = 8000, 0.9
    t = np.arange(int(rate * seconds)) / rate
    path = tmp_path / "tone.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    dm = datamodule(predict_audio=str(path))
    arrays = predict(dm, tmp_path / "out")
    samples = int(dm.sample_rate * seconds)
    rows = math.ceil(samples / dm.segment_length)
    assert arrays["codes"].shape == (rows, 4)
    assert (arrays["labels"] == -1).all() and set(arrays["label_names"]) == {""}
    assert set(arrays["utterance_ids"]) == {str(path)}
    assert arrays["spans"][0].tolist() == [0, dm.segment_length]
    assert arrays["spans"][-1, 1] == samples


def test_unreadable_audio_is_named(datamodule, tmp_path):
    from convae_lightning.data.timit import CorpusError

    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF not really")
    with pytest.raises(CorpusError, match=r"noise\.wav"):
        predict(datamodule(predict_audio=str(path)), tmp_path)


def test_reconstructions_need_an_autoencoder(datamodule, tmp_path):
    writer = PredictionWriter(reconstructions=True, output_dir=str(tmp_path))
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[writer],
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"prediction\.reconstructions: StandIn"):
        trainer.predict(StandIn(), datamodule(), return_predictions=False)
    assert not (tmp_path / "predictions.npz").exists()


def test_predict_split_must_be_a_split():
    with pytest.raises(ValueError, match="predict_split must be one of"):
        TimitDataModule(predict_split="dev")  # type: ignore[arg-type]
