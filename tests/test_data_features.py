"""Spectrogram patches: framing arithmetic, representations, deltas, inversion (thesis 2.2-2.3)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from convae_lightning.data.features import FeatureConfig, PatchExtractor, patch_to_audio


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


def test_stft_matches_a_direct_hamming_dft():
    config = FeatureConfig(representation="real_imag")
    x = segment().numpy().astype(np.float64)
    patch = PatchExtractor(config).to(torch.float64)(torch.from_numpy(x).unsqueeze(0))[0]
    window = np.hamming(272)
    expected = np.stack(
        [np.fft.rfft(x[152 * t : 152 * t + 272] * window, n=400) for t in range(16)], axis=1
    )
    # torch centres the 272-sample window in the 400-sample frame: a 64-sample delay, i.e. a
    # linear phase; compare magnitudes exactly and the phase-aligned spectrum too.
    spec = patch[0].numpy() + 1j * patch[1].numpy()
    # (the window buffer is float32, hence the 1e-6 tolerance)
    np.testing.assert_allclose(np.abs(spec), np.abs(expected), rtol=1e-5, atol=1e-6)
    shift = np.exp(-2j * np.pi * np.arange(201) * 64 / 400)[:, None]
    np.testing.assert_allclose(spec, expected * shift, rtol=1e-5, atol=1e-6)


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
        ({"sample_rate": 0}, "sample_rate must be positive"),
        ({"window_ms": 30.0}, "it must be in (0, n_fft=400]"),
        ({"overlap_ms": 17.0}, "must be shorter than window_ms"),
        ({"representation": "mfcc", "n_mfcc": 50}, "n_mfcc=50 cannot exceed n_mels=40"),
    ],
)
def test_bad_feature_config(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FeatureConfig(**kwargs)


@pytest.mark.parametrize("representation", ["real_imag", "magnitude_phase"])
def test_complex_representations_invert_exactly(representation):
    config = FeatureConfig(representation=representation)
    x = segment()
    patch = PatchExtractor(config)(x.unsqueeze(0))[0]
    mean = patch.mean(dim=2, keepdim=True).expand_as(patch).clone()
    audio = patch_to_audio(patch - mean, mean, config)
    assert audio.shape == (2552,)
    np.testing.assert_allclose(audio.numpy(), x.numpy(), atol=1e-4)


def test_real_and_magnitude_inversion_are_approximate():
    x = segment()
    corr = {}
    for representation in ("real", "magnitude"):
        config = FeatureConfig(representation=representation)
        patch = PatchExtractor(config)(x.unsqueeze(0))[0]
        audio = patch_to_audio(patch, None, config, griffin_lim_iters=16).numpy()
        assert audio.shape == (2552,) and np.isfinite(audio).all()
        corr[representation] = np.corrcoef(audio[300:-300], x.numpy()[300:-300])[0, 1]
    # Zeroing the imaginary part halves the signal and adds a time-reversed alias per frame.
    assert 0.5 < corr["real"] < 0.99, corr


@pytest.mark.parametrize("representation", ["log_mel", "mfcc"])
def test_mel_patches_cannot_invert(representation):
    config = FeatureConfig(representation=representation)
    patch = PatchExtractor(config)(segment().unsqueeze(0))[0]
    with pytest.raises(ValueError, match="cannot invert"):
        patch_to_audio(patch, None, config)


def test_inversion_checks_patch_height():
    with pytest.raises(ValueError, match="patch has 100 frequency bins, config expects 201"):
        patch_to_audio(torch.zeros(1, 100, 16), None, FeatureConfig())
