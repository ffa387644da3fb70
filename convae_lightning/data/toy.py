"""Toy TIMIT-layout corpora of synthetic tones, for tests and benchmarks.

Each phone class sounds like a fixed chord plus noise, so models can learn to tell classes apart;
files are real SPHERE/RIFF/FLAC with real ``.PHN`` offsets, read through the same code as TIMIT.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convae_lightning.data.layout import AudioFormat, Segment, write_utterance
from convae_lightning.data.phones import PHONES_61


def _phone_audio(label: str, length: int, rng: np.random.Generator, rate: int) -> np.ndarray:
    if label in ("h#", "pau", "epi"):
        return rng.normal(0.0, 0.002, length)
    k = PHONES_61.index(label)
    t = np.arange(length) / rate
    base = 150.0 + 60.0 * k
    tone = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3))
    envelope = np.hanning(length) if length > 4 else np.ones(length)
    return 0.2 * tone * envelope + rng.normal(0.0, 0.01, length)


def write_toy_corpus(
    root: str | os.PathLike,
    speakers: dict[str, int] | None = None,
    sentences: int = 3,
    phones_per_sentence: int = 20,
    labels: tuple[str, ...] = PHONES_61,
    sample_rate: int = 16000,
    audio_format: AudioFormat = "sphere",
    lowercase: bool = False,
    include_sa: bool = True,
    seed: int = 0,
) -> Path:
    """Write a toy corpus: ``speakers`` maps split name (``TRAIN``/``TEST``) to a speaker count.

    Phone lengths follow a gamma distribution around 80 ms with a few long outliers, like
    TIMIT's. Every speaker also gets ``SA1`` (when ``include_sa``) so SA filtering can be tested.
    """
    speakers = speakers or {"TRAIN": 4, "TEST": 2}
    rng = np.random.default_rng(seed)
    root = Path(root)
    body = [label for label in labels if label not in ("h#",)]
    for split, count in speakers.items():
        for s in range(count):
            dialect = f"DR{s % 8 + 1}"
            speaker = f"{'MF'[s % 2]}{split[:2]}{chr(65 + s // 10)}{s % 10}"
            names = [f"SX{100 + 5 * s + i}" for i in range(sentences)]
            names += ["SA1"] if include_sa else []
            for sentence in names:
                seq = ["h#", *rng.choice(body, size=phones_per_sentence), "h#"]
                lengths = np.clip(rng.gamma(4.0, 0.02 * sample_rate, len(seq)), 200, None)
                lengths = (lengths * rng.choice([1.0, 3.0], len(seq), p=[0.95, 0.05])).astype(int)
                segments, audio, cursor = [], [], 0
                for label, length in zip(seq, lengths, strict=True):
                    audio.append(_phone_audio(label, int(length), rng, sample_rate))
                    segments.append(Segment(cursor, cursor + int(length), label))
                    cursor += int(length)
                write_utterance(
                    root,
                    split,
                    dialect,
                    speaker,
                    sentence,
                    np.concatenate(audio),
                    segments,
                    text="toy sentence",
                    sample_rate=sample_rate,
                    audio_format=audio_format,
                    lowercase=lowercase,
                )
    return root


__all__ = ["write_toy_corpus"]
