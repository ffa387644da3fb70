"""Writing utterances in TIMIT layout: NIST SPHERE (or RIFF) audio plus .PHN/.WRD/.TXT.

Used by the synthetic corpus, by benchmarks and by tests, so that everything downstream reads
exactly the files a user's TIMIT copy contains.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

SPHERE_HEADER_BYTES = 1024

AudioFormat = Literal["sphere", "riff", "flac"]


@dataclass(frozen=True)
class Segment:
    """A labelled span ``[start, end)`` in samples, as in TIMIT's .PHN and .WRD files."""

    start: int
    end: int
    label: str


def sphere_header(num_samples: int, sample_rate: int = 16000, **fields: str | int) -> bytes:
    """A 1024-byte NIST SPHERE header for 16-bit little-endian mono PCM, as TIMIT ships it."""
    lines = [
        "NIST_1A",
        f"   {SPHERE_HEADER_BYTES}",
        *(
            f"{key} -i {value}" if isinstance(value, int) else f"{key} -s{len(value)} {value}"
            for key, value in fields.items()
        ),
        f"sample_count -i {num_samples}",
        f"sample_rate -i {sample_rate}",
        "channel_count -i 1",
        "sample_byte_format -s2 01",
        "sample_n_bytes -i 2",
        "sample_sig_bits -i 16",
        "sample_coding -s3 pcm",
        "end_head",
    ]
    text = ("\n".join(lines) + "\n").encode("ascii")
    if len(text) > SPHERE_HEADER_BYTES:
        raise ValueError(f"SPHERE header fields too long ({len(text)} bytes > 1024)")
    return text.ljust(SPHERE_HEADER_BYTES, b" ")


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] (or int16 already) to int16 samples, clipping."""
    if audio.dtype == np.int16:
        return audio
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(
        np.int16
    )


def write_sphere(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Write mono audio as NIST SPHERE (1024-byte header, 16-bit little-endian PCM)."""
    samples = to_int16(audio)
    with open(path, "wb") as fh:
        fh.write(sphere_header(len(samples), sample_rate))
        fh.write(samples.astype("<i2").tobytes())


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

    def case(name: str) -> str:
        return name.lower() if lowercase else name.upper()

    folder = Path(root) / case(split) / case(dialect) / case(speaker)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / case(sentence)
    wav_ext = case(".wav")
    if audio_format == "sphere":
        audio_path = stem.with_suffix(wav_ext)
        write_sphere(audio_path, audio, sample_rate)
    elif audio_format == "riff":
        audio_path = stem.with_name(stem.name + wav_ext + ".wav")
        sf.write(audio_path, to_int16(audio), sample_rate, subtype="PCM_16", format="WAV")
    elif audio_format == "flac":
        audio_path = stem.with_suffix(".flac")
        sf.write(audio_path, to_int16(audio), sample_rate, subtype="PCM_16", format="FLAC")
    else:
        raise ValueError(f"audio_format must be 'sphere', 'riff' or 'flac', got {audio_format!r}")
    write_segments(stem.with_suffix(case(".phn")), phones)
    write_segments(stem.with_suffix(case(".wrd")), words)
    end = int(phones[-1].end) if phones else len(audio)
    stem.with_suffix(case(".txt")).write_text(f"0 {end} {text}\n")
    return audio_path


__all__ = [
    "AudioFormat",
    "Segment",
    "sphere_header",
    "write_segments",
    "write_sphere",
    "write_utterance",
]
