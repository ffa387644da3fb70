"""From a TIMIT-layout corpus to cached, memory-mapped spectrogram patches.

Two passes keep peak memory far below the size of the features: the first
(:func:`~convae_lightning.data.index.index_corpus`) validates every file, keeping only phone
boundaries, and decides which phones are kept and the patch width; the second reads audio utterance
by utterance and streams patches into ``.npy`` files. The cache is built in a temporary folder and
renamed into place only when complete, so an interrupted run never leaves a cache that a later run
trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convae_lightning.data.features import FeatureConfig, PatchExtractor
from convae_lightning.data.index import (
    CorpusIndex,
    CorpusOptions,
    IndexedUtterance,
    PaddingPlan,
    index_corpus,
    plan_padding,
    write_skipped_report,
)
from convae_lightning.data.phones import PHONES_48
from convae_lightning.data.splits import SPLITS
from convae_lightning.data.timit import Utterance, find_utterances, read_audio
from convae_lightning.runs import pid_alive

log = logging.getLogger(__name__)

#: Bumped whenever the cache's contents change meaning; part of every cache key.
#: 2: ``{split}_utt.npy``/``{split}_span.npy`` and ``meta.json["utterances"]``; ``skipped.tsv``.
#: 3: ``{split}_x.npy`` keep the training mean (the DataModule subtracts ``mean.npy`` on load).
CACHE_FORMAT_VERSION = 3


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
    ) -> None:
        self.out = out
        self.extractor = extractor
        # Rows carry the STFT's side padding too, so batches go to the transform without a copy.
        self.pad = extractor.side_pad
        self.segment_length = segment_length
        self.buffer = np.zeros((batch_size, segment_length + 2 * self.pad), dtype=np.float32)
        self.filled = 0
        self.written = 0
        self.total = np.zeros(out.shape[1:], dtype=np.float64)

    def add(self, audio: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Add the phones ``audio[starts[i]:ends[i]]`` of one utterance, each zero-padded on
        both sides to the common length (thesis 2.1), centred."""
        if not len(starts):
            return
        # One gather per utterance instead of three numpy calls per phone: row position j of
        # phone i holds sample starts[i] - offset[i] + j where that lies inside the phone.
        offsets = self.pad + (self.segment_length - (ends - starts)) // 2
        source = (starts - offsets)[:, None] + np.arange(self.buffer.shape[1])
        inside = (source >= starts[:, None]) & (source < ends[:, None])
        rows = np.where(inside, audio[np.clip(source, 0, len(audio) - 1)], np.float32(0))
        done = 0
        while done < len(rows):
            take = min(len(rows) - done, len(self.buffer) - self.filled)
            self.buffer[self.filled : self.filled + take] = rows[done : done + take]
            self.filled += take
            done += take
            if self.filled == len(self.buffer):
                self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        batch = torch.from_numpy(self.buffer[: self.filled])
        patches = self.extractor(batch, prepadded=True)
        self.total += patches.sum(0, dtype=torch.float64).numpy()
        self.out.write(self.written, patches.numpy())
        self.written += self.filled
        self.filled = 0


class _NoProgress:
    """The part of rich's ``Progress`` that ``build_cache`` uses, doing nothing: a build without
    a progress bar (benchmarks, tests, a bare GPU machine) needs no rich."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def advance(self, *args: object, **kwargs: object) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("utterances"),
        TimeRemainingColumn(),
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

    The folder holds, per split, ``{split}_x.npy`` (float32 ``(N, C, F, T)``, as computed: the
    training mean is subtracted on load, by the DataModule, which spares a second pass that
    would rewrite the training split),
    ``{split}_y.npy`` (int64 class ids), ``{split}_speaker.npy`` (int32 index into
    ``meta.json["speakers"]``), ``{split}_utt.npy`` (int32 index into ``meta.json["utterances"]``,
    ids such as ``train/DR1/FCJF0/SI1027``) and ``{split}_span.npy`` (int64 ``(N, 2)``: the phone's
    start and end sample at the feature sample rate); then ``mean.npy`` (the training mean,
    ``(C, F, T)``), ``skipped.tsv`` (files left out under ``on_error="skip"``) and ``meta.json``
    (settings and statistics). A folder whose key matches is reused as is. Half-built folders of
    builds that died are removed on the way.
    """
    features = features or FeatureConfig()
    options = options or CorpusOptions()
    root = Path(root)
    cache_dir = Path(cache_dir)
    if cache_dir.is_dir():
        remove_dead_builds(cache_dir)
    utterances = find_utterances(root, options.include_sa, options.on_error)
    key = corpus_key(utterances, root, features, options)
    final = cache_dir / key
    if (final / "meta.json").is_file():
        return final
    index = index_corpus(root, options, features.sample_rate, utterances)
    plan = plan_padding(index, features, options)
    tmp = _start_build(cache_dir, key)
    try:
        meta = _write_features(index, plan, features, tmp, progress, batch_size)
        meta.update(
            key=key,
            root=str(root),
            features=features.as_dict(),
            options=asdict(options),
            skipped=[str(s) for s in index.skipped],
        )
        write_skipped_report(tmp / "skipped.tsv", index.skipped)
        (tmp / _OWNER).unlink()
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
    utterances = [u.utterance.utterance_id for s in SPLITS for u in index.splits[s]]
    utterance_id = {u: i for i, u in enumerate(utterances)}
    mean: np.ndarray | None = None
    with _progress(progress) as bar:
        for split in SPLITS:
            items = index.splits[split]
            count = plan.kept[split]
            x = _NpyRows(out_dir / f"{split}_x.npy", (count, *shape))
            rows = {
                "y": np.empty(count, dtype=np.int64),
                "speaker": np.empty(count, dtype=np.int32),
                "utt": np.empty(count, dtype=np.int32),
                "span": np.empty((count, 2), dtype=np.int64),
            }
            writer = _PatchWriter(x, extractor, plan.segment_length, batch_size)
            task = bar.add_task(f"features {split}", total=len(items))
            for item, audio, rate in _prefetch(items):
                if rate != features.sample_rate:
                    import torchaudio  # only for resampling: the common path needs torch alone

                    audio = torchaudio.functional.resample(
                        torch.from_numpy(audio), rate, features.sample_rate
                    ).numpy()
                keep = item.ends - item.starts <= plan.max_length
                first = writer.written + writer.filled
                last = first + int(keep.sum())
                rows["y"][first:last] = item.labels[keep]
                rows["speaker"][first:last] = speaker_id[item.utterance.speaker]
                rows["utt"][first:last] = utterance_id[item.utterance.utterance_id]
                rows["span"][first:last] = np.stack([item.starts[keep], item.ends[keep]], 1)
                writer.add(audio, item.starts[keep], item.ends[keep])
                bar.advance(task)
            writer.flush()
            if split == "train":
                mean = (writer.total / max(count, 1)).astype(np.float32)
            x.close()
            for name, values in rows.items():
                np.save(out_dir / f"{split}_{name}.npy", values)
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
        "utterances": utterances,
        "class_names": list(PHONES_48),
    }


# ------------------------------------------------------------------ half-built cache folders
# A build writes into ``.<key>.<random>.partial`` with an owner marker (pid, host); the next run
# removes the folders whose owner is gone. Hundreds of MB each, they must not wait for hours.

_OWNER = "owner.json"
#: A partial folder without an owner marker (another host's, or an older version's) is taken
#: for dead once it is this old: its owner cannot be asked.
STALE_PARTIAL_SECONDS = 6 * 3600


def _start_build(cache_dir: Path, key: str) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=cache_dir))
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    (tmp / _OWNER).write_text(json.dumps(owner))
    return tmp


def _owner_is_alive(partial: Path) -> bool:
    """Whether the build writing ``partial`` may still run (when in doubt: yes, unless old)."""
    try:
        owner = json.loads((partial / _OWNER).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        # No marker yet (a build this instant between mkdtemp and writing it) or none at all.
        return time.time() - partial.stat().st_mtime < STALE_PARTIAL_SECONDS
    if host != socket.gethostname():
        return time.time() - partial.stat().st_mtime < STALE_PARTIAL_SECONDS
    return pid_alive(pid)


def remove_dead_builds(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete the ``.partial`` folders of builds that died (killed, crashed) and return them.

    Never touches a live concurrent build: one whose process (on this host) still exists.
    """
    removed = []
    for partial in Path(cache_dir).glob(".*.partial"):
        try:
            if _owner_is_alive(partial):
                continue
        except OSError:
            continue  # vanished meanwhile: its build finished or another run removed it
        shutil.rmtree(partial, ignore_errors=True)
        log.info("removed %s, left by a build that died", partial)
        removed.append(partial)
    return removed


def default_cache_dir() -> Path:
    """``$CONVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/convae-lightning``, else ``~/.cache/...``."""
    if "CONVAE_CACHE_DIR" in os.environ:
        return Path(os.environ["CONVAE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convae-lightning"


__all__ = [
    "CACHE_FORMAT_VERSION",
    "CorpusOptions",
    "build_cache",
    "corpus_key",
    "default_cache_dir",
    "remove_dead_builds",
]
