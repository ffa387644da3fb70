"""Spectrogram patches of phone segments (thesis 2.2-2.3) and their inversion to audio.

Framing: a 17 ms Hamming window (272 samples at 16 kHz) moved by 9.5 ms (152 samples, i.e. 7.5 ms
overlap) over the zero-padded phone, 201 frequency bins (n_fft 400). Frame ``t`` covers samples
``[152 t, 152 t + 272)`` of the padded segment, so a segment of ``272 + 152 (T - 1)`` samples gives
exactly ``T`` frames (2,552 samples -> 16 frames, the thesis's 201 x 16 patches).

Where the window sits in the 400-sample FFT frame (``FeatureConfig.window_position``) changes the
phase of every bin, hence the real part the thesis keeps: ``"start"`` (default) is MATLAB's
``fft(x .* hamming(272), 400)``, which zero-pads at the end, so patch column ``t`` is
``Re(rfft(pad_end(x[152t : 152t + 272] * hamming(272), 400)))``; ``"center"`` is what
``torch.stft`` does with a short window. Both run as ``torch.stft`` with a window of length n_fft
holding the Hamming at its place and ``center=False`` (frame count exact). The window is the
symmetric Hamming (``periodic=False``), as MATLAB's ``hamming(N)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
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
WindowPosition = Literal["start", "center"]
WINDOW_POSITIONS: tuple[str, ...] = ("start", "center")


@dataclass(frozen=True)
class FeatureConfig:
    """Every setting that shapes a patch; part of the feature cache key.

    Args:
        sample_rate: rate the corpus is resampled to before framing.
        window_ms: Hamming window length (thesis: 17 ms).
        overlap_ms: overlap of consecutive windows (thesis: 7.5 ms).
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins (thesis: 201 bins).
        window_position: where the window sits in the n_fft-sample FFT frame: ``start`` (the
            thesis's MATLAB ``fft(x, n_fft)``, zero-padded at the end) or ``center``.
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
    window_position: WindowPosition = "start"
    representation: Representation = "real"
    deltas: int = 0
    n_mels: int = 40
    n_mfcc: int = 13

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}"
            )
        if self.window_position not in WINDOW_POSITIONS:
            raise ValueError(
                f"window_position must be one of {WINDOW_POSITIONS}, got {self.window_position!r}"
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
    def window_offset(self) -> int:
        """First sample of the window inside the n_fft-sample FFT frame."""
        return 0 if self.window_position == "start" else (self.n_fft - self.win_length) // 2

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


def framed_window(
    win_length: int, n_fft: int, offset: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A symmetric Hamming window of ``win_length`` samples placed at ``offset`` in zeros of length
    ``n_fft`` (cut at the frame's end if longer, as MATLAB's ``fft(x, n)`` truncates ``x``)."""
    frame = torch.zeros(n_fft, dtype=dtype)
    kept = min(win_length, n_fft - offset)
    hamming = torch.hamming_window(win_length, periodic=False, dtype=dtype)
    frame[offset : offset + kept] = hamming[:kept]
    return frame


class PatchExtractor(torch.nn.Module):
    """Turns a batch of equal-length segments ``(B, L)`` into patches ``(B, C, F, T)``.

    ``pad`` is the ``(left, right)`` zero padding the framing needs around a segment (``(0, 128)``
    for the window at the frame start, ``(64, 64)`` centred); ``side_pad = max(pad)`` is what a
    caller adds on *both* sides to pass ``prepadded=True`` (the cache builder does, saving a copy
    of every batch).
    """

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        # (n_fft,): torch.stft gets the whole frame's window, so it does not centre a short one.
        window = framed_window(config.win_length, config.n_fft, config.window_offset)
        self.register_buffer("window", window)
        left = config.window_offset
        self.pad = (left, config.n_fft - config.win_length - left)
        self.side_pad = max(self.pad)
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

        ``prepadded=True`` means the caller already added ``side_pad`` zeros on both sides; the
        surplus is sliced off as a view (``torch.stft`` frames a strided view without a copy).
        """
        if prepadded:
            skip_left, skip_right = (self.side_pad - p for p in self.pad)
            padded = segments[..., skip_left : segments.shape[-1] - skip_right]
        else:
            padded = F.pad(segments, self.pad)
        return torch.stft(
            padded,
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            win_length=self.config.n_fft,
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


def istft(spec: torch.Tensor, config: FeatureConfig, length: int | None = None) -> torch.Tensor:
    """Least-squares inverse of :meth:`PatchExtractor.stft`: ``(..., F, T)`` -> ``(..., L)``.

    ``torch.istft`` divides by the window envelope, which must not vanish (its NOLA check): with
    the window centred, the frame's first samples have none. A centred frame is the start-framed
    one delayed by ``window_offset`` samples (circularly, and the zeros make that exact), so its
    spectrum is rotated back by that delay and inverted with the window at the start.
    """
    length = length or config.segment_length(spec.shape[-1])
    real_dtype = spec.real.dtype
    if config.window_offset:
        bins = torch.arange(spec.shape[-2], dtype=real_dtype)
        advance = torch.polar(
            torch.ones_like(bins), 2 * math.pi * config.window_offset / config.n_fft * bins
        )
        spec = spec * advance.unsqueeze(-1)
    return torch.istft(
        spec,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.n_fft,
        window=framed_window(config.win_length, config.n_fft, 0, real_dtype),
        center=False,
        length=length,
    )


def griffin_lim(
    magnitude: torch.Tensor,
    analyse: Callable[[torch.Tensor], torch.Tensor],
    synthesise: Callable[[torch.Tensor], torch.Tensor],
    iters: int = 32,
    seed: int = 0,
) -> torch.Tensor:
    """Griffin & Lim (1984): a complex spectrogram with ``magnitude`` and a consistent phase.

    ``torchaudio.functional.griffinlim`` cannot run our framing: it hard-codes ``center=True``
    (reflect-padded frames centred on ``hop * t``), so the first half frame of a segment would be
    lost; the loop runs our own ``analyse``/``synthesise`` instead.
    """
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(magnitude.shape, generator=generator, dtype=magnitude.dtype) * 2 * math.pi
    spec = torch.polar(magnitude, phase.to(magnitude.device))
    for _ in range(iters):
        rebuilt = analyse(synthesise(spec))
        spec = torch.polar(magnitude, rebuilt.angle())
    return spec


def least_squares_inverse(
    analyse_frame: Callable[[torch.Tensor], torch.Tensor],
    win_length: int,
    hop_length: int,
    num_frames: int,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The minimum-norm least-squares inverse of a linear frame-by-frame analysis.

    ``analyse_frame`` maps ``(B, win_length)`` float64 samples (one frame, window included in
    the map) to that frame's patch column ``(B, D, 1)``; the returned function maps patches
    ``(N, D, num_frames)`` back to ``(N, win_length + hop_length (num_frames - 1))`` samples.

    Used for the real part of the STFT, which the plain inverse STFT reads as a spectrum with
    zero imaginary part: each frame then comes back folded onto its own time-reverse. The real
    part still determines every sample that a neighbouring frame sees unfolded (with the window
    at the frame start and 201 bins, all but the last frame's second half), and solving the
    normal equations ``A^T A x = A^T p`` recovers them. ``A^T A`` is a sum of one ``(win, win)``
    block per frame, so it costs one frame's analysis to build.
    """
    frame_map = analyse_frame(torch.eye(win_length, dtype=torch.float64))
    frame_map = frame_map.reshape(win_length, -1).T  # (D, win): one frame's matrix
    block = frame_map.T @ frame_map
    length = win_length + hop_length * (num_frames - 1)
    gram = torch.zeros(length, length, dtype=torch.float64)  # A^T A
    for t in range(num_frames):
        span = slice(t * hop_length, t * hop_length + win_length)
        gram[span, span] += block
    # A tiny ridge keeps the solve defined where the map loses information (the folded half of
    # the last frame): there it returns the minimum-norm split instead of noise.
    gram.diagonal().add_(1e-10 * block.diagonal().mean())
    factor = torch.linalg.cholesky(gram)

    def invert(patches: torch.Tensor) -> torch.Tensor:
        """``(N, ..., T)`` patches -> ``(N, L)`` waveforms."""
        columns = patches.reshape(len(patches), -1, num_frames).to(torch.float64)
        frames = columns.transpose(1, 2) @ frame_map  # (N, T, win): A_t^T p_t
        rhs = F.fold(  # overlap-add of the frames: A^T p, (N, L)
            frames.transpose(1, 2),
            output_size=(1, length),
            kernel_size=(1, win_length),
            stride=(1, hop_length),
        ).flatten(1)
        return torch.cholesky_solve(rhs.T, factor).T

    return invert


@lru_cache(maxsize=2)
def _real_part_inverse(config: FeatureConfig, num_frames: int) -> Callable:
    """:func:`least_squares_inverse` of the real-part patch map, built once per framing."""
    extractor = PatchExtractor(replace(config, representation="real", deltas=0))
    extractor = extractor.to(torch.float64)
    return least_squares_inverse(
        lambda frame: extractor.stft(frame).real,
        config.win_length,
        config.hop_length,
        num_frames,
    )


def patch_to_audio(
    patch: torch.Tensor | np.ndarray,
    mean: torch.Tensor | np.ndarray | None,
    config: FeatureConfig | None = None,
    griffin_lim_iters: int = 32,
) -> torch.Tensor:
    """Invert a (mean-subtracted) patch ``(C, F, T)`` or ``(F, T)`` to a waveform (float64).

    The training mean is added back first. ``real_imag`` and ``magnitude_phase`` invert exactly
    (``torch.istft``); ``real`` by the least-squares inverse of the real-part map (exact but for the
    last frame's folded half at 201 bins with the window at the frame start; see
    :func:`least_squares_inverse` and docs/data.md); ``magnitude`` by Griffin-Lim. Mel and MFCC
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
    num_frames = patch.shape[-1]
    if rep == "real":
        return _real_part_inverse(config, num_frames)(patch[:1])[0]
    if rep == "real_imag":
        return istft(torch.complex(patch[0], patch[1]), config)
    if rep == "magnitude_phase":
        return istft(torch.polar(patch[0].clamp_min(0), patch[1]), config)
    extractor = PatchExtractor(replace(config, representation="real", deltas=0))
    extractor = extractor.to(torch.float64)
    spec = griffin_lim(
        patch[0].clamp_min(0),
        lambda audio: extractor.stft(audio.unsqueeze(0))[0],
        lambda spec: istft(spec, config),
        griffin_lim_iters,
    )
    return istft(spec, config)


__all__ = [
    "REPRESENTATIONS",
    "WINDOW_POSITIONS",
    "FeatureConfig",
    "PatchExtractor",
    "Representation",
    "WindowPosition",
    "audio_to_patches",
    "framed_window",
    "griffin_lim",
    "istft",
    "least_squares_inverse",
    "patch_to_audio",
]
