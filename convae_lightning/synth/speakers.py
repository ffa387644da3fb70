"""Synthetic speakers: a Festival voice with its own pitch, rate, vocal tract and channel.

Each speaker is drawn reproducibly from ``(seed, index)``, so adding speakers keeps the others;
``docs/corpus.md`` gives the ranges and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_SPEAKERS = 1000
# Prompts are SX100..SX999: train speakers read SX100..SX699, test speakers SX700..SX999, so a
# test sentence is never a training sentence (as in TIMIT's core test set).
TRAIN_PROMPTS = range(100, 700)
TEST_PROMPTS = range(700, 1000)
MAX_SENTENCES = len(TEST_PROMPTS)


@dataclass(frozen=True)
class Voice:
    """A Festival voice the synthesiser knows how to drive."""

    name: str
    engine: str  # "diphone" (kal/ked: int_lr_params + Duration_Stretch) or "hts" (-fm, -r)
    sex: str  # the recorded speaker's sex, "M" or "F"
    sample_rate: int
    f0_mean: float  # the voice's own mean F0 in Hz (measured; the HTS voice's cannot be set)


VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        Voice("kal_diphone", "diphone", "M", 16000, 105.0),
        Voice("ked_diphone", "diphone", "M", 16000, 105.0),
        Voice("cmu_us_slt_arctic_hts", "hts", "F", 32000, 175.0),
    )
}
DEFAULT_VOICES: tuple[str, ...] = tuple(VOICES)


@dataclass(frozen=True)
class SpeakerProfile:
    """One synthetic speaker: voice, prosody, vocal-tract and channel settings."""

    index: int
    speaker_id: str  # TIMIT style: sex letter + 3 initials + digit, e.g. "MKAL0"
    split: str  # "TRAIN" or "TEST"
    dialect: str  # "DR1".."DR8"
    voice: str
    sex: str
    f0_mean: float  # Hz, after the vocal-tract scaling
    f0_std: float  # Hz (diphone voices only; the HTS voice keeps its own range)
    rate: float  # duration factor (> 1 is slower)
    vtl: int  # formant scale is vtl / 50 (resampling ratio, kept rational so it is exact)
    highpass_hz: float
    lowpass_hz: float
    snr_db: float
    peak: float  # peak amplitude of the utterance in [0, 1]

    @property
    def formant_scale(self) -> float:
        """Factor on all frequencies (formants and F0) from the vocal-tract resampling."""
        return self.vtl / 50.0


def make_speakers(
    count: int, seed: int, voices: Sequence[str] = DEFAULT_VOICES
) -> list[SpeakerProfile]:
    """Draw ``count`` reproducible speakers; speaker ``i`` depends only on ``(seed, i, voices)``.

    Voices rotate over speakers; every fourth speaker (and the last one of a corpus with fewer
    than four) is a TEST speaker, so about a quarter of the speakers are held out. The male
    diphone voices also make female speakers (30 %), by raising pitch and formants; the HTS
    voice's pitch cannot be set, so its (female) speakers differ by vocal-tract length and rate.

    Args:
        count: number of speakers, 2..1000.
        seed: corpus seed.
        voices: Festival voice names, each one of ``VOICES``.

    Raises:
        ValueError: if ``count`` is out of range or a voice is unknown.
    """
    check_range("speakers", count, 2, MAX_SPEAKERS)
    check_voice_names(voices)
    used: set[str] = set()
    speakers = []
    for i in range(count):
        rng = np.random.default_rng([seed, i, 0x5BEA])
        voice = VOICES[voices[i % len(voices)]]
        if voice.engine == "hts":
            # Festival's HTS module ignores hts_engine's pitch shift (-fm), so this voice's F0
            # moves only with the vocal-tract scaling (together with the formants): female only.
            sex = voice.sex
            vtl = int(rng.integers(44, 57))
            f0 = voice.f0_mean * vtl / 50
        elif rng.random() < 0.3:  # the male diphone voices also make female speakers
            sex = "F"
            f0 = rng.uniform(160.0, 240.0)
            vtl = int(rng.integers(54, 58))
        else:
            sex = "M"
            f0 = rng.uniform(85.0, 145.0)
            vtl = int(rng.integers(47, 53))
        letters = "".join(chr(ord("A") + int(k)) for k in rng.integers(0, 26, size=3))
        digit = 0
        while f"{sex}{letters}{digit}" in used:
            digit += 1
            if digit == 10:
                letters, digit = letters[1:] + letters[0], 0
        speaker_id = f"{sex}{letters}{digit}"
        used.add(speaker_id)
        test = i % 4 == 3 or (count < 4 and i == count - 1)
        speakers.append(
            SpeakerProfile(
                index=i,
                speaker_id=speaker_id,
                split="TEST" if test else "TRAIN",
                # Rotated so that TRAIN and TEST speakers both spread over DR1..DR8.
                dialect=f"DR{(i % 4 + i // 4) % 8 + 1}",
                voice=voice.name,
                sex=sex,
                f0_mean=round(float(f0), 1),
                f0_std=round(float(f0 * rng.uniform(0.08, 0.2)), 1)
                if voice.engine == "diphone"
                else 0.0,
                rate=round(float(rng.uniform(0.85, 1.2)), 3),
                vtl=vtl,
                highpass_hz=round(float(rng.uniform(50.0, 200.0)), 1),
                lowpass_hz=round(float(rng.uniform(5500.0, 7800.0)), 1),
                snr_db=round(float(rng.uniform(30.0, 45.0)), 1),
                peak=round(float(rng.uniform(0.2, 0.6)), 3),
            )
        )
    return speakers


def prompts_for(speaker: SpeakerProfile, rank: int, sentences: int) -> list[int]:
    """The prompt (SX) numbers that a speaker reads: consecutive in its split's pool.

    ``rank`` is the speaker's position among the speakers of its split, so that neighbours read
    different prompts until the pool wraps (then several speakers share one, as in TIMIT).
    """
    pool = TRAIN_PROMPTS if speaker.split == "TRAIN" else TEST_PROMPTS
    return [pool[(rank * sentences + j) % len(pool)] for j in range(sentences)]


@dataclass(frozen=True)
class Reading:
    """One speaker reading one prompt: one utterance to synthesise."""

    speaker: SpeakerProfile
    prompt: int
    text: str

    @property
    def sentence(self) -> str:
        return f"SX{self.prompt}"

    @property
    def key(self) -> str:
        """The utterance's path below the corpus root, e.g. ``TRAIN/DR1/MKAL0/SX123``."""
        speaker = self.speaker
        return f"{speaker.split}/{speaker.dialect}/{speaker.speaker_id}/{self.sentence}"


def check_voice_names(voices: Sequence[str]) -> None:
    """Raises ``ValueError`` with the known voices unless ``voices`` is a non-empty subset."""
    if not voices or any(v not in VOICES for v in voices):
        raise ValueError(f"voices must be a non-empty subset of {list(VOICES)}, got {voices}")


def check_range(name: str, value: int, lo: int, hi: int) -> None:
    """Raises ``ValueError`` naming ``name``, the range and the value unless in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


__all__ = [
    "DEFAULT_VOICES",
    "MAX_SENTENCES",
    "MAX_SPEAKERS",
    "VOICES",
    "Reading",
    "SpeakerProfile",
    "Voice",
    "check_range",
    "check_voice_names",
    "make_speakers",
    "prompts_for",
]
