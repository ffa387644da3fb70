"""TimitDataModule: cache building, memory-mapping, loaders and the natural evaluation view."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from convae_lightning.data.datamodule import TimitDataModule
from convae_lightning.data.phones import PHONES_48


@pytest.fixture
def datamodule(toy_corpus, tmp_path):
    dm = TimitDataModule(
        root=str(toy_corpus),
        cache_dir=str(tmp_path / "cache"),
        train_per_class=6,
        eval_per_class=3,
        batch_size=16,
        progress=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_prepare_data_builds_the_cache_and_setup_memory_maps(toy_corpus, tmp_path):
    dm = TimitDataModule(root=str(toy_corpus), cache_dir=str(tmp_path / "cache"), progress=False)
    assert not (tmp_path / "cache").exists()  # constructing builds nothing
    dm.prepare_data()
    built = [p for p in (tmp_path / "cache").iterdir()]
    assert len(built) == 1 and (built[0] / "meta.json").is_file()
    mtime = (built[0] / "train_x.npy").stat().st_mtime_ns
    dm.setup("fit")
    assert dm.cache_path == built[0]
    assert (built[0] / "train_x.npy").stat().st_mtime_ns == mtime  # setup reused it
    for split in ("train", "val", "test"):
        features = dm.datasets[split].features
        assert isinstance(features, np.memmap), split  # features stay on disk
        assert Path(features.filename) == built[0] / f"{split}_x.npy"
        assert not features.flags.writeable
    meta = json.loads((built[0] / "meta.json").read_text())
    assert dm.input_shape == tuple(meta["input_shape"]) == (1, 201, meta["num_frames"])
    assert dm.mean_spectrogram.shape == dm.input_shape
    dm.setup("test")  # idempotent
    assert dm.cache_path == built[0]
    # input_shape before setup finds the same cache (T follows from the corpus: 19 here).
    fresh = TimitDataModule(root=str(toy_corpus), cache_dir=str(tmp_path / "cache"))
    assert fresh.input_shape == dm.input_shape
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [built[0].name]


def test_default_cache_dir_is_convae_cache_dir(toy_corpus, isolated_cache_dir):
    dm = TimitDataModule(root=str(toy_corpus), progress=False)
    assert dm.cache_dir == isolated_cache_dir == Path(os.environ["CONVAE_CACHE_DIR"])
    dm.prepare_data()
    assert len(list(isolated_cache_dir.glob("*/meta.json"))) == 1


def test_classes(datamodule):
    assert datamodule.num_classes == 48
    assert datamodule.class_names == list(PHONES_48)
    assert datamodule.class_names[datamodule.datasets["train"].labels[0]] in PHONES_48
    assert datamodule.class_names.index("sil") == PHONES_48.index("sil")


def test_train_loader_batches(datamodule):
    loader = datamodule.train_dataloader()
    present = set(datamodule.datasets["train"].labels.tolist())
    labels = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.dim() == 4 and tuple(x.shape[1:]) == datamodule.input_shape
        assert x.shape[0] == y.shape[0] <= 16
        labels += y.tolist()
    # Stratified: every present class exactly train_per_class times.
    assert Counter(labels) == dict.fromkeys(present, 6)
    # The batch content is the memmapped rows for the drawn indices, less the training mean.
    sampler = loader.sampler
    first = list(sampler)[:16]
    x, y = next(iter(loader))
    dataset = datamodule.datasets["train"]
    expected = np.asarray(dataset.features)[first] - datamodule.mean_spectrogram
    np.testing.assert_array_equal(x.numpy(), expected)
    assert y.tolist() == dataset.labels[first].tolist()


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_loaders_are_balanced_then_natural(datamodule, split):
    loaders = getattr(datamodule, f"{split}_dataloader")()
    assert isinstance(loaders, list) and len(loaders) == 2
    balanced, natural = loaders
    dataset = datamodule.datasets[split]
    # Natural: every example exactly once, in order.
    seen_x, seen_y = [], []
    for x, y in natural:
        seen_x.append(x)
        seen_y.append(y)
    assert torch.cat(seen_y).tolist() == dataset.labels.tolist()
    expected = np.asarray(dataset.features) - datamodule.mean_spectrogram
    np.testing.assert_array_equal(torch.cat(seen_x).numpy(), expected)
    # Balanced: eval_per_class of every class present.
    counts = Counter(torch.cat([y for _, y in balanced]).tolist())
    assert counts == dict.fromkeys(set(dataset.labels.tolist()), 3)


@pytest.mark.parametrize("view", ["natural", "balanced"])
def test_single_eval_view(toy_corpus, tmp_path, view):
    dm = TimitDataModule(
        root=str(toy_corpus),
        cache_dir=str(tmp_path / "cache"),
        eval_distribution=view,
        eval_per_class=2,
        progress=False,
    )
    dm.setup()
    loaders = dm.val_dataloader()
    assert len(loaders) == 1
    total = sum(len(y) for _, y in loaders[0])
    n_classes = len(set(dm.datasets["val"].labels.tolist()))
    assert total == (len(dm.datasets["val"]) if view == "natural" else 2 * n_classes)


@pytest.mark.parametrize(
    ("representation", "deltas", "shape"),
    [("magnitude_phase", 0, (2, 201)), ("real_imag", 1, (4, 201)), ("mfcc", 2, (3, 13))],
)
def test_representation_reaches_the_batches(toy_corpus, tmp_path, representation, deltas, shape):
    dm = TimitDataModule(
        root=str(toy_corpus),
        cache_dir=str(tmp_path / "cache"),
        representation=representation,
        deltas=deltas,
        num_frames=16,
        train_per_class=2,
        progress=False,
    )
    assert dm.input_shape == (*shape, 16)
    dm.prepare_data()
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == dm.input_shape == (*shape, 16)


def test_no_validation_speakers_needs_another_validation_split(toy_corpus, tmp_path):
    """``val_fraction: 0`` holds out no speaker: validate on TEST (the thesis protocol)."""
    kwargs = dict(root=str(toy_corpus), cache_dir=str(tmp_path / "cache"), progress=False)
    with pytest.raises(ValueError, match=r"data\.val_split test"):
        TimitDataModule(val_fraction=0.0, **kwargs)
    dm = TimitDataModule(val_fraction=0.0, val_split="test", **kwargs)
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 0
    assert len(dm.val_dataloader()[0].dataset) == len(dm.datasets["test"])


def test_empty_val_split_is_a_clear_error(tmp_path, make_utterance):
    """One TRAIN speaker cannot give validation speakers: fitting says so in one message."""
    root = tmp_path / "TIMIT"
    for utterance in ("TRAIN/DR1/FCJF0/SI1027", "TEST/DR1/MDAB0/SI1027"):
        make_utterance(root, utterance, [800, 1200, 900])
    dm = TimitDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), progress=False)
    dm.setup("test")
    with pytest.raises(ValueError, match=r"the val split .* holds no phones: nothing to fit on"):
        dm.setup("fit")


@pytest.mark.parametrize("loader", ["train_dataloader", "val_dataloader", "test_dataloader"])
def test_loaders_need_setup(toy_corpus, tmp_path, loader):
    dm = TimitDataModule(root=str(toy_corpus), cache_dir=str(tmp_path / "cache"), progress=False)
    with pytest.raises(RuntimeError, match=r"call setup\(\) before requesting dataloaders"):
        getattr(dm, loader)()


def test_missing_root(tmp_path):
    missing = tmp_path / "no" / "TIMIT"
    dm = TimitDataModule(root=str(missing), cache_dir=str(tmp_path / "cache"), progress=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        dm.prepare_data()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_per_class": 0}, "train_per_class must be a positive integer"),
        ({"eval_per_class": -1}, "eval_per_class must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"eval_distribution": "uniform"}, "eval_distribution must be"),
        ({"representation": "cqt"}, "representation must be one of"),
        ({"discard_longest": 1.0}, r"discard_longest must be in \[0, 1\)"),
        ({"on_error": "ignore"}, "on_error must be 'raise' or 'skip'"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimitDataModule(root=str(tmp_path), **kwargs)


def test_loaders_work_as_plain_dataloaders(toy_corpus, tmp_path):
    # Features kept on disk: plain DataLoaders (held in memory they are TensorBatches with the
    # same batches, tests/test_data_memory.py).
    dm = TimitDataModule(
        root=str(toy_corpus),
        cache_dir=str(tmp_path / "cache"),
        batch_size=16,
        hold_features="disk",
        progress=False,
    )
    dm.setup("fit")
    loader = dm.val_dataloader()[1]
    assert isinstance(loader, DataLoader) and loader.batch_size == 16
    assert len(loader) == -(-len(dm.datasets["val"]) // 16)


def test_window_position_reaches_the_patches(datamodule, toy_corpus, tmp_path):
    """``data.window_position center`` is another cache with other patches of the same phones."""
    centred = TimitDataModule(
        root=str(toy_corpus),
        cache_dir=str(tmp_path / "cache"),
        window_position="center",
        train_per_class=6,
        eval_per_class=3,
        progress=False,
    )
    centred.prepare_data()
    centred.setup("fit")
    assert centred.features.window_position == "center"
    start, label = datamodule.example(0)
    centre, same_label = centred.example(0)
    assert label == same_label and start.shape == centre.shape
    assert not torch.allclose(start, centre)


def test_example_returns_one_patch_and_names_a_bad_index(datamodule):
    x, label = datamodule.example(1)
    dataset = datamodule.datasets["val"]
    torch.testing.assert_close(x[0], dataset[1][0])
    assert label == datamodule.class_names[int(dataset[1][1])]
    with pytest.raises(IndexError, match=rf"the 'val' split has {len(dataset)} examples; index"):
        datamodule.example(len(dataset))
