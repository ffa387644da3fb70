"""The feature pass in worker processes: the same cache, byte for byte, as a serial build, and
bad audio found only while decoding handled as the serial build handles it."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import corrupt_flac_frames

from convae_lightning.data import TimitDataModule
from convae_lightning.data.extract import resolve_workers
from convae_lightning.data.features import FeatureConfig
from convae_lightning.data.prepare import CorpusOptions, build_cache
from convae_lightning.data.timit import CorpusError, find_utterances
from convae_lightning.synth.toy import write_toy_corpus


def cache_files(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.iterdir())}


def assert_same_cache(first: Path, second: Path) -> None:
    a, b = cache_files(first), cache_files(second)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"files that differ: {differ}"


@pytest.mark.parametrize("features", [FeatureConfig(), FeatureConfig(deltas=1)], ids=str)
def test_parallel_build_equals_the_serial_build(toy_corpus, tmp_path, features):
    # 8-phone chunks: dozens of them, taken by the workers in whatever order they free up.
    serial = build_cache(toy_corpus, tmp_path / "one", features, batch_size=8, workers=1)
    parallel = build_cache(toy_corpus, tmp_path / "three", features, batch_size=8, workers=3)
    assert serial.name == parallel.name  # the worker count is not part of the key
    assert_same_cache(serial, parallel)
    x = np.load(parallel / "train_x.npy")
    assert x.shape[0] > 8 * 3 and np.isfinite(x).all() and np.abs(x).sum(axis=(1, 2, 3)).min() > 0


def test_chunk_size_changes_no_byte(toy_corpus, tmp_path, toy_cache):
    """One chunk per split, or many: the same patches, labels, spans and training mean."""
    many = build_cache(toy_corpus, tmp_path / "many", batch_size=5, workers=2, progress=False)
    assert_same_cache(toy_cache, many)


@pytest.fixture
def flac_corpus(tmp_path) -> Path:
    return write_toy_corpus(
        tmp_path / "TIMIT", {"TRAIN": 3, "TEST": 2}, sentences=3, audio_format="flac"
    )


def test_undecodable_audio_found_by_a_worker_is_skipped_once(flac_corpus, tmp_path, caplog):
    """A file whose header reads but whose frames do not decode fails in a worker; with
    on_error="skip" the build indexes again without it and lists it once, as a serial build."""
    bad = [u for u in find_utterances(flac_corpus) if u.split == "train"][1].audio_path
    corrupt_flac_frames(bad)
    options = CorpusOptions(on_error="skip")
    with caplog.at_level(logging.WARNING):
        parallel = build_cache(
            flac_corpus, tmp_path / "p", options=options, batch_size=4, workers=2
        )
    assert caplog.text.count("skipped 1 bad file") == 1 and str(bad) in caplog.text
    serial = build_cache(flac_corpus, tmp_path / "s", options=options, batch_size=4, workers=1)
    assert_same_cache(serial, parallel)
    assert f"{bad}\t\tnot a readable audio file" in (parallel / "skipped.tsv").read_text()
    assert [p.name for p in (tmp_path / "p").iterdir()] == [parallel.name]  # no partial left


def test_undecodable_audio_found_by_a_worker_fails_the_build(flac_corpus, tmp_path):
    bad = [u for u in find_utterances(flac_corpus) if u.split == "test"][-1].audio_path
    corrupt_flac_frames(bad)
    with pytest.raises(CorpusError, match=re.escape(f"{bad}: not a readable audio file")):
        build_cache(flac_corpus, tmp_path / "cache", batch_size=4, workers=2, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing a later run would trust


def test_corpus_error_keeps_its_parts_across_processes():
    error = CorpusError("/corpus/TRAIN/DR1/X/SI1.PHN", "unknown phone label 'xx'", 4)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.path, again.line, again.reason) == (
        str(error),
        error.path,
        4,
        error.reason,
    )


def test_worker_count(monkeypatch):
    assert resolve_workers(3, chunks=2) == 2  # never more workers than chunks
    assert resolve_workers(1, chunks=50) == 1
    assert 1 <= resolve_workers(None, chunks=50) <= 8
    with pytest.raises(ValueError, match="workers must be a positive integer or None, got 0"):
        resolve_workers(0, chunks=5)
    with pytest.raises(ValueError, match="prepare_workers must be a positive integer, got 0"):
        TimitDataModule(prepare_workers=0)


def test_datamodule_builds_the_same_cache_with_any_worker_count(toy_corpus, tmp_path, toy_cache):
    datamodule = TimitDataModule(
        root=str(toy_corpus), cache_dir=str(tmp_path / "cache"), prepare_workers=2, progress=False
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert_same_cache(toy_cache, datamodule.cache_path)
