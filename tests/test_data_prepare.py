"""From corpus to cache: discard/padding, mean subtraction, resampling, cache keys, atomicity."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import corrupt_flac_frames

from convae_lightning.data.features import FeatureConfig, PatchExtractor, patch_to_audio
from convae_lightning.data.index import index_corpus
from convae_lightning.data.phones import CLASS_INDEX_48, MAP_61_TO_48, PHONES_61
from convae_lightning.data.prepare import (
    STALE_PARTIAL_SECONDS,
    CorpusOptions,
    build_cache,
    corpus_key,
    remove_dead_builds,
)
from convae_lightning.data.stats import corpus_stats
from convae_lightning.data.timit import CorpusError, find_utterances
from convae_lightning.synth.toy import write_toy_corpus

SPLITS = ("train", "val", "test")


def load(cache: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's patches as training sees them: the cache keeps them as computed and the
    training mean is subtracted on load (cache format 3)."""
    x = np.load(cache / f"{split}_x.npy") - np.load(cache / "mean.npy")
    return x, np.load(cache / f"{split}_y.npy")


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of a folder and every file in it."""
    entries = [folder, *sorted(folder.rglob("*"))]
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in entries}


def direct_raw_patches(cache: Path, root: Path, features: FeatureConfig) -> dict[str, tuple]:
    """Recompute every split's un-normalised patches from the files, independently of prepare.py.

    Reads .PHN files by hand and audio with soundfile, keeps the phones the cache says fit
    (``max_phone_length``), zero-pads each on both sides to ``segment_length`` and runs the
    PatchExtractor; rows follow the corpus order (dialect, speaker, sentence). Per split:
    ``(patches, labels, padded segments, utterance ids, (start, end) spans)``.
    """
    meta = json.loads((cache / "meta.json").read_text())
    extractor = PatchExtractor(features).to(torch.float64)
    length, limit = meta["segment_length"], meta["max_phone_length"]
    out = {}
    for split in SPLITS:
        speakers = set(meta["split_speakers"][split])
        segments, labels, ids, spans = [], [], [], []
        for u in find_utterances(root):
            if u.speaker not in speakers:
                continue
            audio, rate = sf.read(str(u.audio_path), dtype="float32")
            assert rate == features.sample_rate
            for line in u.phn_path.read_text().split("\n"):
                if not line.strip():
                    continue
                start, end, label = line.split()
                start, end = int(start), int(end)
                if MAP_61_TO_48[label] is None or end - start > limit:
                    continue
                offset = (length - (end - start)) // 2
                padded = np.zeros(length)
                padded[offset : offset + end - start] = audio[start:end]
                segments.append(padded)
                labels.append(CLASS_INDEX_48[MAP_61_TO_48[label]])
                ids.append(u.utterance_id)
                spans.append((start, end))
        raw = extractor(torch.from_numpy(np.stack(segments))).numpy()
        out[split] = (raw, np.array(labels), np.stack(segments), ids, np.array(spans))
    return out


# --------------------------------------------------------------------------- discard and padding

# Train phone lengths (samples), all distinct; the longest (6000) is the top 5% of 20 phones.
TRAIN_A = [400, 700, 900, 1100, 1300, 1500, 1700, 1900, 2100, 6000]
TRAIN_B = [450, 650, 850, 1050, 1250, 1450, 1650, 1850, 2000, 2400]
TEST_C = [500, 2300, 2500, 7000]


@pytest.fixture
def length_corpus(tmp_path, make_utterance):
    root = tmp_path / "TIMIT"
    for spk, lengths in (("TRAIN/DR1/FCJF0", TRAIN_A), ("TRAIN/DR2/MDAC0", TRAIN_B)):
        make_utterance(root, f"{spk}/SX1", lengths, ["aa", "iy", "s", "sh"] * 2 + ["n", "m"])
    make_utterance(root, "TEST/DR1/MDAB0/SX2", TEST_C, ["aa", "iy", "s", "sh"])
    return root


@pytest.mark.parametrize(
    ("discard", "num_frames", "max_length", "frames", "discarded"),
    [
        (0.05, None, 2400, 15, {"train": 1, "val": 0, "test": 2}),
        (0.10, None, 2100, 14, {"train": 2, "val": 0, "test": 3}),
        (0.0, None, 6000, 39, {"train": 0, "val": 0, "test": 1}),
        (0.05, 16, 2400, 16, {"train": 1, "val": 0, "test": 2}),
        (0.05, 10, 1640, 10, {"train": 8, "val": 0, "test": 3}),
    ],
)
def test_discard_longest_and_pad(
    length_corpus, tmp_path, discard, num_frames, max_length, frames, discarded
):
    options = CorpusOptions(val_fraction=0.0, discard_longest=discard, num_frames=num_frames)
    cache = build_cache(length_corpus, tmp_path / "cache", options=options, progress=False)
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["max_phone_length"] == max_length
    assert meta["num_frames"] == frames
    assert meta["segment_length"] == 272 + 152 * (frames - 1)
    assert meta["input_shape"] == [1, 201, frames]
    assert meta["discarded"] == discarded
    assert meta["kept"] == {
        "train": 20 - discarded["train"],
        "val": 0,
        "test": 4 - discarded["test"],
    }
    for split in SPLITS:
        x, y = load(cache, split)
        assert x.shape == (meta["kept"][split], 1, 201, frames) and x.dtype == np.float32
        assert y.shape == (meta["kept"][split],) and y.dtype == np.int64
    stats = corpus_stats(length_corpus, options)
    assert {s: stats["splits"][s]["discarded"] for s in SPLITS} == discarded
    assert stats["padding"]["num_frames"] == frames


def test_thesis_patch_size_on_2552_sample_segments(length_corpus, tmp_path):
    options = CorpusOptions(val_fraction=0.0, num_frames=16)
    cache = build_cache(length_corpus, tmp_path / "cache", options=options, progress=False)
    meta = json.loads((cache / "meta.json").read_text())
    assert (meta["segment_length"], meta["input_shape"]) == (2552, [1, 201, 16])


def test_phones_are_zero_padded_on_both_sides(length_corpus, tmp_path):
    """The real_imag patch inverts exactly: the padded segment has the phone centred in zeros."""
    features = FeatureConfig(representation="real_imag")
    options = CorpusOptions(val_fraction=0.0, num_frames=16)
    cache = build_cache(length_corpus, tmp_path / "cache", features, options, progress=False)
    x, _ = load(cache, "test")
    mean = np.load(cache / "mean.npy")
    audio = patch_to_audio(x[0], mean, features).numpy()  # TEST_C[0]: 500 samples in 2552
    offset = (2552 - 500) // 2
    assert np.abs(audio[: offset - 5]).max() < 1e-3 and np.abs(audio[offset + 505 :]).max() < 1e-3
    original, _ = sf.read(str(find_utterances(length_corpus)[0].audio_path), dtype="float32")
    np.testing.assert_allclose(audio[offset : offset + 500], original[:500], atol=1e-3)


# --------------------------------------------------------------------------- mean subtraction


def test_training_mean_is_subtracted_from_every_split(toy_corpus, toy_cache):
    raw = direct_raw_patches(toy_cache, toy_corpus, FeatureConfig())
    mean = np.load(toy_cache / "mean.npy")
    assert mean.shape == (1, 201, json.loads((toy_cache / "meta.json").read_text())["num_frames"])
    np.testing.assert_allclose(mean, raw["train"][0].mean(axis=0), rtol=1e-4, atol=1e-5)
    train_x, _ = load(toy_cache, "train")
    # Training features average ~0 element-wise.
    assert np.abs(train_x.astype(np.float64).mean(axis=0)).max() < 1e-5 * np.abs(mean).max() + 1e-6
    for split in SPLITS:
        x, y = load(toy_cache, split)
        expected, labels, *_ = raw[split]
        assert len(x) > 0
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_allclose(x, expected - mean, rtol=1e-4, atol=1e-4)
        # The files themselves hold the patches as computed: no pass rewrites them.
        stored = np.load(toy_cache / f"{split}_x.npy", mmap_mode="r")
        np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4)


def test_every_patch_records_its_utterance_and_span(toy_corpus, toy_cache):
    """``{split}_utt.npy`` and ``{split}_span.npy`` say where each patch came from (predict)."""
    raw = direct_raw_patches(toy_cache, toy_corpus, FeatureConfig())
    utterances = json.loads((toy_cache / "meta.json").read_text())["utterances"]
    assert len(set(utterances)) == len(utterances)
    assert set(utterances) == {u.utterance_id for u in find_utterances(toy_corpus)}
    assert utterances[0].startswith("train/DR")  # ids as train/DR1/FCJF0/SI1027
    for split in SPLITS:
        utt, span = (
            np.load(toy_cache / f"{split}_utt.npy"),
            np.load(toy_cache / f"{split}_span.npy"),
        )
        _, _, _, ids, spans = raw[split]
        assert utt.dtype == np.int32 and span.dtype == np.int64 and span.shape == (len(ids), 2)
        assert [utterances[i] for i in utt] == ids
        np.testing.assert_array_equal(span, spans)


@pytest.mark.parametrize("representation", ["real_imag", "magnitude_phase", "real"])
def test_cached_patches_invert_to_the_padded_segment(toy_corpus, tmp_path, representation):
    features = FeatureConfig(representation=representation)
    cache = build_cache(toy_corpus, tmp_path / "cache", features, progress=False)
    raw = direct_raw_patches(cache, toy_corpus, features)
    x, _ = load(cache, "val")
    mean = np.load(cache / "mean.npy")
    padded = raw["val"][2]
    correlations = [
        np.corrcoef(patch_to_audio(x[i], mean, features).numpy(), padded[i])[0, 1] for i in range(8)
    ]
    print(f"{representation}: inversion correlation {np.round(correlations, 4).tolist()}")
    # The real part too: its least-squares inverse loses only the last frame's folded half,
    # which the padding leaves silent (docs/data.md).
    assert min(correlations) > 0.99


# --------------------------------------------------------------------------- resampling

PHONE_MS = [50, 75, 60, 90, 40]
PHONE_LABELS = ["h#", "aa", "iy", "aa", "h#"]


def rate_corpus(root: Path, rate: int, make_utterance) -> Path:
    lengths = [ms * rate // 1000 for ms in PHONE_MS]
    for spk in ("TRAIN/DR1/FCJF0", "TRAIN/DR1/MDAC0", "TEST/DR1/MDAB0"):
        for sentence in ("SX1", "SX2"):
            make_utterance(root, f"{spk}/{sentence}", lengths, PHONE_LABELS, sample_rate=rate)
    return root


@pytest.mark.parametrize("rate", [8000, 32000])
def test_other_sample_rates_are_resampled(tmp_path, make_utterance, rate):
    native = rate_corpus(tmp_path / "native" / "TIMIT", 16000, make_utterance)
    other = rate_corpus(tmp_path / f"r{rate}" / "TIMIT", rate, make_utterance)
    options = CorpusOptions(num_frames=16, val_fraction=0.0)
    index16, index_other = index_corpus(native, options), index_corpus(other, options)
    assert index_other.corpus_sample_rate == rate and index16.corpus_sample_rate == 16000
    for a, b in zip(index16.splits["train"], index_other.splits["train"], strict=True):
        assert b.sample_rate == rate
        np.testing.assert_array_equal(a.starts, b.starts)  # boundaries scaled to 16 kHz samples
        np.testing.assert_array_equal(a.ends, b.ends)
    features = FeatureConfig(representation="magnitude")
    cache16 = build_cache(native, tmp_path / "c16", features, options, progress=False)
    cache_other = build_cache(other, tmp_path / "cother", features, options, progress=False)
    meta16, meta = (json.loads((c / "meta.json").read_text()) for c in (cache16, cache_other))
    assert meta["corpus_sample_rate"] == rate
    for key in ("input_shape", "segment_length", "kept", "discarded", "max_phone_length"):
        assert meta[key] == meta16[key], key
    for split in ("train", "test"):
        x16 = load(cache16, split)[0] + np.load(cache16 / "mean.npy")
        x = load(cache_other, split)[0] + np.load(cache_other / "mean.npy")
        assert x.shape == x16.shape
        # Same tones: the spectra agree (8 kHz audio simply has nothing above 4 kHz).
        bins = slice(0, 90)  # 0..3.5 kHz
        assert np.corrcoef(x[:, :, bins].ravel(), x16[:, :, bins].ravel())[0, 1] > 0.95


# --------------------------------------------------------------------------- cache keys and reuse


def test_second_run_reuses_the_cache_untouched(toy_corpus, tmp_path):
    first = build_cache(toy_corpus, tmp_path / "cache", progress=False)
    before = snapshot(first)
    assert {p.name for p in first.iterdir()} == {
        "meta.json",
        "mean.npy",
        "skipped.tsv",
        *(f"{s}_{k}.npy" for s in SPLITS for k in ("x", "y", "speaker", "utt", "span")),
    }
    second = build_cache(toy_corpus, tmp_path / "cache", progress=False)
    assert second == first
    assert snapshot(second) == before
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


SETTING_CHANGES = [
    ("features", {"representation": "magnitude"}),
    ("features", {"deltas": 1}),
    ("features", {"sample_rate": 8000, "n_fft": 200}),
    ("features", {"n_fft": 512}),
    ("features", {"window_ms": 20.0}),
    ("features", {"overlap_ms": 5.0}),
    ("features", {"n_mels": 64}),
    ("features", {"window_position": "center"}),
    ("options", {"include_sa": True}),
    ("options", {"split_scheme": "standard"}),
    ("options", {"val_fraction": 0.2}),
    ("options", {"split_seed": 1}),
    ("options", {"discard_longest": 0.1}),
    ("options", {"num_frames": 16}),
    ("options", {"on_error": "skip"}),
]


def test_every_setting_changes_the_key(toy_corpus):
    utterances = find_utterances(toy_corpus)
    base = corpus_key(utterances, toy_corpus, FeatureConfig(), CorpusOptions())
    keys = {base}
    for kind, change in SETTING_CHANGES:
        features = replace(FeatureConfig(), **change) if kind == "features" else FeatureConfig()
        options = replace(CorpusOptions(), **change) if kind == "options" else CorpusOptions()
        keys.add(corpus_key(utterances, toy_corpus, features, options))
    assert len(keys) == len(SETTING_CHANGES) + 1
    # Same settings, same files: same key (also when the corpus is moved elsewhere).
    assert corpus_key(utterances, toy_corpus, FeatureConfig(), CorpusOptions()) == base


def test_a_changed_setting_builds_a_new_cache(toy_corpus, tmp_path):
    first = build_cache(toy_corpus, tmp_path / "cache", progress=False)
    other = build_cache(
        toy_corpus, tmp_path / "cache", options=CorpusOptions(discard_longest=0.2), progress=False
    )
    assert other != first and (other / "meta.json").is_file() and (first / "meta.json").is_file()
    assert len(np.load(other / "train_y.npy")) < len(np.load(first / "train_y.npy"))


def edit_phn_label_same_size(root: Path) -> None:
    """Relabel the second phone of the last utterance with another label of the same length."""
    phn = find_utterances(root)[-1].phn_path
    lines = phn.read_text().splitlines()
    start, end, label = lines[1].split()
    new = next(
        p
        for p in PHONES_61
        if len(p) == len(label) and MAP_61_TO_48[p] not in (None, MAP_61_TO_48[label])
    )
    lines[1] = f"{start} {end} {new}"
    phn.write_text("\n".join(lines) + "\n")


def wav_of(root: Path) -> Path:
    return find_utterances(root)[-1].audio_path


FILE_CHANGES = {
    "wav_removed": lambda root: wav_of(root).unlink(),
    "utterance_added": lambda root: shutil.copytree(
        wav_of(root).parent, wav_of(root).parent.with_name("MNEW0")
    ),
    "phn_shortened": lambda root: find_utterances(root)[-1].phn_path.write_text(
        "".join(find_utterances(root)[-1].phn_path.read_text().splitlines(True)[:-1])
    ),
    "wav_samples_changed_same_size": lambda root: wav_of(root).write_bytes(
        wav_of(root).read_bytes()[:1024] + bytes(len(wav_of(root).read_bytes()) - 1024)
    ),
    "phn_label_changed_same_size": edit_phn_label_same_size,
}


@pytest.mark.parametrize("change", list(FILE_CHANGES))
def test_a_changed_corpus_file_changes_the_key(toy_corpus, tmp_path, change):
    root = tmp_path / "TIMIT"
    shutil.copytree(toy_corpus, root)
    before = corpus_key(find_utterances(root), root, FeatureConfig(), CorpusOptions())
    FILE_CHANGES[change](root)
    after = corpus_key(find_utterances(root), root, FeatureConfig(), CorpusOptions())
    assert after != before, f"{change}: the cache key ignores this edit; a stale cache is reused"


def test_relabelled_phone_is_not_served_from_a_stale_cache(toy_corpus, tmp_path):
    root = tmp_path / "TIMIT"
    shutil.copytree(toy_corpus, root)
    first = build_cache(root, tmp_path / "cache", progress=False)

    def labels(cache: Path) -> np.ndarray:
        return np.concatenate([np.load(cache / f"{s}_y.npy") for s in ("train", "val", "test")])

    before = labels(first)
    edit_phn_label_same_size(root)
    second = build_cache(root, tmp_path / "cache", progress=False)
    assert second != first, "a .PHN label edit that keeps the file size maps to the old cache key"
    relabelled = not np.array_equal(labels(second), before)
    assert relabelled, "a .PHN label edit that keeps the file size is served from the old cache"


# --------------------------------------------------------------------------- atomic writes


def assert_no_trusted_cache(cache_dir: Path) -> None:
    left = sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []
    assert left == [], f"left behind in the cache folder: {left}"
    assert not list(cache_dir.rglob("meta.json")) if cache_dir.exists() else True


def test_bad_test_phn_fails_before_anything_is_written(toy_corpus, tmp_path):
    root = tmp_path / "TIMIT"
    shutil.copytree(toy_corpus, root)
    bad = [u for u in find_utterances(root) if u.split == "test"][-1].phn_path
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0] + " xx"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{bad}:4: unknown phone label 'xx'")):
        build_cache(root, tmp_path / "cache", progress=False)
    assert_no_trusted_cache(tmp_path / "cache")


@pytest.fixture
def flac_corpus(tmp_path):
    return write_toy_corpus(
        tmp_path / "TIMIT", {"TRAIN": 3, "TEST": 2}, sentences=2, audio_format="flac"
    )


def test_failure_midway_through_features_leaves_no_cache(flac_corpus, tmp_path):
    """A TEST file whose header is fine but whose audio cannot decode fails the build after the
    training features were written; nothing a later run would trust may remain."""
    bad = [u for u in find_utterances(flac_corpus) if u.split == "test"][-1].audio_path
    good = bad.read_bytes()
    corrupt_flac_frames(bad)
    assert sf.info(str(bad)).frames > 0  # the header still reads: validation passes
    cache_dir = tmp_path / "cache"
    with pytest.raises(CorpusError, match=re.escape(f"{bad}: not a readable audio file")):
        build_cache(flac_corpus, cache_dir, progress=False)
    assert_no_trusted_cache(cache_dir)
    bad.write_bytes(good)  # repaired: the next run builds a complete cache
    cache = build_cache(flac_corpus, cache_dir, progress=False)
    assert (cache / "meta.json").is_file() and len(np.load(cache / "test_y.npy")) > 0


def test_corrupt_audio_is_skipped_with_on_error_skip(flac_corpus, tmp_path, caplog):
    """``on_error="skip"`` should also cover audio that only fails while decoding."""
    bad = [u for u in find_utterances(flac_corpus) if u.split == "test"][-1].audio_path
    corrupt_flac_frames(bad)
    cache = build_cache(
        flac_corpus, tmp_path / "cache", options=CorpusOptions(on_error="skip"), progress=False
    )
    meta = json.loads((cache / "meta.json").read_text())
    assert len(meta["skipped"]) == 1 and str(bad) in meta["skipped"][0]


class Interrupted(BaseException):
    """Stands for Ctrl-C / SIGTERM arriving in the middle of a build."""


def test_interrupted_build_leaves_no_trusted_cache(toy_corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    seen = []

    def interrupt(signum, frame):
        partial = list(cache_dir.glob(".*.partial/train_x.npy"))
        if partial:
            seen.append(partial[0])
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        with pytest.raises(Interrupted):
            build_cache(
                toy_corpus, cache_dir, FeatureConfig(deltas=2), progress=False, batch_size=4
            )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seen, "the build finished before it could be interrupted"
    assert_no_trusted_cache(cache_dir)
    cache = build_cache(toy_corpus, cache_dir, FeatureConfig(deltas=2), progress=False)
    assert (cache / "meta.json").is_file()
    assert [p.name for p in cache_dir.iterdir()] == [cache.name]


def test_concurrent_cache_folder_is_not_clobbered(toy_corpus, tmp_path):
    """A cache that appeared (complete) while this run built is kept, not replaced."""
    cache = build_cache(toy_corpus, tmp_path / "cache", progress=False)
    os.utime(cache / "meta.json", ns=(1, 1))
    again = build_cache(toy_corpus, tmp_path / "cache", progress=False)
    assert again == cache and (cache / "meta.json").stat().st_mtime_ns == 1


# --------------------------------------------------------------------------- half-built folders


def build_until_killed(root: Path, cache_dir: Path) -> None:
    """Run in a child process: build a cache and SIGKILL itself while patches are written."""

    def kill_when_writing(signum, frame):  # no cleanup code of any kind can run
        if list(cache_dir.glob(".*.partial/train_x.npy")):
            os.kill(os.getpid(), signal.SIGKILL)

    signal.signal(signal.SIGALRM, kill_when_writing)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    build_cache(root, cache_dir, FeatureConfig(deltas=2), progress=False, batch_size=4)


def test_killed_build_is_cleaned_up_by_the_next_run(toy_corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    # A forked child: a real process of its own (its pid dies with it), without a fresh import.
    child = multiprocessing.get_context("fork").Process(
        target=build_until_killed, args=(toy_corpus, cache_dir)
    )
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL
    (dead,) = cache_dir.glob(".*.partial")
    assert (dead / "train_x.npy").is_file() and (dead / "owner.json").is_file()
    live = partial_folder(cache_dir, "live", {"pid": os.getpid(), "host": socket.gethostname()})
    cache = build_cache(toy_corpus, cache_dir, progress=False)
    assert not dead.exists(), "the killed build's folder is still there"
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([cache.name, live.name])


def partial_folder(cache_dir: Path, name: str, owner: dict | str | None, age_s: float = 0) -> Path:
    """A half-built cache folder; ``owner``: its marker (a dict as JSON, a str as it is)."""
    folder = cache_dir / f".{name}.x.partial"
    folder.mkdir(parents=True)
    (folder / "train_x.npy").write_bytes(bytes(1000))
    if owner is not None:
        text = owner if isinstance(owner, str) else json.dumps(owner)
        (folder / "owner.json").write_text(text)
    when = time.time() - age_s
    os.utime(folder, (when, when))
    return folder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


OLD = STALE_PARTIAL_SECONDS + 60


@pytest.mark.parametrize(
    ("owner", "age_s", "removed"),
    [
        ({"pid": "dead", "host": "here"}, 0, True),  # died a moment ago: removed at once
        ({"pid": "self", "host": "here"}, OLD, False),  # alive: never touched, however old
        ({"pid": 1, "host": "elsewhere"}, 0, False),  # another host's: cannot be asked
        ({"pid": 1, "host": "elsewhere"}, OLD, True),  # ... unless it is that old
        (None, 0, False),  # no marker (yet): a build that just started
        (None, OLD, True),  # no marker and old: an older version's leftover
        ("{not json", OLD, True),
    ],
)
def test_only_partial_folders_of_dead_builds_are_removed(tmp_path, owner, age_s, removed):
    if isinstance(owner, dict):
        pid = {"dead": dead_pid(), "self": os.getpid()}.get(owner["pid"], owner["pid"])
        host = socket.gethostname() if owner["host"] == "here" else owner["host"]
        owner = {"pid": pid, "host": host}
    folder = partial_folder(tmp_path, "k", owner, age_s)
    assert remove_dead_builds(tmp_path) == ([folder] if removed else [])
    assert folder.exists() != removed
