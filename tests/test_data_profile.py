"""``convae data prepare --profile``: where the mean-removed patches hold their squared norm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convae_lightning.data.features import FeatureConfig
from convae_lightning.data.profile import energy_profile, padding_only_frames
from convae_lightning.synth.toy import write_toy_corpus

FEATURES = FeatureConfig()  # 272-sample window, 152-sample hop: 17 frames cover 2704 samples
SEGMENT, FRAMES = FEATURES.segment_length(17), 17


def test_padding_only_frames_are_those_whose_window_misses_the_centred_phone():
    # A 272-sample phone centred in 2704 samples spans [1216, 1488): frames 7-9 overlap it.
    mask = padding_only_frames(np.array([272, SEGMENT]), SEGMENT, FRAMES, FEATURES)
    assert SEGMENT == 2704
    assert np.flatnonzero(~mask[0]).tolist() == [7, 8, 9]
    assert not mask[1].any()  # a phone as long as the segment leaves no padding


def test_energy_profile_shares_sum_to_one_and_find_the_padding():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(1, 3, FRAMES))
    padding = padding_only_frames(np.array([272, 1000, SEGMENT]), SEGMENT, FRAMES, FEATURES)
    # Deviations from the mean only in padding frames, except the third patch (no padding),
    # which deviates in its first frame; a fourth patch equals the mean and is left out.
    deviation = np.zeros((4, 1, 3, FRAMES))
    deviation[:3][np.broadcast_to(padding[:, None, None, :], (3, 1, 3, FRAMES))] = 2.0
    deviation[2, 0, :, 0] = 2.0
    deviation[3] = 0.0
    patches = mean + deviation
    mask = np.concatenate([padding, np.zeros((1, FRAMES), dtype=bool)])
    profile = energy_profile(patches, mean, mask, chunk=3)
    assert profile.patches == 3
    assert profile.frame_share.sum() == pytest.approx(1.0)
    assert profile.row_share == pytest.approx(np.full(3, 1 / 3))
    assert profile.padding_share == pytest.approx(2 / 3)  # two of the three patches
    assert profile.padding_frames == pytest.approx(padding.mean(axis=1).sum() / 3)
    entries = np.square(deviation[:3]).sum() / (3 * 3 * FRAMES)
    assert profile.rms == pytest.approx(np.sqrt(entries), rel=1e-5)
    # The chunk size bounds memory only.
    assert energy_profile(patches, mean, mask, chunk=1).frame_share == pytest.approx(
        profile.frame_share
    )


def test_energy_profile_rejects_mismatched_shapes():
    patches = np.zeros((2, 1, 3, FRAMES), dtype=np.float32)
    with pytest.raises(ValueError, match="padding mask"):
        energy_profile(patches, np.zeros((1, 3, FRAMES)), np.zeros((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="no squared norm"):
        energy_profile(patches, np.zeros((1, 3, FRAMES)), np.zeros((2, FRAMES), dtype=bool))


def convae_data(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVAE_CACHE_DIR": str(cache), "COLUMNS": "200"}
    command = [sys.executable, "-m", "convae_lightning.cli", "data", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_prepare_profiles_a_split_and_shows_log_features_weigh_the_padding(tmp_path):
    """Through the console script, as a user runs it: the log of the zero padding (-100 dB)
    puts a large share of a log-mel patch's norm in padding-only frames; the real part's
    padding is zeros and holds almost none."""
    root = write_toy_corpus(tmp_path / "TIMIT", {"TRAIN": 3, "TEST": 1}, sentences=2)
    shares = {}
    for representation in ("real", "log_mel"):
        image = tmp_path / f"{representation}.png"
        result = convae_data(
            "prepare", str(root), "--representation", representation,
            "--profile", "train", "--profile_image", str(image),
            cache=tmp_path / "cache",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"{representation} patches, train" in result.stdout
        assert image.stat().st_size > 10_000 and image.read_bytes()[:4] == b"\x89PNG"
        line = next(s for s in result.stdout.splitlines() if "frames of zero padding" in s)
        shares[representation] = float(line.split("│")[2].split("%")[0])
    assert shares["real"] < 5.0 < 20.0 < shares["log_mel"], shares


def test_profile_image_without_a_split_is_refused_by_name(tmp_path):
    result = convae_data(
        "prepare", "--profile_image", str(tmp_path / "p.png"), cache=tmp_path / "cache"
    )
    assert result.returncode != 0
    assert "--profile_image needs --profile" in result.stderr
    assert not (tmp_path / "cache").exists()  # refused before any cache is built
