"""Table 1 of the thesis: how well a phone's audio survives the STFT (thesis 2.2.2).

The thesis correlates each phone's audio with its reconstruction from the STFT for 101, 201 and
301 frequency bins (n_fft 200, 400, 600), with the phase kept and discarded, but says neither how
it inverted without phase nor what its "cross-correlation" is. A :class:`Reading` fixes each open
choice; :func:`evaluate` measures every reading asked for in one pass over the segments, so the
readings can be ranked by how well they reproduce the thesis's numbers (docs/table1.md).

Every reading frames like the patches (``FeatureConfig``, window at the frame start, as MATLAB's
``fft(x, n)``). A third row, ``real_part``, is what our patches keep: the real part of the STFT,
inverted by least squares as :func:`~convae_lightning.data.features.patch_to_audio` does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Literal, get_args

import torch
from torch.nn import functional as F

from convae_lightning.data.features import (
    FeatureConfig,
    framed_window,
    griffin_lim,
    least_squares_inverse,
)

ShortFFT = Literal["wrap", "truncate"]
Discard = Literal["real_part", "zero_phase", "griffin_lim"]
OverlapAdd = Literal["normalised", "plain"]
Measure = Literal["waveform", "waveform_phone", "best_lag", "spectrogram"]

#: Table 1's columns, and its cells (thesis lines 356-364); ``None`` where it prints N/A.
BINS: tuple[int, ...] = (101, 201, 301)
THESIS_TABLE1: dict[str, dict[int, float | None]] = {
    "available": {101: 0.67, 201: 0.92, 301: None},
    "discarded": {101: 0.36, 201: 0.91, 301: 0.98},
}
ROWS: tuple[str, ...] = ("available", "discarded", "real_part")


@dataclass(frozen=True)
class Reading:
    """One reading of the thesis's Table 1 experiment; the defaults reproduce it best.

    Args:
        short_fft: an FFT shorter than the 272-sample window (101 bins): ``wrap`` folds the
            frame modulo n_fft (MATLAB's ``spectrogram``, i.e. the DTFT sampled at n_fft points)
            or ``truncate`` keeps its first n_fft samples (MATLAB's ``fft(x, n)``).
        discard: how audio is rebuilt without phase: ``real_part`` (the imaginary part set to
            zero: "phase discarded" read as the thesis's Cartesian real part), ``zero_phase``
            (the amplitude alone) or ``griffin_lim`` (amplitude plus Griffin-Lim phase).
        overlap_add: ``normalised`` (least-squares inverse STFT, ``torch.istft``) or ``plain``
            (the inverse FFTs summed where their frames lie, no window division).
        measure: ``waveform`` (Pearson correlation of the padded segments at zero lag),
            ``waveform_phone`` (the same over the phone's own samples), ``best_lag`` (the peak of
            the normalised cross-correlation over all lags, MATLAB's ``xcorr(x, y, 'coeff')``)
            or ``spectrogram`` (Pearson correlation of the two magnitude spectrograms).
    """

    short_fft: ShortFFT = "wrap"
    discard: Discard = "real_part"
    overlap_add: OverlapAdd = "normalised"
    measure: Measure = "waveform"

    def __post_init__(self) -> None:
        for field in fields(self):
            allowed = get_args(_TYPES[field.name])
            if getattr(self, field.name) not in allowed:
                raise ValueError(
                    f"{field.name} must be one of {allowed}, got {getattr(self, field.name)!r}"
                )

    @property
    def name(self) -> str:
        return "/".join(getattr(self, f.name) for f in fields(self))


_TYPES = {"short_fft": ShortFFT, "discard": Discard, "overlap_add": OverlapAdd, "measure": Measure}


def all_readings() -> list[Reading]:
    """Every combination of the :class:`Reading` choices."""
    choices = [get_args(_TYPES[f.name]) for f in fields(Reading)]
    return [Reading(*combo) for combo in itertools.product(*choices)]


def n_fft_for(bins: int) -> int:
    """FFT size with ``bins`` one-sided frequency bins."""
    return 2 * (bins - 1)


class Framing:
    """Analysis and synthesis at one FFT size, the window at the frame start (float64).

    Args:
        config: the patch framing (window length, hop).
        n_fft: FFT size; may be shorter than the window (see ``short_fft``).
        short_fft: what a too-short FFT does to the frame (:class:`Reading`).
    """

    def __init__(self, config: FeatureConfig, n_fft: int, short_fft: ShortFFT = "wrap") -> None:
        if n_fft < config.hop_length:
            raise ValueError(
                f"n_fft={n_fft} ({n_fft // 2 + 1} bins) is shorter than the hop "
                f"({config.hop_length} samples): frames would leave gaps; use at least "
                f"{config.hop_length // 2 + 1} bins"
            )
        self.config, self.n_fft, self.short_fft = config, n_fft, short_fft
        self.win = config.win_length
        self.hop = config.hop_length
        self.window = framed_window(self.win, n_fft, 0, torch.float64)  # (n_fft,)
        self.kept = min(self.win, n_fft)  # frame samples the FFT sees

    def analyse(self, segments: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` -> complex ``(B, n_fft // 2 + 1, T)``."""
        if self.n_fft < self.win and self.short_fft == "wrap":
            # torch.stft can only cut a frame to n_fft (truncate); MATLAB's spectrogram folds it
            # (datawrap): sum the n_fft-sample pieces of each windowed frame.
            hamming = torch.hamming_window(self.win, periodic=False, dtype=segments.dtype)
            frames = segments.unfold(-1, self.win, self.hop) * hamming  # (B, T, win)
            pieces = math.ceil(self.win / self.n_fft)
            frames = F.pad(frames, (0, pieces * self.n_fft - self.win))
            frames = frames.unflatten(-1, (pieces, self.n_fft)).sum(-2)  # (B, T, n_fft)
            return torch.fft.rfft(frames).transpose(-1, -2)
        padded = F.pad(segments, (0, max(0, self.n_fft - self.win)))
        return torch.stft(
            padded,
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.n_fft,
            window=self.window,
            center=False,
            return_complex=True,
        )

    def real_part(self, segments: torch.Tensor) -> torch.Tensor:
        """The real part of :meth:`analyse` (what our patches keep)."""
        return self.analyse(segments).real

    def synthesise(
        self, spec: torch.Tensor, length: int, overlap_add: OverlapAdd = "normalised"
    ) -> torch.Tensor:
        """Complex ``(B, F, T)`` -> ``(B, length)``; samples no frame covers are zero."""
        num_frames = spec.shape[-1]
        covered = min(length, self.hop * (num_frames - 1) + self.kept)
        if overlap_add == "normalised":
            audio = torch.istft(
                spec,
                n_fft=self.n_fft,
                hop_length=self.hop,
                win_length=self.n_fft,
                window=self.window,
                center=False,
                length=covered,  # stops before the zero tail of the window, where NOLA fails
            )
        else:
            # torch.istft always divides by the window envelope; the plain sum is F.fold (col2im).
            frames = torch.fft.irfft(spec.transpose(-1, -2), n=self.n_fft)[..., : self.kept]
            audio = F.fold(
                frames.transpose(-1, -2),  # (B, kept, T)
                output_size=(1, self.hop * (num_frames - 1) + self.kept),
                kernel_size=(1, self.kept),
                stride=(1, self.hop),
            ).flatten(1)[:, :covered]
        return F.pad(audio, (0, length - covered))


def pearson(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise Pearson correlation of ``(B, N)`` tensors, over ``mask``ed samples if given
    (NaN where a row is constant)."""
    weight = torch.ones_like(a) if mask is None else mask.to(a.dtype)
    count = weight.sum(-1, keepdim=True)
    a = (a - (weight * a).sum(-1, keepdim=True) / count) * weight
    b = (b - (weight * b).sum(-1, keepdim=True) / count) * weight
    return (a * b).sum(-1) / ((a * a).sum(-1) * (b * b).sum(-1)).sqrt()


def best_lag(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak over all lags of the normalised cross-correlation (MATLAB ``xcorr(a, b, 'coeff')``)."""
    n = 2 * a.shape[-1]
    xcorr = torch.fft.irfft(torch.fft.rfft(a, n) * torch.fft.rfft(b, n).conj(), n)
    return xcorr.max(-1).values / ((a * a).sum(-1) * (b * b).sum(-1)).sqrt()


def correlate(
    original: torch.Tensor,
    rebuilt: torch.Tensor,
    measure: Measure,
    phone_mask: torch.Tensor,
    framing: Framing,
) -> torch.Tensor:
    """Per-segment correlation ``(B,)`` of audio ``(B, L)`` with its reconstruction."""
    if measure == "waveform":
        return pearson(original, rebuilt)
    if measure == "waveform_phone":
        return pearson(original, rebuilt, phone_mask)
    if measure == "best_lag":
        return best_lag(original, rebuilt)
    magnitudes = [framing.analyse(audio).abs().flatten(1) for audio in (original, rebuilt)]
    return pearson(*magnitudes)


class Table1:
    """Running means of every ``(reading, row, bins)`` cell over batches of segments.

    Segments whose correlation is undefined (a silent reconstruction) are left out of a cell and
    counted in :attr:`undefined`.
    """

    def __init__(self, readings: Sequence[Reading], bins: Sequence[int] = BINS) -> None:
        self.readings, self.bins = list(readings), tuple(bins)
        self.sums: dict[tuple[Reading, str, int], float] = {}
        self.counts: dict[tuple[Reading, str, int], int] = {}
        self.undefined = 0
        self.segments = 0

    def add(self, reading: Reading, row: str, bins: int, values: torch.Tensor) -> None:
        finite = torch.isfinite(values)
        key = (reading, row, bins)
        self.sums[key] = self.sums.get(key, 0.0) + float(values[finite].sum())
        self.counts[key] = self.counts.get(key, 0) + int(finite.sum())
        self.undefined += int((~finite).sum())

    def cell(self, reading: Reading, row: str, bins: int) -> float:
        count = self.counts.get((reading, row, bins), 0)
        return self.sums[(reading, row, bins)] / count if count else math.nan

    def distance(self, reading: Reading) -> float:
        """Root-mean-square difference from the thesis over its numeric cells (5 of 6)."""
        diffs = [
            self.cell(reading, row, bins) - value
            for row, values in THESIS_TABLE1.items()
            for bins, value in values.items()
            if value is not None and bins in self.bins
        ]
        return math.sqrt(sum(d * d for d in diffs) / len(diffs)) if diffs else math.nan

    def ranked(self) -> list[Reading]:
        """The readings, closest to the thesis first."""
        return sorted(self.readings, key=self.distance)


def evaluate(
    table: Table1,
    segments: torch.Tensor,
    phone_mask: torch.Tensor,
    config: FeatureConfig,
    griffin_lim_iters: int = 32,
) -> None:
    """Add one batch of padded segments ``(B, L)`` (float64) to every cell of ``table``."""
    table.segments += len(segments)
    for bins in table.bins:
        n_fft = n_fft_for(bins)
        for short_fft in _distinct_short_ffts(table.readings, n_fft, config.win_length):
            framing = Framing(config, n_fft, short_fft)
            readings = [
                r for r in table.readings if r.short_fft == short_fft or n_fft >= config.win_length
            ]
            inverse = real_part_inverse(config, n_fft, short_fft, segments.shape[-1])
            rebuilt = _Rebuilt(framing, segments, inverse, griffin_lim_iters)
            scores: dict[tuple, torch.Tensor] = {}
            for reading in readings:
                for row in ROWS:
                    source = rebuilt.key(row, reading)
                    if (source, reading.measure) not in scores:
                        audio = rebuilt.get(source)
                        scores[(source, reading.measure)] = correlate(
                            segments, audio, reading.measure, phone_mask, framing
                        )
                    table.add(reading, row, bins, scores[(source, reading.measure)])


@lru_cache(maxsize=4)
def real_part_inverse(
    config: FeatureConfig, n_fft: int, short_fft: ShortFFT, length: int
) -> Callable:
    """The least-squares inverse of a framing's real part (one per table column, built once)."""
    framing = Framing(config, n_fft, short_fft)
    num_frames = config.frames_for(length)
    return least_squares_inverse(
        framing.real_part, config.win_length, config.hop_length, num_frames
    )


def _distinct_short_ffts(readings: Iterable[Reading], n_fft: int, win_length: int) -> list[str]:
    """The ``short_fft`` choices that change this FFT size's analysis (none if n_fft >= window)."""
    wanted = sorted({r.short_fft for r in readings})
    return wanted if n_fft < win_length else wanted[:1]


class _Rebuilt:
    """The reconstructions of one analysed batch, each computed once, when first asked for."""

    def __init__(
        self, framing: Framing, segments: torch.Tensor, real_inverse: Callable, iters: int
    ) -> None:
        self.framing, self.real_inverse, self.iters = framing, real_inverse, iters
        self.length = segments.shape[-1]
        self.spec = framing.analyse(segments)
        self.audio: dict[tuple, torch.Tensor] = {}
        self._griffin_lim: torch.Tensor | None = None

    @staticmethod
    def key(row: str, reading: Reading) -> tuple:
        if row == "available":
            return ("available", None, reading.overlap_add)
        if row == "discarded":
            return ("discarded", reading.discard, reading.overlap_add)
        return ("real_part", None, None)

    def get(self, key: tuple) -> torch.Tensor:
        if key not in self.audio:
            row, discard, overlap_add = key
            if row == "real_part":
                self.audio[key] = self.real_inverse(self.spec.real)
            else:
                spec = self.spec if row == "available" else self._without_phase(discard)
                self.audio[key] = self.framing.synthesise(spec, self.length, overlap_add)
        return self.audio[key]

    def _without_phase(self, discard: Discard) -> torch.Tensor:
        zeros = torch.zeros_like(self.spec.real)
        if discard == "real_part":
            return torch.complex(self.spec.real, zeros)
        if discard == "zero_phase":
            return torch.complex(self.spec.abs(), zeros)
        if self._griffin_lim is None:
            self._griffin_lim = griffin_lim(
                self.spec.abs(),
                self.framing.analyse,
                lambda spec: self.framing.synthesise(spec, self.length),
                self.iters,
            )
        return self._griffin_lim


__all__ = [
    "BINS",
    "ROWS",
    "THESIS_TABLE1",
    "Discard",
    "Framing",
    "Measure",
    "OverlapAdd",
    "Reading",
    "ShortFFT",
    "Table1",
    "all_readings",
    "best_lag",
    "correlate",
    "evaluate",
    "n_fft_for",
    "pearson",
    "real_part_inverse",
]
