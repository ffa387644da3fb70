"""Finding and reading utterances in a TIMIT-layout corpus.

Handles the layouts users actually have: the LDC original (``TRAIN/DR1/FCJF0/SI1027.WAV`` in NIST
SPHERE, with ``.PHN``/``.WRD``/``.TXT``), all-lowercase trees, the widespread copies whose audio is
RIFF ``SI1027.WAV.wav``, and ``.flac`` (the embedded corpus). Audio is read with soundfile; every
way a file can be bad (unreadable, truncated, non-finite, a header that lies about its length)
is a :class:`CorpusError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from convae_lightning.data.phones import MAP_61_TO_48

OnError = Literal["raise", "skip"]

#: Audio file suffixes in order of preference when several copies of one sentence exist.
_AUDIO_SUFFIXES = (".wav", ".wav.wav", ".flac")
_DIALECT = re.compile(r"^dr\d+$", re.IGNORECASE)
MISSING_PHN = "audio file has no .PHN phone-label file beside it"
#: NIST SPHERE files (TIMIT's ``.WAV``) start with a header of this many bytes.
SPHERE_HEADER_BYTES = 1024
_KNOWN_LABELS = frozenset(MAP_61_TO_48)


def embedded_corpus_root() -> Path:
    """The synthetic TIMIT-layout corpus shipped in the package (``convae_lightning/corpus``)."""
    return Path(str(resources.files("convae_lightning") / "corpus"))


class CorpusError(ValueError):
    """A problem with a corpus file; the message names the file (and line) at fault."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line
        self.reason = message

    def __reduce__(self) -> tuple:
        # Rebuilt from its parts, not its message: the feature pass's workers send it back.
        return type(self), (self.path, self.reason, self.line)


@dataclass(frozen=True)
class Utterance:
    """One sentence of one speaker: where its audio and phone labels are."""

    split: str  # "train" or "test": the corpus's own top-level folder
    dialect: str  # "DR1".."DR8"
    speaker: str  # e.g. "FCJF0"
    sentence: str  # e.g. "SI1027"
    audio_path: Path
    phn_path: Path | None  # None only for on_error="skip" listings: counted as skipped later

    @property
    def utterance_id(self) -> str:
        return f"{self.split}/{self.dialect}/{self.speaker}/{self.sentence}"

    @property
    def kind(self) -> str:
        """Sentence type: ``"SA"``, ``"SI"`` or ``"SX"`` (other prefixes are returned as-is)."""
        return self.sentence[:2]


@dataclass(frozen=True)
class Segment:
    """A labelled span ``[start, end)`` in samples: a line of a ``.PHN`` (or ``.WRD``) file."""

    start: int
    end: int
    label: str


def _audio_stem(name: str) -> tuple[str, int] | None:
    """``("SI1027", preference)`` for an audio file name (lower preference wins), else ``None``."""
    lower = name.lower()
    # Longest suffix first, so that "SI1027.WAV.wav" is not taken for a ".wav" named "SI1027.WAV".
    for suffix in sorted(_AUDIO_SUFFIXES, key=len, reverse=True):
        stem = name[: -len(suffix)]
        if lower.endswith(suffix) and stem and "." not in stem:
            return stem, _AUDIO_SUFFIXES.index(suffix)
    return None


def find_utterances(
    root: str | os.PathLike, include_sa: bool = False, on_error: OnError = "raise"
) -> list[Utterance]:
    """Every utterance under a TIMIT-layout ``root``, sorted by split, speaker and sentence.

    ``root`` may be the corpus folder itself (holding ``TRAIN``/``TEST``) or a folder above it,
    in any letter case. SA sentences (read by every speaker) are dropped unless ``include_sa``,
    as the thesis does (2.1).

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        CorpusError: if the tree holds no utterance, or (``on_error="raise"``) an audio file has no
            ``.PHN`` file beside it; with ``"skip"`` such an utterance is listed with
            ``phn_path=None`` and left to the indexing step to count.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"corpus root {str(root)!r} does not exist or is not a folder; expected a TIMIT-layout "
            "tree with TRAIN/ and TEST/ folders (pass data.root=/path/to/TIMIT)"
        )
    found: dict[tuple[str, str, str, str], tuple[int, Path]] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        parts = Path(dirpath).parts
        if len(parts) < 3 or not _DIALECT.match(parts[-2]):
            continue
        split = parts[-3].lower()
        if split not in ("train", "test"):
            continue
        for name in filenames:
            parsed = _audio_stem(name)
            if parsed is None:
                continue
            stem, preference = parsed
            key = (split, parts[-2].upper(), parts[-1].upper(), stem.upper())
            if key not in found or preference < found[key][0]:
                found[key] = (preference, Path(dirpath) / name)

    utterances: list[Utterance] = []
    for (split, dialect, speaker, sentence), (_, audio_path) in sorted(found.items()):
        if sentence.startswith("SA") and not include_sa:
            continue
        phn_path = _sibling(audio_path, ".phn")
        if phn_path is None and on_error == "raise":
            raise CorpusError(audio_path, MISSING_PHN)
        # With on_error="skip" it is kept (phn_path None) so that indexing counts it as skipped.
        utterances.append(Utterance(split, dialect, speaker, sentence, audio_path, phn_path))
    if not utterances:
        raise CorpusError(
            root,
            "no utterances found: expected TRAIN|TEST/DRn/SPEAKER/SENTENCE.WAV (+ .PHN) below "
            "this folder (SPHERE .WAV, RIFF .WAV.wav or .flac audio, any letter case)",
        )
    return utterances


def _sibling(audio_path: Path, suffix: str) -> Path | None:
    """The file beside ``audio_path`` with the same sentence stem and ``suffix`` in either case."""
    stem = audio_path.name.split(".", 1)[0]
    for candidate in (stem + suffix.upper(), stem + suffix.lower()):
        path = audio_path.with_name(candidate)
        if path.is_file():
            return path
    return None


def read_phones(path: str | os.PathLike, num_samples: int | None = None) -> list[Segment]:
    """Parse a ``.PHN`` file (``start end label`` per line, offsets in samples).

    Labels are validated against the 61 TIMIT labels (any case). Gaps between adjacent phones,
    which real TIMIT has in places, are tolerated.

    Raises:
        CorpusError: naming the file and line for a line that is not three fields, a non-numeric
            offset, ``end <= start``, an ``end`` beyond ``num_samples`` or an unknown label.
    """
    segments: list[Segment] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise CorpusError(
                    path, f"expected 'start end label', got {len(fields)} fields: {line!r}", line_no
                )
            try:
                start, end = int(fields[0]), int(fields[1])
            except ValueError:
                raise CorpusError(
                    path,
                    f"sample offsets must be integers, got {fields[0]!r} {fields[1]!r}",
                    line_no,
                ) from None
            label = fields[2].lower()
            if start < 0 or end <= start:
                raise CorpusError(path, f"segment end {end} must be after start {start}", line_no)
            if num_samples is not None and end > num_samples:
                raise CorpusError(
                    path,
                    f"segment end {end} lies beyond the audio ({num_samples} samples)",
                    line_no,
                )
            if label not in MAP_61_TO_48:
                raise CorpusError(
                    path,
                    f"unknown phone label {fields[2]!r} (not one of the 61 TIMIT labels)",
                    line_no,
                )
            segments.append(Segment(start, end, label))
    if not segments:
        raise CorpusError(path, "no phone segments in file")
    return segments


def read_phone_table(
    path: str | os.PathLike, num_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`read_phones` as arrays: ``starts``, ``ends`` (int64) and lower-case labels.

    The cache build parses every ``.PHN`` file of a corpus, so the well-formed ones are checked
    a whole file at a time; a file that breaks any rule goes to :func:`read_phones`, whose error
    names the line.

    Raises:
        CorpusError: as :func:`read_phones`.
    """
    with open(path, encoding="ascii", errors="replace") as fh:
        rows = [line.split() for line in fh]
    rows = [row for row in rows if row]
    try:
        if not rows or any(len(row) != 3 for row in rows):
            raise ValueError
        starts = np.array([int(row[0]) for row in rows], dtype=np.int64)
        ends = np.array([int(row[1]) for row in rows], dtype=np.int64)
        labels = [row[2].lower() for row in rows]
        if (starts < 0).any() or (ends <= starts).any() or not _KNOWN_LABELS.issuperset(labels):
            raise ValueError
        if num_samples is not None and (ends > num_samples).any():
            raise ValueError
    except (ValueError, OverflowError):
        phones = read_phones(path, num_samples)  # raises, naming the line at fault
        starts = np.array([p.start for p in phones], dtype=np.int64)
        ends = np.array([p.end for p in phones], dtype=np.int64)
        labels = [p.label for p in phones]
    return starts, ends, labels


@dataclass(frozen=True)
class AudioInfo:
    """Sample rate and length of an audio file, checked against its SPHERE header if it has one."""

    sample_rate: int
    num_samples: int


#: What soundfile raises on a damaged file besides ``LibsndfileError`` (a ``RuntimeError``):
#: ``ValueError``/``TypeError``/``OverflowError`` for header values it cannot use, ``MemoryError``
#: and ``OSError`` for a file it cannot hold or open. All are the file's fault, so all name it
#: (a :class:`CorpusError`, itself a ``ValueError``, passes through unchanged).
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, OverflowError, MemoryError, OSError)
#: libsndfile's length of a stream that does not announce one (a FLAC written to a pipe):
#: allocating it whole is what once crashed with "array is too big" and no file name.
_UNKNOWN_LENGTH = 2**63 - 1
#: Frames decoded per read: arrays grow with what a file holds, never with what it claims.
_BLOCK_FRAMES = 1 << 16


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information of an audio file (no samples are decoded); detects truncated SPHERE.

    Raises:
        CorpusError: if soundfile cannot read the file, it is not mono, its sample rate is not
            positive, its length is unknown (a stream) or zero, or a SPHERE file holds fewer
            samples than its header announces (a truncated copy).
    """
    try:
        with sf.SoundFile(str(path)) as audio:
            frames = _check_length(path, _check_header(path, audio))
            return AudioInfo(int(audio.samplerate), frames)
    except CorpusError:
        raise
    except _DECODE_ERRORS as error:
        raise _unreadable(path, error) from None


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate, after every check a corpus file gets.

    The header checks of :func:`audio_info`, then a full decode that must yield as many samples
    as the header announces and only finite ones (one NaN would poison the training mean, and
    with it every patch of every split).

    Raises:
        CorpusError: naming the file, for anything :func:`audio_info` rejects, frames that do not
            decode, fewer samples than announced, or NaN/infinite samples.
    """
    try:
        with sf.SoundFile(str(path)) as audio:
            announced = _check_header(path, audio)
            samples = _decode(audio)
            rate = int(audio.samplerate)
    except CorpusError:
        raise
    except _DECODE_ERRORS as error:
        raise _unreadable(path, error) from None
    _check_length(path, len(samples))
    if len(samples) < announced:
        raise CorpusError(
            path,
            f"truncated or corrupt: header announces {announced} samples, {len(samples)} decode",
        )
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.argmin(finite))
        raise CorpusError(
            path,
            f"{int((~finite).sum())} NaN or infinite sample(s), the first at sample {first}: "
            "they would make every patch non-finite",
        )
    return samples, rate


def _check_header(path: str | os.PathLike, audio: sf.SoundFile) -> int:
    """The announced length of an open file after the checks that need no decoding."""
    if audio.channels != 1:
        raise CorpusError(path, f"expected mono audio, got {audio.channels} channels")
    if audio.samplerate <= 0:
        raise CorpusError(path, f"invalid sample rate {audio.samplerate} Hz in the header")
    if audio.frames == _UNKNOWN_LENGTH:
        # libsndfile cannot read past a length it does not know (its seek fails).
        raise CorpusError(
            path,
            "the header announces no length (a stream, e.g. a FLAC written to a pipe); "
            "re-encode the file, e.g. `sox IN.flac OUT.flac`",
        )
    if audio.format == "NIST":
        announced = _sphere_sample_count(path)
        if announced is not None and announced > audio.frames:
            raise CorpusError(
                path, f"truncated: header announces {announced} samples, file holds {audio.frames}"
            )
    return int(audio.frames)


def _check_length(path: str | os.PathLike, frames: int) -> int:
    if frames == 0:
        raise CorpusError(path, "audio file holds no samples")
    return frames


def _decode(audio: sf.SoundFile) -> np.ndarray:
    blocks = []
    while len(block := audio.read(_BLOCK_FRAMES, dtype="float32", always_2d=False)):
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _unreadable(path: str | os.PathLike, error: BaseException) -> CorpusError:
    return CorpusError(path, f"not a readable audio file ({type(error).__name__}: {error})")


def _sphere_sample_count(path: str | os.PathLike) -> int | None:
    with open(path, "rb") as fh:
        header = fh.read(SPHERE_HEADER_BYTES).decode("ascii", errors="replace")
    match = re.search(r"^sample_count -i (\d+)", header, re.MULTILINE)
    return int(match.group(1)) if match else None


def speakers(utterances: Iterable[Utterance]) -> list[str]:
    """Sorted distinct speaker ids."""
    return sorted({u.speaker for u in utterances})


__all__ = [
    "MISSING_PHN",
    "SPHERE_HEADER_BYTES",
    "AudioInfo",
    "CorpusError",
    "OnError",
    "Segment",
    "Utterance",
    "audio_info",
    "embedded_corpus_root",
    "find_utterances",
    "read_audio",
    "read_phone_table",
    "read_phones",
    "speakers",
]
