"""Figures a person can read: spectrograms of real patches, learning curves, Optuna plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import optuna
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from model_helpers import embedded_datamodule, tiny_trainer

from convae_lightning.callbacks.reconstruction import ReconstructionLogger, reconstruction_rows
from convae_lightning.data import TimitDataModule
from convae_lightning.data.features import FeatureConfig
from convae_lightning.models import StackedAutoencoder
from convae_lightning.report.figures import (
    learning_curves_figure,
    save_png,
    spectrogram_figure,
    study_figures,
)

SMALL = {"conv_channels": (4, 4, 8, 16)}


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory) -> TimitDataModule:
    """The embedded corpus, tiny epochs."""
    return embedded_datamodule(tmp_path_factory.mktemp("embedded_cache"))


@pytest.fixture(scope="module")
def patches(datamodule) -> dict:
    """Real validation patches of the embedded corpus and a 2-unit autoencoder's output."""
    dm = datamodule
    x, labels = dm.example_batch(3, seed=0)
    torch.manual_seed(0)
    model = StackedAutoencoder(input_shape=dm.input_shape, num_units=2, initial_units=2, **SMALL)
    model.eval()
    rows = {
        "input": x,
        "reconstruction": model.reconstruct(x),
        "switch only": model.reconstruct(x, zero_code=True),
    }
    return {"rows": rows, "labels": labels, "features": dm.features, "mean": dm.mean_spectrogram}


def images_of(figure) -> list:
    """Spectrogram panels (axes holding an image), row by row; colour bars left out."""
    return [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_spectrograms_have_axes_in_ms_and_hz_colour_bars_and_errors(patches, tmp_path):
    rows, labels, features = patches["rows"], patches["labels"], patches["features"]
    titles = [f"/{label}/" for label in labels]
    figure = spectrogram_figure(
        rows, titles, "epoch 3", features=features, mean=patches["mean"], units=2
    )
    panels = images_of(figure)
    assert len(panels) == 3 * 6  # 3 examples x (3 kinds x real part, log magnitude)
    colour_bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 6  # per example: real part, dB
    assert sorted({cb.get_ylabel() for cb in colour_bars}) == ["dB", "real part"]
    duration_ms = 1000 * features.segment_length(rows["input"].shape[-1]) / features.sample_rate
    assert panels[0].images[0].get_extent() == pytest.approx([0, duration_ms, 0, 8000])
    assert panels[-1].get_xlabel() == "time (ms)"
    assert panels[0].get_ylabel() == panels[3].get_ylabel() == "frequency (Hz)"
    assert figure.get_suptitle() == "epoch 3 · 2 units · error = Euclidean distance to the input"
    for example in range(3):
        first = panels[6 * example]
        assert first.get_title() == f"/{labels[example]}/ input"
        error = torch.linalg.norm(rows["reconstruction"][example] - rows["input"][example])
        assert panels[6 * example + 1].get_title() == f"reconstruction, error {float(error):.3g}"
        assert panels[6 * example + 4].get_title() == "reconstruction, log magnitude"
    # The log-magnitude view is the spectrum with the training mean added back, in dB.
    spectrum = rows["input"][0, 0].double().numpy() + np.asarray(patches["mean"])[0]
    expected = 20 * np.log10(np.abs(spectrum) + 1e-8)
    assert np.asarray(panels[3].images[0].get_array()) == pytest.approx(expected)


def test_spectrogram_png_is_not_mostly_white(patches, tmp_path):
    figure = spectrogram_figure(
        patches["rows"], patches["labels"], features=patches["features"], mean=patches["mean"]
    )
    pixels = matplotlib.image.imread(save_png(figure, tmp_path / "spec.png"))[..., :3]
    near_white = (pixels > 0.95).all(axis=2).mean()
    assert near_white < 0.5, f"{near_white:.0%} of the figure is white"


@pytest.mark.parametrize(
    ("representation", "channels", "bins", "y_label", "panels"),
    [
        ("magnitude_phase", 2, 201, "frequency (Hz)", 4),
        ("log_mel", 1, 40, "mel band", 4),
        ("mfcc", 1, 13, "coefficient", 2),
    ],
)
def test_other_representations(representation, channels, bins, y_label, panels):
    features = FeatureConfig(representation=representation)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, channels, bins, 16))
    figure = spectrogram_figure({"input": x, "reconstruction": x * 0.5}, features=features)
    axes = images_of(figure)
    assert len(axes) == 2 * panels
    assert axes[0].get_ylabel() == y_label
    assert axes[1].get_title() == f"reconstruction, error {np.linalg.norm(x[0] * 0.5):.3g}"


def test_learning_curves_share_axes_across_conditions(tmp_path):
    curves = {
        "unpool=switch": [
            {"train/euclid": [(0, 3.0), (1, 2.0)], "val/euclid_balanced": [(0, 3.5)]},
            {"train/euclid": [(0, 3.2), (1, 2.1)], "val/euclid_balanced": []},
        ],
        "unpool=blind": [{"train/euclid": [(0, 5.0), (1, 4.5)], "val/euclid_balanced": [(0, 5.5)]}],
    }
    figure = learning_curves_figure(curves, ["train/euclid", "val/euclid_balanced"])
    train, val = figure.axes
    assert train.get_shared_y_axes().joined(train, val)
    assert [ln.get_color() for ln in train.lines] == ["C0", "C0", "C1"]  # one colour a condition
    assert (train.get_title(), val.get_title()) == ("train/euclid", "val/euclid_balanced")
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["unpool=switch", "unpool=blind"]
    assert Path(save_png(figure, tmp_path / "curves.png")).stat().st_size > 5000
    assert train.get_yscale() == "linear"


def test_a_diverging_run_gives_a_log_axis_and_long_legends_stay_in_the_png(tmp_path):
    label = "unpool=blind, decoder_relu=false, config=regular"  # as a sweep's conditions read
    curves = {f"{label} #{i}": [{"train/euclid": [(0, 20.0), (1, 15.0)]}] for i in range(5)}
    curves[label] = [{"train/euclid": [(0, 400.0), (1, 1046.0)]}]
    figure = learning_curves_figure(curves, ["train/euclid"])
    assert figure.axes[0].get_yscale() == "log"
    path = save_png(figure, tmp_path / "curves.png")
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent()
    width = figure.get_figwidth() * figure.dpi
    assert legend.x0 < 0 or legend.x1 > width  # wider than the figure: only a tight PNG holds it
    png_width = matplotlib.image.imread(path).shape[1]  # saved at 90 dpi
    assert png_width > 0.95 * legend.width * 90 / figure.dpi > 1.5 * width * 90 / figure.dpi


def test_study_figures_or_the_reason_they_cannot_be_drawn():
    study = optuna.create_study()
    assert set(study_figures(study).values()) == {"no complete trials yet"}
    for unpool, value in [("switch", 1.0), ("switch", 1.2), ("blind", 3.0), ("blind", 3.1)]:
        study.enqueue_trial({"unpool": unpool})
        trial = study.ask()
        trial.suggest_categorical("unpool", ["switch", "blind"])
        study.tell(trial, value)
    figures = study_figures(study, "val/euclid_balanced")
    assert sorted(figures) == ["optimization_history", "parallel_coordinate", "param_importances"]
    assert all(not isinstance(f, str) for f in figures.values())
    history = figures["optimization_history"].axes[0]
    assert history.get_ylabel() == "val/euclid_balanced"


def test_reconstruction_logger_draws_this_figure(datamodule, tmp_path):
    """The logger's image is :func:`spectrogram_figure` of its rows, with the data's time and
    frequency axes, the training mean for the log view and the model's depth: drawn again here
    from the fitted model (whose weights the logging epoch ended with), it is the same PNG."""
    torch.manual_seed(0)
    model = StackedAutoencoder(input_shape=datamodule.input_shape, num_units=2, **SMALL)
    csv = CSVLogger(tmp_path, name="run")
    logger = ReconstructionLogger(every_n_epochs=1, num_examples=2, audio=False)
    tiny_trainer(tmp_path, callbacks=[logger], logger=csv).fit(model, datamodule)
    logged = Path(csv.log_dir) / "reconstructions" / "epoch=0.png"
    x, labels = datamodule.example_batch(2, seed=0)
    rows = reconstruction_rows(model.eval(), x, zero_code=True)
    assert list(rows) == ["input", "reconstruction", "code zeroed"]
    figure = spectrogram_figure(
        rows,
        [f"/{label}/" for label in labels],
        "epoch 0",
        features=datamodule.features,
        mean=datamodule.mean_spectrogram,
        units=1,
    )
    assert logged.read_bytes() == save_png(figure, tmp_path / "again.png").read_bytes()
    pixels = matplotlib.image.imread(logged)[..., :3]
    assert pixels.shape[1] > 2 * pixels.shape[0]  # two examples: 6 panels wide, 2 high
    assert (pixels > 0.95).all(axis=2).mean() < 0.5
