"""Writing utterances in TIMIT layout: NIST SPHERE (or RIFF, FLAC) audio plus .PHN/.WRD/.TXT.

Used by the synthetic corpus, the toy corpora, benchmarks and tests, so that everything
downstream reads exactly the files a user's TIMIT copy contains. SPHERE is written by soundfile
(libsndfile's ``NIST`` format): a 1024-byte ``NIST_1A`` header with ``sample_count``,
``sample_rate`` and little-endian 16-bit PCM, as TIMIT ships it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import soundfile as sf

from convae_lightning.data.timit import Segment

AudioFormat = Literal["sphere", "riff", "flac"]
AUDIO_FORMATS: tuple[str, ...] = get_args(AudioFormat)

#: soundfile's container of each format.
_CONTAINERS = {"sphere": "NIST", "riff": "WAV", "flac": "FLAC"}


def check_audio_format(audio_format: str) -> None:
    """Raises ``ValueError`` naming the allowed formats if ``audio_format`` is not one of them."""
    if audio_format not in AUDIO_FORMATS:
        allowed = ", ".join(repr(f) for f in AUDIO_FORMATS)
        raise ValueError(f"audio_format must be one of {allowed}, got {audio_format!r}")


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] (or int16 already) to int16 samples, clipping.

    Every format gets the same int16 samples, so the layouts read back identically.
    """
    if audio.dtype == np.int16:
        return audio
    scaled = np.round(np.asarray(audio, dtype=np.float64) * 32767.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int = 16000,
    audio_format: AudioFormat = "sphere",
) -> None:
    """Write mono 16-bit PCM audio as NIST SPHERE, RIFF WAV or FLAC."""
    check_audio_format(audio_format)
    container = _CONTAINERS[audio_format]
    sf.write(path, to_int16(audio), sample_rate, subtype="PCM_16", format=container)


def write_segments(path: str | os.PathLike, segments: Sequence[Segment]) -> None:
    """Write a .PHN or .WRD file: one ``start end label`` line per segment."""
    Path(path).write_text("".join(f"{s.start} {s.end} {s.label}\n" for s in segments))


def write_utterance(
    root: str | os.PathLike,
    split: str,
    dialect: str,
    speaker: str,
    sentence: str,
    audio: np.ndarray,
    phones: Sequence[Segment],
    words: Sequence[Segment] = (),
    text: str = "",
    sample_rate: int = 16000,
    audio_format: AudioFormat = "sphere",
    lowercase: bool = False,
) -> Path:
    """Write one utterance in TIMIT layout and return the audio path.

    ``split``/``dialect``/``speaker``/``sentence`` are e.g. ``TRAIN``/``DR1``/``FCJF0``/``SI1027``.
    ``audio_format="riff"`` writes the common ``SI1027.WAV.wav`` RIFF copy instead of SPHERE;
    ``"flac"`` writes ``SI1027.flac`` (the compact form the embedded corpus ships in).
    """
    check_audio_format(audio_format)

    def case(name: str) -> str:
        return name.lower() if lowercase else name.upper()

    folder = Path(root) / case(split) / case(dialect) / case(speaker)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / case(sentence)
    suffix = {"sphere": case(".wav"), "riff": case(".wav") + ".wav", "flac": ".flac"}
    audio_path = stem.with_name(stem.name + suffix[audio_format])
    write_audio(audio_path, audio, sample_rate, audio_format)
    write_segments(stem.with_suffix(case(".phn")), phones)
    write_segments(stem.with_suffix(case(".wrd")), words)
    end = int(phones[-1].end) if phones else len(audio)
    stem.with_suffix(case(".txt")).write_text(f"0 {end} {text}\n")
    return audio_path


__all__ = [
    "AUDIO_FORMATS",
    "AudioFormat",
    "check_audio_format",
    "to_int16",
    "write_audio",
    "write_segments",
    "write_utterance",
]
