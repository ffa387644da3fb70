"""A license-free speech corpus in exact TIMIT layout, synthesised with Festival.

TIMIT is licensed, so tests, examples and studies that must run on a fresh machine use this
corpus instead: real (synthetic) speech whose phone boundaries come from Festival's ``Segment``
relation, written as ``TRAIN|TEST/DRn/SPKR/SXnnn.WAV`` (NIST SPHERE, 16 kHz) with ``.PHN``
(TIMIT's 61 labels, in samples), ``.WRD`` and ``.TXT``.

Pipeline per utterance (see ``docs/corpus.md`` for the design and the label mapping):

1. A seeded grammar (``festival/templates.txt`` over ``festival/words.txt``) makes the sentence.
2. Festival (``festival -b``; one process per speaker, ``workers`` in parallel) synthesises it
   with the speaker's voice, pitch mean/range and rate, and writes each segment's end time.
3. Python resamples to 16 kHz, scales the formants (a vocal-tract-length factor), maps Festival's
   phones onto TIMIT's (stops and affricates split into closure + release at the burst), and
   applies the speaker's channel (band-limiting filter, gain, low noise).

Example:
    >>> synthesize_corpus("synthetic_timit", speakers=8, sentences=5, seed=0)  # doctest: +SKIP

or ``convae data synth synthetic_timit --speakers 8 --sentences 5 --seed 0``. The corpus shipped
inside the package is regenerated with ``python -m convae_lightning.data.synth --embedded``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from convae_lightning.data.layout import AudioFormat, Segment, write_utterance
from convae_lightning.data.phones import MAP_61_TO_48, PHONES_48, PHONES_61

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: Debian packages that provide Festival, the three voices and the US lexicon.
FESTIVAL_PACKAGES: tuple[str, ...] = (
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "festlex-cmu",
)
INSTALL_HINT = "sudo apt-get install " + " ".join(FESTIVAL_PACKAGES)

#: Bumped whenever the same options would produce a different corpus (resume checks it).
SYNTH_VERSION = 1

MANIFEST_NAME = "SYNTH_MANIFEST.json"
DONE_NAME = ".done"

MAX_SPEAKERS = 1000
# Prompts are SX100..SX999: train speakers read SX100..SX699, test speakers SX700..SX999, so a
# test sentence is never a training sentence (as in TIMIT's core test set).
TRAIN_PROMPTS = range(100, 700)
TEST_PROMPTS = range(700, 1000)
MAX_SENTENCES = len(TEST_PROMPTS)

#: Options of the corpus shipped in ``convae_lightning/corpus`` (``--embedded``).
EMBEDDED_OPTIONS: dict[str, object] = {
    "speakers": 24,
    "sentences": 5,
    "seed": 0,
    "audio_format": "flac",
}


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
_MAX_EDGE_SILENCE = 2400  # samples (150 ms) of leading/trailing h# kept


class FestivalNotFoundError(RuntimeError):
    """Festival (or a voice it needs) is not installed."""


# --------------------------------------------------------------------------------------------
# Sentences


@dataclass(frozen=True)
class Grammar:
    """Word categories and sentence templates that generate the prompts reproducibly."""

    words: dict[str, tuple[str, ...]]
    templates: tuple[str, ...]

    @classmethod
    def load(
        cls, word_list: str | os.PathLike | None = None, templates: str | os.PathLike | None = None
    ) -> Grammar:
        """Read a word list (``category: word word ...`` lines) and templates (``{category}``).

        Args:
            word_list: file in ``festival/words.txt``'s format; ``None`` for the shipped one.
            templates: file in ``festival/templates.txt``'s format; ``None`` for the shipped one.

        Raises:
            ValueError: if the word list has no words, a line is malformed, or a template uses a
                category that the word list lacks.
            FileNotFoundError: if a file does not exist.
        """
        data = resources.files("convae_lightning.data") / "festival"
        word_text = Path(word_list).read_text() if word_list else (data / "words.txt").read_text()
        template_text = (
            Path(templates).read_text() if templates else (data / "templates.txt").read_text()
        )
        where = str(word_list or "festival/words.txt")
        words: dict[str, tuple[str, ...]] = {}
        for number, raw in enumerate(word_text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            category, sep, rest = line.partition(":")
            if not sep or not category.strip().isidentifier():
                raise ValueError(
                    f"{where}:{number}: expected 'category: word word ...', got {raw!r}"
                )
            entries = tuple(w for w in rest.split() if w)
            bad = [w for w in entries if not w.replace("'", "").replace("-", "").isalpha()]
            if bad:
                raise ValueError(f"{where}:{number}: words must be letters only, got {bad}")
            if entries:
                words[category.strip()] = entries
        if not words:
            raise ValueError(f"word list {where} contains no words")
        lines = [t.split("#", 1)[0].strip() for t in template_text.splitlines()]
        template_list = tuple(t for t in lines if t)
        if not template_list:
            raise ValueError(f"templates {templates or 'festival/templates.txt'} are empty")
        import string

        for template in template_list:
            for _, field, _, _ in string.Formatter().parse(template):
                if field is not None and field not in words:
                    raise ValueError(
                        f"template {template!r} uses category {{{field}}}, which word list "
                        f"{where} lacks (it has: {', '.join(sorted(words))})"
                    )
        return cls(words, template_list)

    def sentence(self, seed: int, prompt: int) -> str:
        """The text of prompt number ``prompt``; depends only on (seed, prompt, the grammar)."""
        rng = np.random.default_rng([seed, prompt, 0x5E47])
        template = self.templates[int(rng.integers(len(self.templates)))]
        import string

        parts: list[str] = []
        for literal, field, _, _ in string.Formatter().parse(template):
            parts.append(literal)
            if field is not None:
                choices = self.words[field]
                parts.append(choices[int(rng.integers(len(choices)))])
        text = "".join(parts)
        return text[0].upper() + text[1:]

    def digest(self) -> str:
        """A short hash of the grammar (a resumed synthesis must use the same one)."""
        blob = json.dumps([self.words, self.templates], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Speakers


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


def make_speakers(count: int, seed: int, voices: Sequence[str] = DEFAULT_VOICES) -> list:
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
    _check_range("speakers", count, 2, MAX_SPEAKERS)
    unknown = [v for v in voices if v not in VOICES]
    if unknown or not voices:
        raise ValueError(f"voices must be a non-empty subset of {list(VOICES)}, got {voices}")
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


# --------------------------------------------------------------------------------------------
# Festival


def festival_binary() -> str:
    """Path of the ``festival`` executable.

    Raises:
        FestivalNotFoundError: if it is not on PATH (with the packages to install).
    """
    path = shutil.which("festival")
    if path is None:
        raise FestivalNotFoundError(
            "Festival is not installed (no 'festival' on PATH); synthesising a corpus needs it: "
            f"{INSTALL_HINT}. (The corpus embedded in the package needs nothing.)"
        )
    return path


def installed_voices() -> list[str]:
    """Names of the Festival voices installed on this machine.

    Raises:
        FestivalNotFoundError: if Festival is not installed.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as fh:
        fh.write('(format t "%l\\n" (voice.list))\n')
    try:
        run = subprocess.run(
            [festival_binary(), "-b", fh.name], capture_output=True, text=True, timeout=60
        )
    finally:
        os.unlink(fh.name)
    text = run.stdout.strip().strip("()")
    return sorted(text.split()) if run.returncode == 0 else []


def check_voices(voices: Sequence[str]) -> None:
    """Fail early, naming what is missing, if a voice is unknown or not installed.

    Raises:
        ValueError: if a voice is not one the synthesiser supports.
        FestivalNotFoundError: if Festival or a voice is not installed.
    """
    unknown = [v for v in voices if v not in VOICES]
    if unknown or not voices:
        raise ValueError(f"voices must be a non-empty subset of {list(VOICES)}, got {voices}")
    have = installed_voices()
    missing = [v for v in voices if v not in have]
    if missing:
        raise FestivalNotFoundError(
            f"Festival voice(s) {missing} not installed (installed: {have or 'none'}); "
            f"install them with: {INSTALL_HINT}"
        )


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _speaker_setup(speaker: SpeakerProfile) -> str:
    """Scheme that selects the speaker's voice with its pitch and rate."""
    voice = VOICES[speaker.voice]
    scale = speaker.formant_scale
    # The vocal-tract resampling multiplies F0 by `scale` and durations by 1/scale: pre-compensate.
    f0 = speaker.f0_mean / scale
    stretch = speaker.rate * scale
    if voice.engine == "diphone":
        return (
            f"(convae:diphone voice_{voice.name} {f0:.1f} {speaker.f0_std / scale:.1f} "
            f"{stretch:.3f})\n"
        )
    return f"(convae:hts voice_{voice.name} {1.0 / stretch:.3f})\n"


# --------------------------------------------------------------------------------------------
# Turning Festival's output into a TIMIT utterance


@dataclass
class _Job:
    speaker: SpeakerProfile
    prompt: int
    text: str

    @property
    def sentence(self) -> str:
        return f"SX{self.prompt}"

    @property
    def key(self) -> str:
        return (
            f"{self.speaker.split}/{self.speaker.dialect}/{self.speaker.speaker_id}/{self.sentence}"
        )


def _read_labels(path: Path) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]]]:
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
                "extend FESTIVAL_TO_TIMIT in convae_lightning/data/synth.py"
            )
        if label in CLOSURES and end - start >= 2 * _MIN_PART:
            burst = _burst(audio, start, end)
            out.append(Segment(start, burst, CLOSURES[label]))
            out.append(Segment(burst, end, label))
        else:
            out.append(Segment(start, end, label))
        start = end
    return out


def _channel(audio: torch.Tensor, speaker: SpeakerProfile, noise_seed: Sequence[int]) -> np.ndarray:
    """The speaker's microphone/room: band-limiting filter, level, low white noise."""
    x = AF.highpass_biquad(audio, SAMPLE_RATE, speaker.highpass_hz)
    x = AF.lowpass_biquad(x, SAMPLE_RATE, speaker.lowpass_hz)
    x = x.numpy().astype(np.float64)
    peak = np.abs(x).max()
    if peak > 0:
        x *= speaker.peak / peak
    speech = x[np.abs(x) > 0.01 * speaker.peak]
    rms = float(np.sqrt(np.mean(speech**2))) if len(speech) else speaker.peak / 10
    noise = np.random.default_rng(list(noise_seed)).standard_normal(len(x))
    x += noise * rms * 10 ** (-speaker.snr_db / 20)
    return np.clip(x, -1.0, 1.0)


def _finish_utterance(
    job: _Job, wav: Path, lab: Path, out: Path, seed: int, audio_format: AudioFormat
) -> int:
    """Post-process one Festival output into TIMIT files; returns the number of phones."""
    raw, rate = sf.read(wav, dtype="float32")
    audio = torch.from_numpy(np.ascontiguousarray(raw))
    if rate != SAMPLE_RATE:
        audio = AF.resample(audio, rate, SAMPLE_RATE)
    scale = job.speaker.formant_scale
    if job.speaker.vtl != 50:
        # Reading the samples as if recorded at vtl/50 x 16 kHz, then resampling to 16 kHz,
        # multiplies every frequency (formants, F0) by vtl/50: a vocal-tract-length change.
        audio = AF.resample(audio, job.speaker.vtl, 50)
    segments, words = _read_labels(lab)
    segments = [(name, end / scale) for name, end in segments]
    clean = audio.numpy()
    phones = festival_to_timit(segments, clean)
    word_segments = []
    for name, w_start, w_end in words:
        a = min(round(w_start / scale * SAMPLE_RATE), len(clean))
        b = min(round(w_end / scale * SAMPLE_RATE), len(clean))
        if b > a:
            word_segments.append(Segment(a, b, name.lower()))
    # Festival pads with 0.2-0.5 s of silence; TIMIT's h# are shorter (and shorter files keep
    # the embedded corpus small).
    head = max(phones[0].end - _MAX_EDGE_SILENCE, 0) if phones[0].label == "h#" else 0
    tail = max(phones[-1].end - phones[-1].start - _MAX_EDGE_SILENCE, 0)
    tail = tail if phones[-1].label == "h#" and len(phones) > 1 else 0
    stop = len(clean) - tail
    audio = audio[head:stop]
    phones = [Segment(max(p.start - head, 0), min(p.end, stop) - head, p.label) for p in phones]
    word_segments = [
        Segment(w.start - head, min(w.end, stop) - head, w.label) for w in word_segments
    ]
    noisy = _channel(audio, job.speaker, (seed, job.speaker.index, job.prompt, 0xC4A))
    write_utterance(
        out,
        job.speaker.split,
        job.speaker.dialect,
        job.speaker.speaker_id,
        job.sentence,
        noisy,
        phones,
        words=word_segments,
        text=job.text,
        sample_rate=SAMPLE_RATE,
        audio_format=audio_format,
    )
    return len(phones)


def _run_batch(
    jobs: Sequence[_Job],
    out: Path,
    seed: int,
    audio_format: AudioFormat,
    on_done: Callable[[_Job, int], None],
) -> None:
    """Synthesise one speaker's utterances in one Festival process, finishing each as it comes."""
    helper = resources.files("convae_lightning.data") / "festival" / "synth.scm"
    with tempfile.TemporaryDirectory(prefix="convae-festival-") as tmp_name:
        tmp = Path(tmp_name)
        script = [f"(load {_scheme_string(str(helper))})\n", _speaker_setup(jobs[0].speaker)]
        for k, job in enumerate(jobs):
            script.append(
                f"(convae:say {_scheme_string(str(k))} {_scheme_string(job.text)} "
                f"{_scheme_string(str(tmp / f'{k}.wav'))} "
                f"{_scheme_string(str(tmp / f'{k}.lab'))})\n"
            )
        (tmp / "batch.scm").write_text("".join(script))
        proc = subprocess.Popen(
            [festival_binary(), "-b", str(tmp / "batch.scm")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        other: list[str] = []
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if line.startswith("CONVAE-DONE "):
                    k = int(line.split()[1])
                    phones = _finish_utterance(
                        jobs[k], tmp / f"{k}.wav", tmp / f"{k}.lab", out, seed, audio_format
                    )
                    on_done(jobs[k], phones)
                else:
                    other.append(line.rstrip())
        except BaseException:
            proc.kill()  # interrupted or failed: don't let Festival run on for nothing
            raise
        finally:
            code = proc.wait()
        if code != 0 or "SIOD ERROR" in "\n".join(other):
            raise RuntimeError(
                f"Festival failed on speaker {jobs[0].speaker.speaker_id} "
                f"(voice {jobs[0].speaker.voice}, exit code {code}): " + "\n".join(other[-10:])
            )


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass
class SynthSummary:
    """What a synthesis run produced."""

    root: str
    speakers: int
    train_speakers: int
    test_speakers: int
    utterances: int
    synthesized: int  # utterances made by this run (the rest were resumed)
    phones: int
    seconds: float

    @property
    def utterances_per_second(self) -> float:
        """Synthesis speed of this run."""
        return self.synthesized / self.seconds if self.seconds > 0 else 0.0


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _options(
    speakers: int,
    sentences: int,
    seed: int,
    voices: Sequence[str],
    audio_format: str,
    g: Grammar,
    profiles: Sequence[SpeakerProfile],
) -> dict[str, object]:
    # The profiles' hash catches changes to the speaker design that keep the same arguments.
    blob = json.dumps([asdict(p) for p in profiles], sort_keys=True).encode()
    return {
        "profiles": hashlib.sha256(blob).hexdigest()[:16],
        "synth_version": SYNTH_VERSION,
        "speakers": speakers,
        "sentences": sentences,
        "seed": seed,
        "voices": list(voices),
        "audio_format": audio_format,
        "grammar": g.digest(),
    }


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def corpus_phone_counts(root: str | os.PathLike) -> Counter:
    """Phones per 48-class label over all ``.PHN`` files under ``root`` (glottal stops dropped)."""
    counts: Counter = Counter()
    for phn in Path(root).rglob("*"):
        if phn.suffix.upper() == ".PHN":
            for line in phn.read_text().split("\n"):
                parts = line.split()
                if len(parts) == 3 and (label := MAP_61_TO_48[parts[2]]) is not None:
                    counts[label] += 1
    return counts


def synthesize_corpus(
    out: str | os.PathLike,
    speakers: int = 24,
    sentences: int = 10,
    seed: int = 0,
    voices: Sequence[str] | None = None,
    audio_format: AudioFormat = "sphere",
    workers: int = 2,
    word_list: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Synthesise a corpus in TIMIT layout at ``out``.

    The corpus is built in ``<out>.partial`` and moved to ``out`` only when complete, so an
    interrupted run never leaves something that looks like a finished corpus; running the same
    command again resumes from the utterances already made (other options restart it).

    Args:
        out: corpus root to create (``TRAIN/`` and ``TEST/`` go inside).
        speakers: number of speakers, 2..1000 (about a quarter are TEST speakers).
        sentences: sentences per speaker, 1..300.
        seed: seed of the sentences, speakers and noise; the same options give the same corpus.
        voices: Festival voices to rotate over speakers (default: all of ``VOICES``).
        audio_format: ``"sphere"`` (TIMIT's ``.WAV``), ``"riff"`` or ``"flac"``.
        workers: Festival processes run in parallel, >= 1.
        word_list: a word list in ``festival/words.txt``'s format (default: the shipped one).
        overwrite: replace an existing corpus at ``out`` made with other options.
        progress: show a progress bar.

    Returns:
        A summary (counts, time, utterances per second).

    Raises:
        ValueError: if an argument is out of range or the word list is empty/invalid.
        FestivalNotFoundError: if Festival or a voice is missing.
        FileExistsError: if ``out`` exists and is not a corpus made with these options (and
            ``overwrite`` is false).
        RuntimeError: if Festival fails.
    """
    voices = list(DEFAULT_VOICES if voices is None else voices)
    _check_range("speakers", speakers, 2, MAX_SPEAKERS)
    _check_range("sentences", sentences, 1, MAX_SENTENCES)
    _check_range("workers", workers, 1, 64)
    if audio_format not in ("sphere", "riff", "flac"):
        raise ValueError(f"audio_format must be 'sphere', 'riff' or 'flac', got {audio_format!r}")
    grammar = Grammar.load(word_list)
    profiles = make_speakers(speakers, seed, voices)
    check_voices(voices)
    options = _options(speakers, sentences, seed, voices, audio_format, grammar, profiles)

    root = Path(out)
    partial = root.with_name(root.name + ".partial")
    if root.exists() and any(root.iterdir()):
        manifest = _read_manifest(root)
        if manifest is not None and manifest.get("options") == options and manifest.get("complete"):
            log.info("%s is already a complete corpus made with these options", root)
            return _summary(root, manifest, 0, 0.0)
        if not overwrite:
            what = "a corpus made with other options" if manifest else "not a synthetic corpus"
            raise FileExistsError(
                f"{root} exists and is {what}; choose another OUT or pass overwrite=True "
                "(--overwrite true)"
            )
    manifest = _read_manifest(partial) if partial.exists() else None
    if manifest is not None and manifest.get("options") == options:
        done = (
            set((partial / DONE_NAME).read_text().split())
            if (partial / DONE_NAME).exists()
            else set()
        )
        log.info("resuming %s: %d utterances already made", partial, len(done))
    else:
        if partial.exists():
            log.info("restarting: %s was made with other options", partial)
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        (partial / MANIFEST_NAME).write_text(
            json.dumps({"options": options, "complete": False}, indent=1)
        )
        done = set()

    ranks: Counter = Counter()
    batches: list[list[_Job]] = []
    for speaker in profiles:
        rank = ranks[speaker.split]
        ranks[speaker.split] += 1
        jobs = [
            _Job(speaker, p, grammar.sentence(seed, p))
            for p in prompts_for(speaker, rank, sentences)
        ]
        todo = [j for j in jobs if j.key not in done]
        if todo:
            batches.append(todo)
    total = speakers * sentences
    lock = threading.Lock()
    made = 0
    started = time.perf_counter()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    with bar, (partial / DONE_NAME).open("a") as done_file:
        task = bar.add_task("synthesising utterances", total=total, completed=len(done))

        stop = threading.Event()

        def on_done(job: _Job, phones: int) -> None:
            nonlocal made
            if stop.is_set():
                raise KeyboardInterrupt("synthesis interrupted")
            with lock:
                # Recorded only after all four files are written: a resumed run redoes the rest.
                done_file.write(job.key + "\n")
                done_file.flush()
                made += 1
                bar.advance(task)

        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [
                pool.submit(_run_batch, batch, partial, seed, audio_format, on_done)
                for batch in batches
            ]
            for future in futures:
                future.result()
        except BaseException:
            # Ctrl-C or a failure: stop the other batches at their next utterance; what is
            # finished stays recorded in .done for the next run to resume from.
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - started

    counts = corpus_phone_counts(partial)
    manifest = {
        "options": options,
        "complete": True,
        "speakers": [asdict(s) for s in profiles],
        "utterances": total,
        "phones": sum(counts.values()),
        "phones_per_class": dict(sorted(counts.items())),
        "classes_missing": [p for p in PHONES_48 if counts[p] == 0],
        "festival": _festival_version(),
        "command": _command(speakers, sentences, seed, voices, audio_format),
    }
    (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    (partial / "README.md").write_text(_readme(manifest))
    (partial / DONE_NAME).unlink()
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    summary = _summary(root, manifest, made, seconds)
    log.info(
        "wrote %s: %d utterances (%d synthesised in %.1f s, %.2f utterances/s)",
        root,
        total,
        made,
        seconds,
        summary.utterances_per_second,
    )
    return summary


def _summary(root: Path, manifest: dict, made: int, seconds: float) -> SynthSummary:
    profiles = manifest["speakers"]
    return SynthSummary(
        root=str(root),
        speakers=len(profiles),
        train_speakers=sum(p["split"] == "TRAIN" for p in profiles),
        test_speakers=sum(p["split"] == "TEST" for p in profiles),
        utterances=manifest["utterances"],
        synthesized=made,
        phones=manifest["phones"],
        seconds=seconds,
    )


def _festival_version() -> str:
    try:
        run = subprocess.run(
            [festival_binary(), "--version"], capture_output=True, text=True, timeout=30
        )
        return run.stdout.strip().splitlines()[0].split(": ", 1)[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _command(speakers: int, sentences: int, seed: int, voices: Sequence[str], fmt: str) -> str:
    command = f"convae data synth OUT --speakers {speakers} --sentences {sentences} --seed {seed}"
    if list(voices) != list(DEFAULT_VOICES):
        command += " --voices " + json.dumps(list(voices))
    return command + f" --audio_format {fmt}"


def _readme(manifest: dict) -> str:
    profiles = manifest["speakers"]
    counts = manifest["phones_per_class"]
    lines = [
        "# Synthetic TIMIT-layout corpus",
        "",
        "Generated by `convae_lightning.data.synth` with Festival "
        f"({manifest['festival']}); license-free. See docs/corpus.md.",
        "",
        f"- command: `{manifest['command']}`",
        f"- speakers: {len(profiles)} "
        f"({sum(p['split'] == 'TRAIN' for p in profiles)} train, "
        f"{sum(p['split'] == 'TEST' for p in profiles)} test)",
        f"- utterances: {manifest['utterances']}",
        f"- phones (48 classes): {manifest['phones']}",
        f"- classes missing: {', '.join(manifest['classes_missing']) or 'none'}",
        "",
        "| class | phones |",
        "|---|---|",
        *(f"| {label} | {count} |" for label, count in counts.items()),
        "",
    ]
    return "\n".join(lines)


def synthesize_min_phones(
    out: str | os.PathLike,
    min_phones: int = 50_000,
    sentences: int = 10,
    seed: int = 0,
    workers: int | None = None,
    audio_format: AudioFormat = "sphere",
    progress: bool = False,
) -> SynthSummary:
    """Synthesise a corpus with at least ``min_phones`` phones (for benchmarks).

    Picks the number of speakers from a conservative phones-per-utterance estimate, so the
    corpus is a little larger than asked. Uses all CPU cores by default.

    Raises:
        ValueError: if ``min_phones`` is not positive or needs more than 1000 speakers.
        RuntimeError: if the corpus came out smaller than ``min_phones`` (estimate too high).
    """
    _check_range("min_phones", min_phones, 1, 10_000_000)
    per_utterance = 40  # measured mean is ~44.5 (with stop closures); 10 % margin
    speakers = max(2, -(-min_phones // (per_utterance * sentences)))
    summary = synthesize_corpus(
        out,
        speakers=speakers,
        sentences=sentences,
        seed=seed,
        audio_format=audio_format,
        workers=workers or os.cpu_count() or 2,
        progress=progress,
        overwrite=True,
    )
    if summary.phones < min_phones:
        raise RuntimeError(f"made {summary.phones} phones, fewer than min_phones={min_phones}")
    return summary


def embedded_corpus_path() -> Path:
    """Where the corpus shipped with the package lives (``convae_lightning/corpus``)."""
    return Path(str(resources.files("convae_lightning") / "corpus"))


def synth_command(
    out: str,
    speakers: int = 24,
    sentences: int = 10,
    seed: int = 0,
    voices: list[str] | None = None,
    audio_format: str = "sphere",
    workers: int = 2,
    word_list: str | None = None,
    overwrite: bool = False,
) -> None:
    """Synthesise a license-free corpus in TIMIT layout with Festival.

    Needs Festival: sudo apt-get install festival festvox-kallpc16k festvox-kdlpc16k
    festvox-us-slt-hts festlex-cmu. An interrupted run resumes when run again.

    Args:
        out: corpus root to create (TRAIN/ and TEST/ go inside).
        speakers: number of speakers, 2..1000 (a quarter are TEST speakers).
        sentences: sentences per speaker, 1..300.
        seed: seed of sentences, speakers and noise.
        voices: Festival voices to use (kal_diphone, ked_diphone, cmu_us_slt_arctic_hts).
        audio_format: sphere (TIMIT .WAV), riff or flac.
        workers: Festival processes in parallel.
        word_list: word list file (default: the shipped one).
        overwrite: replace an existing corpus made with other options.
    """
    if audio_format not in ("sphere", "riff", "flac"):
        raise ValueError(f"audio_format must be 'sphere', 'riff' or 'flac', got {audio_format!r}")
    summary = synthesize_corpus(
        out,
        speakers=speakers,
        sentences=sentences,
        seed=seed,
        voices=voices,
        audio_format=audio_format,  # type: ignore[arg-type]
        workers=workers,
        word_list=word_list,
        overwrite=overwrite,
    )
    from rich.console import Console

    Console(stderr=True).print(
        f"[green]{summary.root}[/]: {summary.speakers} speakers "
        f"({summary.train_speakers} train, {summary.test_speakers} test), "
        f"{summary.utterances} utterances, {summary.phones} phones; "
        f"{summary.synthesized} synthesised in {summary.seconds:.1f} s "
        f"({summary.utterances_per_second:.2f} utterances/s)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m convae_lightning.data.synth [OUT] [--embedded] ...`` (no jsonargparse needed)."""
    parser = argparse.ArgumentParser(description=synth_command.__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="corpus root (omit with --embedded)")
    parser.add_argument("--embedded", action="store_true", help="regenerate the shipped corpus")
    parser.add_argument("--speakers", type=int, default=24)
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voices", nargs="+", default=None)
    parser.add_argument("--audio-format", default="sphere", choices=["sphere", "riff", "flac"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.embedded:
        synth_command(
            str(embedded_corpus_path()), workers=args.workers, overwrite=True, **EMBEDDED_OPTIONS
        )  # type: ignore[arg-type]
        return
    if not args.out:
        parser.error("give OUT, or --embedded")
    synth_command(
        args.out,
        speakers=args.speakers,
        sentences=args.sentences,
        seed=args.seed,
        voices=args.voices,
        audio_format=args.audio_format,
        workers=args.workers,
        overwrite=args.overwrite,
    )


__all__ = [
    "CLOSURES",
    "DEFAULT_VOICES",
    "EMBEDDED_OPTIONS",
    "FESTIVAL_PACKAGES",
    "VOICES",
    "FestivalNotFoundError",
    "Grammar",
    "SpeakerProfile",
    "SynthSummary",
    "check_voices",
    "corpus_phone_counts",
    "embedded_corpus_path",
    "festival_to_timit",
    "installed_voices",
    "make_speakers",
    "synth_command",
    "synthesize_corpus",
    "synthesize_min_phones",
]

if __name__ == "__main__":
    main()
