"""Spectrogram patches of phone segments (thesis 2.2-2.3) and their inversion to audio.

Framing: a 17 ms Hamming window (272 samples at 16 kHz) moved by 9.5 ms (152 samples, i.e. 7.5 ms
overlap) over the zero-padded phone, 201 frequency bins (n_fft 400). Frame ``t`` covers samples
``[152 t, 152 t + 272)`` of the padded segment, so a segment of ``272 + 152 (T - 1)`` samples gives
exactly ``T`` frames (2,552 samples -> 16 frames, the thesis's 201 x 16 patches). ``torch.stft``
centres the short window inside each 400-sample frame, so segments are padded by 64 samples on each
side before the transform; ``center=False`` keeps the frame count exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torchaudio
from torch.nn import functional as F

Representation = Literal["real", "magnitude", "magnitude_phase", "real_imag", "log_mel", "mfcc"]
REPRESENTATIONS: tuple[str, ...] = (
    "real",
    "magnitude",
    "magnitude_phase",
    "real_imag",
    "log_mel",
    "mfcc",
)


@dataclass(frozen=True)
class FeatureConfig:
    """Every setting that shapes a patch; part of the feature cache key.

    Args:
        sample_rate: rate the corpus is resampled to before framing.
        window_ms: Hamming window length (thesis: 17 ms).
        overlap_ms: overlap of consecutive windows (thesis: 7.5 ms).
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins (thesis: 201 bins).
        representation: ``real`` (thesis), ``magnitude``, ``magnitude_phase`` and ``real_imag``
            (2 channels), ``log_mel`` or ``mfcc``.
        deltas: 0, 1 (add delta) or 2 (add delta and delta-delta) channels, via torchaudio.
        n_mels: mel bands for ``log_mel`` and ``mfcc``.
        n_mfcc: cepstral coefficients for ``mfcc``.
    """

    sample_rate: int = 16000
    window_ms: float = 17.0
    overlap_ms: float = 7.5
    n_fft: int = 400
    representation: Representation = "real"
    deltas: int = 0
    n_mels: int = 40
    n_mfcc: int = 13

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}"
            )
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {self.deltas!r}")
        for name in ("sample_rate", "n_fft", "n_mels", "n_mfcc"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(
                f"window_ms={self.window_ms} gives {self.win_length} samples; it must be in "
                f"(0, n_fft={self.n_fft}]"
            )
        if not self.hop_length > 0:
            raise ValueError(f"overlap_ms={self.overlap_ms} must be shorter than window_ms")
        if self.representation == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} cannot exceed n_mels={self.n_mels}")

    @property
    def win_length(self) -> int:
        return round(self.window_ms * self.sample_rate / 1000)

    @property
    def hop_length(self) -> int:
        return self.win_length - round(self.overlap_ms * self.sample_rate / 1000)

    @property
    def num_bins(self) -> int:
        """Height F of a patch."""
        if self.representation == "log_mel":
            return self.n_mels
        if self.representation == "mfcc":
            return self.n_mfcc
        return self.n_fft // 2 + 1

    @property
    def num_channels(self) -> int:
        base = 2 if self.representation in ("magnitude_phase", "real_imag") else 1
        return base * (1 + self.deltas)

    def frames_for(self, num_samples: int) -> int:
        """Frames needed to cover ``num_samples`` samples completely."""
        excess = max(0, num_samples - self.win_length)
        return 1 + math.ceil(excess / self.hop_length)

    def segment_length(self, num_frames: int) -> int:
        """Samples in a segment that gives exactly ``num_frames`` frames."""
        return self.win_length + (num_frames - 1) * self.hop_length

    def as_dict(self) -> dict:
        return asdict(self)


class PatchExtractor(torch.nn.Module):
    """Turns a batch of equal-length segments ``(B, L)`` into patches ``(B, C, F, T)``."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hamming_window(config.win_length, periodic=False))
        self.side_pad = (config.n_fft - config.win_length) // 2
        if config.representation in ("log_mel", "mfcc"):
            self.mel = torchaudio.transforms.MelScale(
                n_mels=config.n_mels, sample_rate=config.sample_rate, n_stft=config.n_fft // 2 + 1
            )
            self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=None)
        if config.representation == "mfcc":
            dct = torchaudio.functional.create_dct(config.n_mfcc, config.n_mels, norm="ortho")
            self.register_buffer("dct", dct)  # (n_mels, n_mfcc)
        if config.deltas:
            self.compute_deltas = torchaudio.transforms.ComputeDeltas(win_length=5)

    def stft(self, segments: torch.Tensor, prepadded: bool = False) -> torch.Tensor:
        """Complex spectrogram ``(B, n_fft // 2 + 1, T)`` with the framing of the module docs.

        ``prepadded=True`` means the caller already added ``side_pad`` zeros on both sides (the
        cache builder does, saving a copy of every batch).
        """
        padded = segments if prepadded else F.pad(segments, (self.side_pad, self.side_pad))
        return torch.stft(
            padded,
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            win_length=self.config.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )

    @torch.no_grad()
    def forward(self, segments: torch.Tensor, prepadded: bool = False) -> torch.Tensor:
        spec = self.stft(segments, prepadded)
        rep = self.config.representation
        if rep == "real":
            channels = [spec.real]
        elif rep == "magnitude":
            channels = [spec.abs()]
        elif rep == "magnitude_phase":
            channels = [spec.abs(), spec.angle()]
        elif rep == "real_imag":
            channels = [spec.real, spec.imag]
        else:
            log_mel = self.to_db(self.mel(spec.abs().pow(2)))
            channels = [log_mel if rep == "log_mel" else (log_mel.transpose(1, 2) @ self.dct).mT]
        # (B, C, F, T); a single channel needs one copy, not a stack plus a copy.
        patch = channels[0].unsqueeze(1) if len(channels) == 1 else torch.stack(channels, dim=1)
        if self.config.deltas:
            delta = self.compute_deltas(patch)
            extra = [delta, self.compute_deltas(delta)] if self.config.deltas == 2 else [delta]
            patch = torch.cat([patch, *extra], dim=1)
        return patch.contiguous()


def audio_to_patches(
    audio: np.ndarray | torch.Tensor,
    config: FeatureConfig,
    segment_length: int,
    mean: np.ndarray | torch.Tensor | None = None,
) -> torch.Tensor:
    """Patches ``(N, C, F, T)`` of any waveform, cut into consecutive phone-length segments.

    Used where there are no phone labels (``convae predict``/``reconstruct`` on an audio file):
    the waveform, already at ``config.sample_rate``, is split into ``segment_length``-sample
    segments (the cache's padded phone length; the last one zero-padded), each turned into a
    patch as the cache builder does, and ``mean`` (the training mean) is subtracted.
    """
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32)).flatten()
    if wave.numel() == 0:
        raise ValueError("audio holds no samples")
    count = math.ceil(wave.numel() / segment_length)
    segments = F.pad(wave, (0, count * segment_length - wave.numel())).reshape(count, -1)
    patches = PatchExtractor(config)(segments)
    if mean is not None:
        patches = patches - torch.as_tensor(np.asarray(mean), dtype=patches.dtype)
    return patches


def overlap_add(frames: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Weighted overlap-add of windowed time frames ``(T, win_length)`` back to a waveform."""
    window = torch.hamming_window(config.win_length, periodic=False, dtype=frames.dtype)
    num_frames = frames.shape[0]
    length = config.segment_length(num_frames)
    fold = F.fold
    kwargs = dict(output_size=(1, length), kernel_size=(1, config.win_length))
    kwargs["stride"] = (1, config.hop_length)
    signal = fold((frames * window).T.unsqueeze(0), **kwargs).flatten()
    envelope = fold(window.pow(2).expand(num_frames, -1).T.unsqueeze(0), **kwargs).flatten()
    return signal / envelope.clamp_min(1e-8)


def patch_to_audio(
    patch: torch.Tensor | np.ndarray,
    mean: torch.Tensor | np.ndarray | None,
    config: FeatureConfig | None = None,
    griffin_lim_iters: int = 32,
) -> torch.Tensor:
    """Invert a (mean-subtracted) patch ``(C, F, T)`` or ``(F, T)`` to a waveform.

    The training mean is added back first. ``real_imag`` and ``magnitude_phase`` invert exactly;
    ``real`` inverts the real part with a zero imaginary part (the thesis's choice trades this
    distortion for simplicity); ``magnitude`` uses Griffin-Lim phase reconstruction. Mel and MFCC
    patches are not invertible.

    Raises:
        ValueError: for ``log_mel``/``mfcc`` patches or a patch whose shape does not fit ``config``.
    """
    config = config or FeatureConfig()
    patch = torch.as_tensor(np.asarray(patch) if isinstance(patch, np.ndarray) else patch)
    patch = patch.to(torch.float64)
    if patch.dim() == 2:
        patch = patch.unsqueeze(0)
    if mean is not None:
        patch = patch + torch.as_tensor(np.asarray(mean), dtype=torch.float64).reshape(patch.shape)
    rep = config.representation
    if rep in ("log_mel", "mfcc"):
        raise ValueError(f"representation {rep!r} discards the linear spectrum; it cannot invert")
    bins = config.n_fft // 2 + 1
    if patch.shape[-2] != bins:
        raise ValueError(f"patch has {patch.shape[-2]} frequency bins, config expects {bins}")
    if rep == "real":
        spec = torch.complex(patch[0], torch.zeros_like(patch[0]))
    elif rep == "real_imag":
        spec = torch.complex(patch[0], patch[1])
    elif rep == "magnitude_phase":
        spec = torch.polar(patch[0].clamp_min(0), patch[1])
    else:
        return _griffin_lim(patch[0].clamp_min(0), config, griffin_lim_iters)
    return _istft(spec, config)


def _istft(spec: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Inverse of ``PatchExtractor.stft`` for one spectrogram ``(F, T)``."""
    side = (config.n_fft - config.win_length) // 2
    # Each inverse FFT holds the *windowed* frame at [side, side + win_length); overlap_add
    # weights by the window once more and divides by sum(w^2), the least-squares inverse.
    frames = torch.fft.irfft(spec.T, n=config.n_fft)[:, side : side + config.win_length]
    return overlap_add(frames, config)


def _griffin_lim(magnitude: torch.Tensor, config: FeatureConfig, iters: int) -> torch.Tensor:
    extractor = PatchExtractor(FeatureConfig(**{**config.as_dict(), "representation": "real"}))
    extractor = extractor.to(torch.float64)
    length = config.segment_length(magnitude.shape[-1])
    generator = torch.Generator().manual_seed(0)
    phase = torch.rand(magnitude.shape, generator=generator, dtype=torch.float64) * 2 * math.pi
    audio = _istft(torch.polar(magnitude, phase), config)
    for _ in range(iters):
        spec = extractor.stft(audio[:length].unsqueeze(0))[0]
        audio = _istft(torch.polar(magnitude, spec.angle()), config)
    return audio


__all__ = [
    "REPRESENTATIONS",
    "FeatureConfig",
    "PatchExtractor",
    "Representation",
    "audio_to_patches",
    "overlap_add",
    "patch_to_audio",
]
