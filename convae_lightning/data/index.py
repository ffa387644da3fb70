"""The validation pass: every file of a corpus checked, its phones split by speaker and padded.

:func:`index_corpus` reads every audio file in full (the same
:func:`~convae_lightning.data.timit.read_audio` the feature pass uses) and every ``.PHN`` file, so
``convae data stats`` and ``convae data prepare`` accept and reject exactly the same files, and
decides which phones are kept and the patch width. The cache builder reads only the audio headers
here (:func:`index_utterances` with ``decode=False``) and leaves the full decode to the feature
pass, which reads every file once; a file that fails only there is reported back as one of
``audio_errors`` and the index is made again, so both reject the same files.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convae_lightning.data.features import FeatureConfig
from convae_lightning.data.phones import CLASS_INDEX_48, MAP_61_TO_48
from convae_lightning.data.splits import SPLITS, SplitScheme, assign_splits
from convae_lightning.data.timit import (
    MISSING_PHN,
    AudioInfo,
    CorpusError,
    OnError,
    Utterance,
    audio_info,
    find_utterances,
    read_audio,
    read_phone_table,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusOptions:
    """Corpus-level settings that shape the cache (besides :class:`FeatureConfig`).

    Args:
        include_sa: keep the SA sentences every speaker read (thesis: dropped).
        split_scheme: ``thesis`` or ``standard`` (see :func:`assign_splits`).
        val_fraction: share of TRAIN speakers held out for validation (``thesis`` scheme).
        split_seed: seed of the validation-speaker choice.
        discard_longest: fraction of the longest training phones discarded before padding
            (thesis: 0.05); the same length limit applies to every split.
        num_frames: force the patch width T; ``None`` derives it from the longest kept phone
            (16 on TIMIT). Phones that do not fit are discarded as well.
        on_error: ``raise`` on the first bad file, or ``skip`` bad files, each one listed.
    """

    include_sa: bool = False
    split_scheme: SplitScheme = "thesis"
    val_fraction: float = 0.1
    split_seed: int = 0
    discard_longest: float = 0.05
    num_frames: int | None = None
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        if not 0.0 <= self.discard_longest < 1.0:
            raise ValueError(f"discard_longest must be in [0, 1), got {self.discard_longest!r}")
        if self.num_frames is not None and self.num_frames <= 0:
            raise ValueError(f"num_frames must be positive or None, got {self.num_frames!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")


@dataclass(frozen=True)
class SkippedFile:
    """A file left out under ``on_error="skip"``: where (file, line) and why."""

    path: str
    line: int | None
    reason: str

    @classmethod
    def from_error(cls, error: CorpusError) -> SkippedFile:
        return cls(str(error.path), error.line, error.reason)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass
class IndexedUtterance:
    """An utterance whose files passed validation, with its phones in target-rate samples."""

    utterance: Utterance
    sample_rate: int
    starts: np.ndarray  # int64, at the feature sample rate
    ends: np.ndarray
    labels: np.ndarray  # int64 class ids (48 set); glottal stops already removed


@dataclass
class CorpusIndex:
    """Validated utterances per split plus the files that were skipped."""

    root: Path
    splits: dict[str, list[IndexedUtterance]]
    skipped: list[SkippedFile] = field(default_factory=list)
    corpus_sample_rate: int = 16000

    def phone_lengths(self, split: str) -> np.ndarray:
        parts = [u.ends - u.starts for u in self.splits[split]]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def labels(self, split: str) -> np.ndarray:
        parts = [u.labels for u in self.splits[split]]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class PaddingPlan:
    """Which phones are kept, and the padded segment length they all share."""

    max_length: int  # longest phone kept, in samples
    num_frames: int
    segment_length: int
    discarded: dict[str, int]
    kept: dict[str, int]


def _check_audio(utterance: Utterance, decode: bool) -> AudioInfo:
    if utterance.phn_path is None:
        raise CorpusError(utterance.audio_path, MISSING_PHN)
    if not decode:
        return audio_info(utterance.audio_path)  # the feature pass decodes and checks the rest
    audio, rate = read_audio(utterance.audio_path)  # a full decode: headers can lie
    return AudioInfo(rate, len(audio))


def _rescale(samples: np.ndarray, rate: int, corpus_rate: int) -> np.ndarray:
    """Sample offsets at ``corpus_rate`` moved to ``rate``, rounded half to even (``round``)."""
    if rate == corpus_rate:
        return samples
    return np.rint(samples * (rate / corpus_rate)).astype(np.int64)


def index_corpus(
    root: str | os.PathLike,
    options: CorpusOptions | None = None,
    sample_rate: int = 16000,
    utterances: Sequence[Utterance] | None = None,
) -> CorpusIndex:
    """Validate every utterance (decoded audio, ``.PHN`` lines) and split them by speaker.

    Raises:
        CorpusError: for a bad file when ``options.on_error == "raise"``; with ``skip``, the file is
            left out, listed in :attr:`CorpusIndex.skipped` and in a warning that names each one.
    """
    options = options or CorpusOptions()
    root = Path(root)
    if utterances is None:
        utterances = find_utterances(root, options.include_sa, options.on_error)
    index = index_utterances(root, utterances, options, sample_rate)
    warn_skipped(index.skipped)
    return index


def warn_skipped(skipped: Sequence[SkippedFile]) -> None:
    """One warning naming every file left out under ``on_error="skip"`` (none: no warning)."""
    if skipped:
        log.warning(
            "skipped %d bad file(s) (on_error='skip'):\n%s",
            len(skipped),
            "\n".join(f"  {s}" for s in skipped),
        )


def index_utterances(
    root: Path,
    utterances: Sequence[Utterance],
    options: CorpusOptions,
    sample_rate: int,
    decode: bool = True,
    audio_errors: Mapping[Path, CorpusError] | None = None,
) -> CorpusIndex:
    """:func:`index_corpus` without the warning; ``decode=False`` checks audio headers only.

    ``audio_errors`` maps audio files already known to fail (the feature pass found them) to their
    error, which they raise here in their place among the audio checks, as a full decode would.
    """
    audio_errors = audio_errors or {}
    skipped: list[SkippedFile] = []

    def skip(error: CorpusError) -> None:
        if options.on_error == "raise":
            raise error
        skipped.append(SkippedFile.from_error(error))

    infos: dict[Utterance, AudioInfo] = {}
    for utterance in utterances:
        try:
            if utterance.audio_path in audio_errors:
                raise audio_errors[utterance.audio_path]
            infos[utterance] = _check_audio(utterance, decode)
        except CorpusError as error:
            skip(error)
    # The corpus rate is the most common one, so an odd file is blamed, not the corpus.
    rates = Counter(info.sample_rate for info in infos.values())
    corpus_rate = rates.most_common(1)[0][0] if rates else sample_rate
    indexed: dict[Utterance, IndexedUtterance] = {}
    for utterance, info in infos.items():
        try:
            if info.sample_rate != corpus_rate:
                raise CorpusError(
                    utterance.audio_path,
                    f"sample rate {info.sample_rate} Hz differs from the corpus's {corpus_rate} Hz",
                )
            phn_path: Path = utterance.phn_path  # type: ignore[assignment]  # checked above
            starts, ends, names = read_phone_table(phn_path, info.num_samples)
        except CorpusError as error:
            skip(error)
            continue
        classes = [MAP_61_TO_48[name] for name in names]  # None: deleted (q)
        kept = np.array([c is not None for c in classes], dtype=bool)
        labels = np.array([CLASS_INDEX_48[c] for c in classes if c is not None], dtype=np.int64)
        starts = _rescale(starts[kept], sample_rate, info.sample_rate)
        ends = _rescale(ends[kept], sample_rate, info.sample_rate)
        indexed[utterance] = IndexedUtterance(utterance, info.sample_rate, starts, ends, labels)
    if not indexed:
        raise CorpusError(root, "no valid utterances left after validation")
    split_utts = assign_splits(
        [u for u in utterances if u in indexed],
        options.split_scheme,
        options.val_fraction,
        options.split_seed,
    )
    splits = {name: [indexed[u] for u in split_utts[name]] for name in SPLITS}
    return CorpusIndex(root, splits, skipped, corpus_rate)


def plan_padding(
    index: CorpusIndex, features: FeatureConfig, options: CorpusOptions
) -> PaddingPlan:
    """Apply the thesis's rule: drop the longest ``discard_longest`` of training phones, pad to the
    longest remaining one (rounded up to whole frames).

    Raises:
        CorpusError: if the training split has no phones.
    """
    lengths = np.sort(index.phone_lengths("train"))
    if lengths.size == 0:
        raise CorpusError(index.root, "the training split has no phones")
    keep = lengths.size - int(np.floor(options.discard_longest * lengths.size))
    max_length = int(lengths[max(keep, 1) - 1])
    num_frames = options.num_frames or features.frames_for(max_length)
    segment_length = features.segment_length(num_frames)
    max_length = min(max_length, segment_length)
    discarded = {s: int((index.phone_lengths(s) > max_length).sum()) for s in SPLITS}
    kept = {s: int((index.phone_lengths(s) <= max_length).sum()) for s in SPLITS}
    return PaddingPlan(max_length, num_frames, segment_length, discarded, kept)


def write_skipped_report(path: str | os.PathLike, skipped: Sequence[SkippedFile]) -> Path:
    """Write ``path`` as TSV (``path``, ``line``, ``reason``; a header only when nothing was
    skipped), atomically: an existing report is replaced only by a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(["path", "line", "reason"])
            writer.writerows([s.path, "" if s.line is None else s.line, s.reason] for s in skipped)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "CorpusIndex",
    "CorpusOptions",
    "IndexedUtterance",
    "PaddingPlan",
    "SkippedFile",
    "index_corpus",
    "index_utterances",
    "plan_padding",
    "warn_skipped",
    "write_skipped_report",
]
