"""Where a patch's squared norm lies, for ``convae data prepare --profile``.

The Euclidean error weights each entry of a mean-removed patch by its square, so whatever holds
most of the squared norm is what an autoencoder learns to draw first. For the real-part
spectrogram that is the phone; for a log feature it can be the zero padding around the phone,
which the logarithm turns into a floor far below speech (-100 dB): the patch's norm then sits
at the phone's edges, and a reconstruction that draws the edges scores well without the phone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from convae_lightning.data.extract import centred_offsets
from convae_lightning.data.features import FeatureConfig

#: Patches read at a time (a bound on memory, not a tuning knob).
CHUNK = 4096


@dataclass(frozen=True)
class EnergyProfile:
    """Shares of the mean-removed patches' squared norm, averaged over patches.

    ``frame_share`` (T,) and ``row_share`` (F, channels summed) each sum to 1;
    ``padding_share`` is the share in frames that hold zero padding only, and
    ``padding_frames`` the mean fraction of such frames (what the share would be if every frame
    weighed the same); ``rms`` is the entries' root mean square after the mean is removed, the
    scale a network's initialisation and learning rate meet.
    """

    patches: int
    rms: float
    frame_share: np.ndarray
    row_share: np.ndarray
    padding_share: float
    padding_frames: float


def padding_only_frames(
    lengths: np.ndarray, segment_length: int, num_frames: int, features: FeatureConfig
) -> np.ndarray:
    """``(N, T)`` booleans: frames whose window lies wholly in the zero padding around a phone.

    Phones sit where the cache builder puts them (:func:`centred_offsets`); frame ``t`` reads
    samples ``[t * hop, t * hop + win)`` of the segment.
    """
    starts = centred_offsets(lengths, segment_length)
    ends = starts + np.asarray(lengths, dtype=np.int64)
    frame_starts = np.arange(num_frames) * features.hop_length
    frame_ends = frame_starts + features.win_length
    return (frame_ends[None, :] <= starts[:, None]) | (frame_starts[None, :] >= ends[:, None])


def energy_profile(
    patches: np.ndarray, mean: np.ndarray, padding: np.ndarray, chunk: int = CHUNK
) -> EnergyProfile:
    """Profile ``patches`` ``(N, C, F, T)`` (as cached, before ``mean`` is removed) against the
    ``(N, T)`` padding mask of :func:`padding_only_frames`. Patches equal to the mean (no
    squared norm to share) are left out.

    Raises:
        ValueError: shapes that do not match, or no patch with a nonzero norm.
    """
    if patches.ndim != 4 or mean.shape != patches.shape[1:]:
        raise ValueError(f"patches {patches.shape} and mean {mean.shape} do not match")
    if padding.shape != (patches.shape[0], patches.shape[-1]):
        raise ValueError(f"padding mask {padding.shape} does not match patches {patches.shape}")
    num_rows, num_frames = patches.shape[2], patches.shape[3]
    frame_sum, row_sum = np.zeros(num_frames), np.zeros(num_rows)
    padding_sum, padding_frames, squared_sum, counted = 0.0, 0.0, 0.0, 0
    for begin in range(0, patches.shape[0], chunk):
        centred = np.asarray(patches[begin : begin + chunk], dtype=np.float64) - mean
        squares = np.square(centred).sum(axis=1)  # (n, F, T)
        totals = squares.sum(axis=(1, 2))
        squared_sum += float(totals.sum())
        kept = totals > 0
        if not kept.any():
            continue
        squares, totals = squares[kept], totals[kept, None]
        per_frame = squares.sum(axis=1) / totals  # (n, T)
        mask = padding[begin : begin + chunk][kept]
        frame_sum += per_frame.sum(axis=0)
        row_sum += (squares.sum(axis=2) / totals).sum(axis=0)
        padding_sum += float((per_frame * mask).sum())
        padding_frames += float(mask.mean(axis=1).sum())
        counted += int(kept.sum())
    if counted == 0:
        raise ValueError("every patch equals the mean: there is no squared norm to profile")
    return EnergyProfile(
        patches=counted,
        rms=float(np.sqrt(squared_sum / (counted * mean.size))),
        frame_share=frame_sum / counted,
        row_share=row_sum / counted,
        padding_share=padding_sum / counted,
        padding_frames=padding_frames / counted,
    )


def print_profile(profile: EnergyProfile, title: str, console: Console | None = None) -> None:
    """The padding share beside the share of padding frames, then the per-frame shares and the
    rows that hold most of the norm."""
    console = console or Console()
    table = Table(title=f"{title}: where the mean-removed squared norm lies", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("patches", str(profile.patches))
    table.add_row("rms of an entry", f"{profile.rms:.4g}")
    table.add_row(
        "frames of zero padding only",
        f"{profile.padding_share:.1%} of the norm ({profile.padding_frames:.1%} of the frames)",
    )
    table.add_row("per frame (%)", " ".join(f"{100 * s:.1f}" for s in profile.frame_share))
    top = np.argsort(profile.row_share)[::-1][:5]
    table.add_row("top rows", ", ".join(f"{r}: {profile.row_share[r]:.1%}" for r in top))
    console.print(table)


def save_profile_figure(profile: EnergyProfile, title: str, path: str | os.PathLike) -> Path:
    """A PNG of the per-frame and per-row shares: where the Euclidean error looks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (by_frame, by_row) = plt.subplots(1, 2, figsize=(10, 3.2))
    by_frame.bar(np.arange(profile.frame_share.size), 100 * profile.frame_share)
    by_frame.set(xlabel="frame", ylabel="% of squared norm", title="per frame")
    by_row.plot(100 * profile.row_share)
    by_row.set(xlabel="row (frequency bin / band / coefficient)", title="per row")
    fig.suptitle(f"{title}: {profile.padding_share:.0%} of the norm in padding-only frames")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
