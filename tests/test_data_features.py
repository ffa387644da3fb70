"""Spectrogram patches: framing, window position, representations, inversion (thesis 2.2-2.3)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from convae_lightning.data.features import (
    FeatureConfig,
    PatchExtractor,
    audio_to_patches,
    istft,
    patch_to_audio,
)
from convae_lightning.data.prepare import CorpusOptions, corpus_key
from convae_lightning.data.timit import find_utterances


def segment(length: int = 2552, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1700 * t)
    return torch.from_numpy(x + rng.normal(0, 0.02, length)).float()


def test_thesis_framing_arithmetic():
    config = FeatureConfig()
    assert config.win_length == 272  # 17 ms at 16 kHz
    assert config.win_length - config.hop_length == 120  # 7.5 ms overlap
    assert config.hop_length == 152
    assert config.num_bins == 201 and config.num_channels == 1
    assert config.segment_length(16) == 2552
    assert config.frames_for(2552) == 16
    assert config.frames_for(2553) == 17
    assert config.frames_for(272) == config.frames_for(1) == 1
    assert config.frames_for(273) == 2
    for frames in range(1, 30):
        assert config.frames_for(config.segment_length(frames)) == frames


@pytest.mark.parametrize(("rate", "n_fft"), [(8000, 200), (8000, 400), (32000, 1024)])
def test_framing_scales_with_sample_rate(rate, n_fft):
    config = FeatureConfig(sample_rate=rate, n_fft=n_fft)
    assert config.win_length == round(0.017 * rate)
    assert config.win_length - config.hop_length == round(0.0075 * rate)


def test_patch_is_201_by_16_for_a_2552_sample_segment():
    patches = PatchExtractor(FeatureConfig())(segment().unsqueeze(0).repeat(3, 1))
    assert patches.shape == (3, 1, 201, 16) and patches.dtype == torch.float32


def thesis_patch(x: np.ndarray, num_frames: int, offset: int = 0) -> np.ndarray:
    """The thesis's patch written out: Re(rfft(pad_end(x[152t : 152t + 272] * hamming(272), 400)))
    per frame (MATLAB's ``fft(x, 400)`` zero-pads at the end; ``hamming`` is symmetric);
    ``offset`` moves the window into the frame (64 centres it)."""
    frames = [x[152 * t : 152 * t + 272] * np.hamming(272) for t in range(num_frames)]
    return np.stack([np.fft.rfft(np.pad(f, (offset, 128 - offset))) for f in frames], axis=1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_frames=st.integers(1, 20))
def test_patch_is_the_real_part_of_a_start_framed_dft(seed, num_frames):
    length = FeatureConfig().segment_length(num_frames)
    x = np.random.default_rng(seed).normal(0, 0.3, length)
    patch = PatchExtractor(FeatureConfig()).to(torch.float64)(torch.from_numpy(x)[None])[0]
    assert patch.shape == (1, 201, num_frames)
    # (the window buffer holds float32 values: rounding of ~1e-7 relative)
    np.testing.assert_allclose(patch[0].numpy(), thesis_patch(x, num_frames).real, atol=1e-5)


@pytest.mark.parametrize(("position", "offset"), [("start", 0), ("center", 64)])
def test_window_position_places_the_window_in_the_fft_frame(position, offset):
    config = FeatureConfig(representation="real_imag", window_position=position)
    assert config.window_offset == offset
    x = segment().numpy().astype(np.float64)
    patch = PatchExtractor(config).to(torch.float64)(torch.from_numpy(x).unsqueeze(0))[0]
    expected = thesis_patch(x, 16, offset)
    np.testing.assert_allclose(patch[0].numpy(), expected.real, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(patch[1].numpy(), expected.imag, rtol=1e-5, atol=1e-5)


def test_window_position_changes_the_real_part_not_the_magnitude():
    x = segment().unsqueeze(0)
    start, center = (
        PatchExtractor(FeatureConfig(representation="magnitude_phase", window_position=p))(x)[0]
        for p in ("start", "center")
    )
    torch.testing.assert_close(start[0], center[0], rtol=1e-4, atol=1e-4)
    # Moving the window by 64 samples turns each bin's phase by 2 pi k 64 / 400.
    turn = torch.remainder(center[1] - start[1], 2 * torch.pi)
    expected = torch.remainder(-2 * torch.pi * torch.arange(201) * 64 / 400, 2 * torch.pi)
    loud = start[0] > 1e-3 * start[0].max()
    distance = torch.remainder(turn - expected[:, None] + torch.pi, 2 * torch.pi) - torch.pi
    assert distance[loud].abs().max() < 1e-3


@pytest.mark.parametrize("position", ["start", "center"])
def test_prepadded_rows_give_the_same_patches(position):
    """The cache builder's contract: rows padded by ``side_pad`` zeros on both sides."""
    extractor = PatchExtractor(FeatureConfig(window_position=position))
    assert extractor.side_pad == {"start": 128, "center": 64}[position]
    x = torch.stack([segment(seed=s) for s in range(3)])
    padded = F.pad(x, (extractor.side_pad, extractor.side_pad))
    torch.testing.assert_close(extractor(padded, prepadded=True), extractor(x), rtol=0, atol=0)


@pytest.mark.parametrize("position", ["start", "center"])
def test_audio_to_patches_cuts_unlabelled_audio_into_segments(position):
    config = FeatureConfig(window_position=position)
    wave = torch.cat([segment(seed=0), segment(1000, seed=1)])  # 1.4 segments of 2552
    mean = torch.full((1, 201, 16), 0.5)
    patches = audio_to_patches(wave.numpy(), config, 2552, mean.numpy())
    assert patches.shape == (2, 1, 201, 16)
    rows = torch.stack([segment(seed=0), F.pad(segment(1000, seed=1), (0, 1552))])
    torch.testing.assert_close(patches, PatchExtractor(config)(rows) - mean)


def test_window_position_is_part_of_the_cache_key(toy_corpus):
    utterances = find_utterances(toy_corpus)
    keys = {
        corpus_key(utterances, toy_corpus, FeatureConfig(window_position=p), CorpusOptions())
        for p in ("start", "center")
    }
    assert len(keys) == 2
    assert FeatureConfig().as_dict()["window_position"] == "start"


SHAPES = {
    "real": (1, 201),
    "magnitude": (1, 201),
    "magnitude_phase": (2, 201),
    "real_imag": (2, 201),
    "log_mel": (1, 40),
    "mfcc": (1, 13),
}


@pytest.mark.parametrize("representation", list(SHAPES))
@pytest.mark.parametrize("deltas", [0, 1, 2])
def test_representation_shapes(representation, deltas):
    config = FeatureConfig(representation=representation, deltas=deltas)
    channels, bins = SHAPES[representation]
    patch = PatchExtractor(config)(segment().unsqueeze(0))
    assert patch.shape == (1, channels * (1 + deltas), bins, 16)
    assert (config.num_channels, config.num_bins) == (channels * (1 + deltas), bins)
    assert torch.isfinite(patch).all()


def test_representations_agree_with_each_other():
    x = segment().unsqueeze(0)
    get = {r: PatchExtractor(FeatureConfig(representation=r))(x)[0] for r in SHAPES}
    re_, im = get["real_imag"]
    torch.testing.assert_close(get["real"][0], re_)
    torch.testing.assert_close(
        get["magnitude"][0], torch.sqrt(re_**2 + im**2), rtol=1e-5, atol=1e-6
    )
    mag, phase = get["magnitude_phase"]
    torch.testing.assert_close(mag, get["magnitude"][0])
    assert phase.abs().max() <= torch.pi + 1e-6
    torch.testing.assert_close(mag * torch.cos(phase), re_, rtol=1e-4, atol=1e-4)
    # MFCC c0 of an orthonormal DCT-II is sum(log_mel) / sqrt(n_mels).
    torch.testing.assert_close(
        get["mfcc"][0, 0], get["log_mel"][0].sum(0) / np.sqrt(40), rtol=1e-4, atol=1e-3
    )


def test_delta_channels_are_regression_deltas():
    config = FeatureConfig(representation="magnitude", deltas=2)
    patch = PatchExtractor(config)(segment().unsqueeze(0))[0].double().numpy()

    def delta(c):  # HTK regression over +-2 frames, edges replicated
        p = np.pad(c, ((0, 0), (2, 2)), mode="edge")
        return (
            sum(
                n * (p[:, 2 + n : p.shape[1] - 2 + n] - p[:, 2 - n : p.shape[1] - 2 - n])
                for n in (1, 2)
            )
            / 10
        )

    np.testing.assert_allclose(patch[1], delta(patch[0]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(patch[2], delta(delta(patch[0])), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"representation": "cqt"}, "representation must be one of"),
        ({"deltas": 3}, "deltas must be 0, 1 or 2"),
        ({"window_position": "end"}, "window_position must be one of ('start', 'center')"),
        ({"sample_rate": 0}, "sample_rate must be positive"),
        ({"window_ms": 30.0}, "it must be in (0, n_fft=400]"),
        ({"overlap_ms": 17.0}, "must be shorter than window_ms"),
        ({"representation": "mfcc", "n_mfcc": 50}, "n_mfcc=50 cannot exceed n_mels=40"),
    ],
)
def test_bad_feature_config(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FeatureConfig(**kwargs)


def phone_in_padding(length: int = 2552, phone: int = 1200, seed: int = 0) -> torch.Tensor:
    """A padded segment as the cache holds it: a phone centred in zeros."""
    x = torch.zeros(length)
    offset = (length - phone) // 2
    x[offset : offset + phone] = segment(phone, seed)
    return x


@pytest.mark.parametrize("position", ["start", "center"])
@pytest.mark.parametrize("representation", ["real_imag", "magnitude_phase"])
def test_complex_representations_invert_exactly(representation, position):
    config = FeatureConfig(representation=representation, window_position=position)
    x = segment()
    patch = PatchExtractor(config)(x.unsqueeze(0))[0]
    mean = patch.mean(dim=2, keepdim=True).expand_as(patch).clone()
    audio = patch_to_audio(patch - mean, mean, config)
    assert audio.shape == (2552,)
    np.testing.assert_allclose(audio.numpy(), x.numpy(), atol=1e-4)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


@pytest.mark.parametrize("position", ["start", "center"])
def test_real_part_inverts_by_least_squares_better_than_a_zero_imaginary_part(position):
    config = FeatureConfig(window_position=position)
    x = torch.stack([phone_in_padding(seed=s) for s in range(4)]).double()
    patches = PatchExtractor(config).to(torch.float64)(x)
    naive = istft(torch.complex(patches[:, 0], torch.zeros_like(patches[:, 0])), config)
    for i in range(len(x)):
        audio = patch_to_audio(patches[i], None, config)
        assert audio.shape == (2552,)
        assert correlation(audio, x[i]) > correlation(naive[i], x[i]) + 0.05


def test_real_part_with_the_window_at_the_frame_start_is_near_lossless():
    """Each frame folds onto its own time-reverse around its start; the folded samples are ones
    the next frame sees unfolded, so only the last frame's second half is lost (zeros here)."""
    config = FeatureConfig()
    x = phone_in_padding().double()
    audio = patch_to_audio(PatchExtractor(config).to(torch.float64)(x[None])[0], None, config)
    np.testing.assert_allclose(audio.numpy(), x.numpy(), atol=1e-6)
    # With sound in the last frame, its folded half splits evenly between the pair it mixes.
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, 2552))
    audio = patch_to_audio(PatchExtractor(config).to(torch.float64)(noise[None])[0], None, config)
    last = config.segment_length(15) - 272 + 129  # first sample folded inside the last frame
    np.testing.assert_allclose(audio[:last].numpy(), noise[:last].numpy(), atol=1e-6)
    assert not np.allclose(audio[last:].numpy(), noise[last:].numpy(), atol=1e-3)


def test_magnitude_inverts_by_griffin_lim_to_a_consistent_spectrogram():
    config = FeatureConfig(representation="magnitude")
    extractor = PatchExtractor(config).to(torch.float64)
    x = phone_in_padding().double()
    target = extractor(x[None])[0]

    def error(iters: int) -> float:
        audio = patch_to_audio(target, None, config, griffin_lim_iters=iters)
        assert audio.shape == (2552,) and torch.isfinite(audio).all()
        rebuilt = extractor(audio[None])[0]
        return float((rebuilt - target).norm() / target.norm())

    first, last = error(1), error(32)
    assert last < 0.5 * first and last < 0.3, (first, last)


@pytest.mark.parametrize("representation", ["log_mel", "mfcc"])
def test_mel_patches_cannot_invert(representation):
    config = FeatureConfig(representation=representation)
    patch = PatchExtractor(config)(segment().unsqueeze(0))[0]
    with pytest.raises(ValueError, match="cannot invert"):
        patch_to_audio(patch, None, config)


def test_inversion_checks_patch_height():
    with pytest.raises(ValueError, match="patch has 100 frequency bins, config expects 201"):
        patch_to_audio(torch.zeros(1, 100, 16), None, FeatureConfig())
