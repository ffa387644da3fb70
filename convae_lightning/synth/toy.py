"""Toy TIMIT-layout corpora of synthetic tones, for tests and benchmarks.

Each phone class sounds like a fixed chord plus noise, so models can learn to tell classes apart;
files are real SPHERE/RIFF/FLAC with real ``.PHN`` offsets, read through the same code as TIMIT.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convae_lightning.data.phones import PHONES_61
from convae_lightning.data.timit import Segment
from convae_lightning.synth.layout import AudioFormat, write_utterance

#: Labels that sound like silence (low noise) rather than a chord.
_SILENT = ("h#", "pau", "epi")


def phone_audio(label: str, length: int, rng: np.random.Generator, rate: int) -> np.ndarray:
    """``length`` samples of one phone: its class's chord (random phase, Hann envelope) + noise."""
    label = label.lower()
    if label in _SILENT:
        return rng.normal(0.0, 0.002, length)
    k = PHONES_61.index(label)
    t = np.arange(length) / rate
    base = 150.0 + 60.0 * k
    tone = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3))
    envelope = np.hanning(length) if length > 4 else np.ones(length)
    return 0.2 * tone * envelope + rng.normal(0.0, 0.01, length)


def toy_phones(
    labels: Sequence[str],
    lengths: Sequence[int],
    rng: np.random.Generator,
    sample_rate: int = 16000,
    gap: int = 0,
) -> tuple[np.ndarray, list[Segment]]:
    """The audio of ``labels`` spoken for ``lengths`` samples each and their ``.PHN`` segments.

    ``gap`` samples of silence separate adjacent phones, unlabelled (as in places in real TIMIT).
    """
    audio, segments, cursor = [], [], 0
    for i, (label, length) in enumerate(zip(labels, lengths, strict=True)):
        if i and gap:
            audio.append(np.zeros(gap))
            cursor += gap
        audio.append(phone_audio(label, int(length), rng, sample_rate))
        segments.append(Segment(cursor, cursor + int(length), label))
        cursor += int(length)
    return np.concatenate(audio), segments


def write_toy_utterance(
    root: str | os.PathLike,
    utterance_id: str,
    lengths: Sequence[int],
    labels: Sequence[str] | None = None,
    sample_rate: int = 16000,
    audio_format: AudioFormat = "sphere",
    lowercase: bool = False,
    gap: int = 0,
    seed: int | np.random.Generator = 0,
) -> Path:
    """Write one toy utterance and return its audio path.

    ``utterance_id`` is ``SPLIT/DRn/SPEAKER/SENTENCE`` (e.g. ``TRAIN/DR1/FCJF0/SI1027``); phones
    have the given ``lengths`` in samples, with ``labels`` (default ``h# aa ... aa h#``). ``seed``
    may be a generator that a whole corpus draws from.
    """
    split, dialect, speaker, sentence = utterance_id.split("/")
    if labels is None:
        labels = ["h#"] + ["aa"] * (len(lengths) - 2) + ["h#"]
    rng = np.random.default_rng(seed)  # a Generator passes through unchanged
    audio, segments = toy_phones(labels, lengths, rng, sample_rate, gap)
    return write_utterance(
        root,
        split,
        dialect,
        speaker,
        sentence,
        audio,
        segments,
        text="toy sentence",
        sample_rate=sample_rate,
        audio_format=audio_format,
        lowercase=lowercase,
    )


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
                write_toy_utterance(
                    root,
                    f"{split}/{dialect}/{speaker}/{sentence}",
                    lengths,
                    seq,
                    sample_rate,
                    audio_format,
                    lowercase,
                    seed=rng,
                )
    return root


__all__ = ["phone_audio", "toy_phones", "write_toy_corpus", "write_toy_utterance"]
