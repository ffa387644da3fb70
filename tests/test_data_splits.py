"""Speaker-disjoint splits: thesis (val from TRAIN), standard (50 dev / 24 core-test speakers)."""

from __future__ import annotations

import json
import re

import pytest

from convae_lightning.data.prepare import CorpusOptions, build_cache
from convae_lightning.data.splits import CORE_TEST_SPEAKERS, DEV_SPEAKERS, assign_splits
from convae_lightning.data.timit import find_utterances
from convae_lightning.synth.toy import write_toy_corpus


def speakers_of(utterances):
    return {u.speaker for u in utterances}


def test_official_speaker_lists():
    assert len(CORE_TEST_SPEAKERS) == 24 and len(DEV_SPEAKERS) == 50
    assert not CORE_TEST_SPEAKERS & DEV_SPEAKERS
    assert {"MDAB0", "FELC0", "MTAS1"} <= CORE_TEST_SPEAKERS
    assert {"FAKS0", "MRWS1", "FDAC1"} <= DEV_SPEAKERS


@pytest.fixture(scope="module")
def eight_speaker_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("splits") / "TIMIT"
    return write_toy_corpus(root, {"TRAIN": 10, "TEST": 3}, sentences=1, phones_per_sentence=3)


@pytest.mark.parametrize("val_fraction", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_thesis_split(eight_speaker_corpus, val_fraction, seed):
    utterances = find_utterances(eight_speaker_corpus)
    splits = assign_splits(utterances, "thesis", val_fraction, seed)
    train, val, test = (speakers_of(splits[s]) for s in ("train", "val", "test"))
    all_train = speakers_of(u for u in utterances if u.split == "train")
    assert train | val == all_train and not train & val
    assert test == speakers_of(u for u in utterances if u.split == "test")
    assert not test & (train | val)
    assert val and all(u.split == "train" for u in splits["val"])
    # Every utterance lands in exactly one split.
    assert sorted(u.utterance_id for s in splits.values() for u in s) == sorted(
        u.utterance_id for u in utterances
    )
    # Reproducible for the same seed.
    again = assign_splits(utterances, "thesis", val_fraction, seed)
    assert speakers_of(again["val"]) == val


def test_thesis_split_without_validation(eight_speaker_corpus):
    splits = assign_splits(find_utterances(eight_speaker_corpus), "thesis", 0.0)
    assert splits["val"] == [] and len(speakers_of(splits["train"])) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "random"}, "split_scheme must be 'thesis' or 'standard'"),
        ({"val_fraction": 1.0}, "val_fraction must be in [0, 1)"),
        ({"val_fraction": -0.1}, "val_fraction must be in [0, 1)"),
    ],
)
def test_bad_split_arguments(eight_speaker_corpus, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        assign_splits(find_utterances(eight_speaker_corpus), **kwargs)


@pytest.fixture
def standard_corpus(tmp_path, make_utterance):
    """TRAIN speakers plus, in TEST, a core-test speaker, a dev speaker and an unlisted one."""
    root = tmp_path / "TIMIT"
    lengths, labels = [700, 1200, 900, 600], ["h#", "iy", "s", "h#"]
    for spk in ("TRAIN/DR1/FCJF0", "TRAIN/DR2/MDAC0", "TEST/DR1/MDAB0", "TEST/DR2/FELC0"):
        make_utterance(root, f"{spk}/SX10", lengths, labels)
    for spk in ("TEST/DR1/FAKS0", "TEST/DR3/MRWS1", "TEST/DR4/MZZZ9"):
        make_utterance(root, f"{spk}/SI20", lengths, labels)
    return root


def test_standard_split(standard_corpus, tmp_path):
    splits = assign_splits(find_utterances(standard_corpus), "standard")
    assert speakers_of(splits["train"]) == {"FCJF0", "MDAC0"}
    assert speakers_of(splits["val"]) == {"FAKS0", "MRWS1"}
    assert speakers_of(splits["test"]) == {"MDAB0", "FELC0"}
    # End to end: the cache records the same speaker sets, the unlisted TEST speaker unused.
    cache = build_cache(
        standard_corpus,
        tmp_path / "cache",
        options=CorpusOptions(split_scheme="standard"),
        progress=False,
    )
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["split_speakers"] == {
        "train": ["FCJF0", "MDAC0"],
        "val": ["FAKS0", "MRWS1"],
        "test": ["FELC0", "MDAB0"],
    }
    assert "MZZZ9" not in meta["speakers"]


def test_standard_split_needs_timit_speakers(eight_speaker_corpus):
    with pytest.raises(ValueError, match=r"needs TIMIT's 50 development and 24 core-test speakers"):
        assign_splits(find_utterances(eight_speaker_corpus), "standard")


def test_speakers_never_cross_splits_in_the_cache(toy_cache):
    meta = json.loads((toy_cache / "meta.json").read_text())
    sets = [set(meta["split_speakers"][s]) for s in ("train", "val", "test")]
    assert all(sets)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set(meta["speakers"]) == sets[0] | sets[1] | sets[2]
