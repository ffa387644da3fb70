"""From a TIMIT-layout corpus to cached, memory-mapped spectrogram patches.

Two passes keep peak memory far below the size of the features: the first reads only headers and
``.PHN`` files (validating everything, deciding which phones are kept and the patch width); the
second reads audio utterance by utterance and streams patches into ``.npy`` memmaps. The cache is
built in a temporary folder and renamed into place only when complete, so an interrupted run never
leaves a cache that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convae_lightning.data.features import FeatureConfig, PatchExtractor
from convae_lightning.data.phones import CLASS_INDEX_48, MAP_61_TO_48, PHONES_48
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
    read_phones,
)

log = logging.getLogger(__name__)

#: Bumped whenever the cache's contents change meaning; part of every cache key.
CACHE_FORMAT_VERSION = 1


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
        on_error: ``raise`` on the first bad file, or ``skip`` bad files with a counted warning.
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
    skipped: list[str] = field(default_factory=list)
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


def corpus_key(
    utterances: Sequence[Utterance], root: Path, features: FeatureConfig, options: CorpusOptions
) -> str:
    """Hash of the corpus files and every preprocessing setting.

    Audio files count by path, size and modification time (reading all audio would cost as much
    as preprocessing); ``.PHN`` files, small, count by content, so relabelling invalidates.
    """
    digest = hashlib.sha256()
    settings = {"version": CACHE_FORMAT_VERSION, "features": features.as_dict()}
    settings["options"] = asdict(options)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for u in utterances:
        stat = u.audio_path.stat()
        digest.update(
            f"{u.audio_path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
        if u.phn_path is not None:
            digest.update(f"{u.phn_path.relative_to(root)}\0".encode() + u.phn_path.read_bytes())
    return digest.hexdigest()[:20]


def index_corpus(
    root: str | os.PathLike,
    options: CorpusOptions | None = None,
    sample_rate: int = 16000,
    utterances: Sequence[Utterance] | None = None,
) -> CorpusIndex:
    """Validate every utterance (audio header, ``.PHN`` lines) and split them by speaker.

    Raises:
        CorpusError: for a bad file when ``options.on_error == "raise"``; with ``skip``, the file is
            left out and counted in :attr:`CorpusIndex.skipped` with a warning.
    """
    options = options or CorpusOptions()
    root = Path(root)
    if utterances is None:
        utterances = find_utterances(root, options.include_sa, options.on_error)
    skipped: list[str] = []
    infos: dict[Utterance, AudioInfo] = {}
    for utterance in utterances:
        try:
            if utterance.phn_path is None:
                raise CorpusError(utterance.audio_path, MISSING_PHN)
            infos[utterance] = audio_info(utterance.audio_path)
            if options.on_error == "skip":
                # Only a full decode finds corrupt frames behind a valid header; when skipping,
                # find them now so that the second pass never meets an unreadable file.
                read_audio(utterance.audio_path)
        except CorpusError as error:
            if options.on_error == "raise":
                raise
            infos.pop(utterance, None)
            skipped.append(str(error))
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
            phones = read_phones(utterance.phn_path, info.num_samples)
        except CorpusError as error:
            if options.on_error == "raise":
                raise
            skipped.append(str(error))
            continue
        kept = [p for p in phones if MAP_61_TO_48[p.label] is not None]
        scale = sample_rate / info.sample_rate
        starts = np.array([round(p.start * scale) for p in kept], dtype=np.int64)
        ends = np.array([round(p.end * scale) for p in kept], dtype=np.int64)
        labels = np.array([CLASS_INDEX_48[MAP_61_TO_48[p.label]] for p in kept], dtype=np.int64)
        indexed[utterance] = IndexedUtterance(utterance, info.sample_rate, starts, ends, labels)
    if skipped:
        log.warning("skipped %d bad file(s) (on_error='skip'); first: %s", len(skipped), skipped[0])
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


def _prefetch(utterances: Sequence[IndexedUtterance], depth: int = 32) -> Iterator:
    """Yield ``(utterance, audio, rate)`` with audio decoding running ahead in a thread.

    soundfile releases the GIL while decoding, so reading overlaps the STFT; ``depth`` bounds how
    many decoded utterances wait in memory.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for item in utterances:
            pending.append((item, pool.submit(read_audio, item.utterance.audio_path)))
            if len(pending) >= depth:
                done, future = pending.pop(0)
                yield (done, *future.result())
        for done, future in pending:
            yield (done, *future.result())


class _NpyRows:
    """A ``.npy`` file of float32 rows written with plain file I/O.

    Writing through a memmap would count every written page in the process's resident set;
    ``pwrite``/``pread`` leave them to the page cache, so peak RSS stays near one batch.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = path
        self.shape = shape
        self.row_bytes = int(np.prod(shape[1:])) * 4
        with open(path, "wb") as fh:
            header = {"descr": "<f4", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(fh, header)
            self.offset = fh.tell()
            fh.truncate(self.offset + shape[0] * self.row_bytes)
        self.fd = os.open(path, os.O_RDWR)

    def write(self, first_row: int, rows: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(rows, dtype="<f4")).cast("B")  # no extra copy
        os.pwrite(self.fd, data, self.offset + first_row * self.row_bytes)

    def read(self, first_row: int, count: int) -> np.ndarray:
        data = os.pread(self.fd, count * self.row_bytes, self.offset + first_row * self.row_bytes)
        return np.frombuffer(data, dtype="<f4").reshape(-1, *self.shape[1:]).copy()

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


class _PatchWriter:
    """Collects padded segments and streams their patches to disk, a batch at a time."""

    def __init__(
        self,
        out: _NpyRows,
        extractor: PatchExtractor,
        segment_length: int,
        batch_size: int,
        mean: np.ndarray | None,
    ) -> None:
        self.out = out
        self.extractor = extractor
        # Rows carry the STFT's side padding too, so batches go to the transform without a copy.
        self.pad = extractor.side_pad
        self.segment_length = segment_length
        self.buffer = np.zeros((batch_size, segment_length + 2 * self.pad), dtype=np.float32)
        self.filled = 0
        self.written = 0
        self.mean = mean
        self.total = np.zeros(out.shape[1:], dtype=np.float64)

    def add(self, segment: np.ndarray) -> None:
        # Zero-pad on both sides to the common length (thesis 2.1).
        offset = self.pad + (self.segment_length - segment.size) // 2
        row = self.buffer[self.filled]
        row[:] = 0.0
        row[offset : offset + segment.size] = segment
        self.filled += 1
        if self.filled == len(self.buffer):
            self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        batch = torch.from_numpy(self.buffer[: self.filled])
        patches = self.extractor(batch, prepadded=True).numpy()
        self.total += patches.sum(axis=0, dtype=np.float64)
        if self.mean is not None:
            patches -= self.mean
        self.out.write(self.written, patches)
        self.written += self.filled
        self.filled = 0


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("utterances"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def build_cache(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    features: FeatureConfig | None = None,
    options: CorpusOptions | None = None,
    progress: bool = True,
    batch_size: int = 1024,
) -> Path:
    """Build (or find) the feature cache of a corpus and return its folder.

    The folder holds ``{split}_x.npy`` (float32 ``(N, C, F, T)``, mean removed), ``{split}_y.npy``
    (int64 class ids), ``{split}_speaker.npy`` (int32 index into ``meta.json``'s speakers),
    ``mean.npy`` (the training mean, ``(C, F, T)``) and ``meta.json`` (settings and statistics).
    A folder whose key matches is reused as is.
    """
    features = features or FeatureConfig()
    options = options or CorpusOptions()
    root = Path(root)
    utterances = find_utterances(root, options.include_sa, options.on_error)
    key = corpus_key(utterances, root, features, options)
    cache_dir = Path(cache_dir)
    final = cache_dir / key
    if (final / "meta.json").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(cache_dir)
    index = index_corpus(root, options, features.sample_rate, utterances)
    plan = plan_padding(index, features, options)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=cache_dir))
    try:
        meta = _write_features(index, plan, features, tmp, progress, batch_size)
        meta.update(
            key=key,
            root=str(root),
            features=features.as_dict(),
            options=asdict(options),
            skipped=index.skipped,
        )
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, final)  # atomic: the cache appears complete or not at all
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent builder that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_features(
    index: CorpusIndex,
    plan: PaddingPlan,
    features: FeatureConfig,
    out_dir: Path,
    progress: bool,
    batch_size: int,
) -> dict:
    extractor = PatchExtractor(features)
    shape = (features.num_channels, features.num_bins, plan.num_frames)
    speakers = sorted({u.utterance.speaker for items in index.splits.values() for u in items})
    speaker_id = {s: i for i, s in enumerate(speakers)}
    mean: np.ndarray | None = None
    with _progress(progress) as bar:
        for split in SPLITS:  # train first: its mean is subtracted from every split
            items = index.splits[split]
            count = plan.kept[split]
            x = _NpyRows(out_dir / f"{split}_x.npy", (count, *shape))
            y = np.empty(count, dtype=np.int64)
            spk = np.empty(count, dtype=np.int32)
            writer = _PatchWriter(x, extractor, plan.segment_length, batch_size, mean)
            task = bar.add_task(f"features {split}", total=len(items))
            for item, audio, rate in _prefetch(items):
                if rate != features.sample_rate:
                    audio = torchaudio.functional.resample(
                        torch.from_numpy(audio), rate, features.sample_rate
                    ).numpy()
                for start, end, label in zip(item.starts, item.ends, item.labels, strict=True):
                    if end - start > plan.max_length:
                        continue
                    y[writer.written + writer.filled] = label
                    spk[writer.written + writer.filled] = speaker_id[item.utterance.speaker]
                    writer.add(audio[start:end])
                bar.advance(task)
            writer.flush()
            if split == "train":
                mean = (writer.total / max(count, 1)).astype(np.float32)
                for begin in range(0, count, batch_size):
                    x.write(begin, x.read(begin, min(batch_size, count - begin)) - mean)
            x.close()
            np.save(out_dir / f"{split}_y.npy", y)
            np.save(out_dir / f"{split}_speaker.npy", spk)
    assert mean is not None
    np.save(out_dir / "mean.npy", mean)
    return {
        "input_shape": list(shape),
        "segment_length": plan.segment_length,
        "max_phone_length": plan.max_length,
        "num_frames": plan.num_frames,
        "corpus_sample_rate": index.corpus_sample_rate,
        "kept": plan.kept,
        "discarded": plan.discarded,
        "speakers": speakers,
        "split_speakers": {
            s: sorted({u.utterance.speaker for u in index.splits[s]}) for s in SPLITS
        },
        "class_names": list(PHONES_48),
    }


#: A ``.partial`` build folder untouched for this long belongs to a killed run.
STALE_PARTIAL_SECONDS = 6 * 3600


def _remove_stale_partials(cache_dir: Path) -> None:
    """Delete build folders left by killed runs (never trusted, but they take disk space)."""
    for partial in cache_dir.glob(".*.partial"):
        if time.time() - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:
            shutil.rmtree(partial, ignore_errors=True)


def default_cache_dir() -> Path:
    """``$CONVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/convae-lightning``, else ``~/.cache/...``."""
    if "CONVAE_CACHE_DIR" in os.environ:
        return Path(os.environ["CONVAE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convae-lightning"


__all__ = [
    "CACHE_FORMAT_VERSION",
    "CorpusIndex",
    "CorpusOptions",
    "PaddingPlan",
    "build_cache",
    "corpus_key",
    "default_cache_dir",
    "index_corpus",
    "plan_padding",
]
