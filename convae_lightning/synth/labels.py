"""Festival's segments -> TIMIT's 61 phone labels, in samples.

Festival's US voices use the "radio" phone set (ARPAbet), which TIMIT spells the same way for most
phones; the differences are handled here (``docs/corpus.md`` has the full table).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convae_lightning.data.phones import PHONES_61
from convae_lightning.data.timit import Segment

#: The corpus's sample rate, TIMIT's.
SAMPLE_RATE = 16000

# Festival's US ("radio") phones that TIMIT's 61-label set spells the same way pass through.
# Stops and affricates are split into closure + release (TIMIT labels the closure separately;
# Festival does not): the closure label of each.
CLOSURES: dict[str, str] = {
    "p": "pcl",
    "t": "tcl",
    "k": "kcl",
    "b": "bcl",
    "d": "dcl",
    "g": "gcl",
    "ch": "tcl",
    "jh": "dcl",
}
# Festival labels that need renaming (besides pau, which becomes h# at either end).
FESTIVAL_TO_TIMIT: dict[str, str] = {"brth": "pau", "h#": "h#"}

# Closure/release split (see docs/corpus.md): the release starts at the strongest rise of
# short-time energy inside the stop, searched in [20 %, 90 %] of its duration, when that rise is
# at least 6 dB; otherwise the first 60 % is the closure. Both parts keep >= 5 ms.
_BURST_WINDOW = (0.2, 0.9)
_BURST_MIN_RISE_DB = 6.0
_CLOSURE_FALLBACK = 0.6
_MIN_PART = 80  # samples (5 ms)
_ENERGY_HOP = 16  # samples (1 ms)


def read_festival_labels(
    path: Path,
) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]]]:
    """Segments ``(label, end s)`` and words ``(word, start s, end s)`` that ``synth.scm`` wrote."""
    segments: list[tuple[str, float]] = []
    words: list[tuple[str, float, float]] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "S":
            segments.append((parts[1], float(parts[2])))
        elif parts and parts[0] == "W":
            words.append((parts[1], float(parts[2]), float(parts[3])))
    return segments, words


def _burst(audio: np.ndarray, start: int, end: int) -> int:
    """Sample where a stop's release starts (documented rule, see module constants)."""
    length = end - start
    fallback = start + round(_CLOSURE_FALLBACK * length)
    x = audio[start:end].astype(np.float64)
    blocks = len(x) // _ENERGY_HOP
    if blocks >= 4:
        energy = (x[: blocks * _ENERGY_HOP].reshape(blocks, _ENERGY_HOP) ** 2).mean(axis=1)
        level = 10.0 * np.log10(energy + 1e-10)
        rise = level[1:] - level[:-1]  # rise[i]: block i -> i + 1
        lo = max(int(_BURST_WINDOW[0] * blocks), 0)
        hi = min(int(_BURST_WINDOW[1] * blocks), blocks - 1)
        if hi > lo:
            best = lo + int(np.argmax(rise[lo:hi]))
            if rise[best] >= _BURST_MIN_RISE_DB:
                fallback = start + (best + 1) * _ENERGY_HOP
    return int(min(max(fallback, start + _MIN_PART), end - _MIN_PART))


def festival_to_timit(
    segments: Sequence[tuple[str, float]], audio: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> list[Segment]:
    """Map Festival's segments (label, end time in s) onto TIMIT .PHN segments in samples.

    Leading and trailing ``pau`` become ``h#``, inner ones ``pau``; stops and affricates are
    split into closure + release at the burst; other labels must be TIMIT labels already.
    The last segment ends at ``len(audio)``.

    Raises:
        ValueError: if Festival produced a label that has no TIMIT counterpart.
    """
    out: list[Segment] = []
    start = 0
    for k, (name, end_s) in enumerate(segments):
        end = len(audio) if k == len(segments) - 1 else min(round(end_s * sample_rate), len(audio))
        if end <= start:
            continue  # zero-length after rounding
        if name == "pau":
            label = "h#" if k in (0, len(segments) - 1) else "pau"
        else:
            label = FESTIVAL_TO_TIMIT.get(name, name)
        if label not in PHONES_61:
            raise ValueError(
                f"Festival produced phone {name!r}, which has no TIMIT label; "
                "extend FESTIVAL_TO_TIMIT in convae_lightning/synth/labels.py"
            )
        if label in CLOSURES and end - start >= 2 * _MIN_PART:
            burst = _burst(audio, start, end)
            out.append(Segment(start, burst, CLOSURES[label]))
            out.append(Segment(burst, end, label))
        else:
            out.append(Segment(start, end, label))
        start = end
    return out


__all__ = [
    "CLOSURES",
    "FESTIVAL_TO_TIMIT",
    "SAMPLE_RATE",
    "festival_to_timit",
    "read_festival_labels",
]
