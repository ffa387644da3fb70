"""From a TIMIT-layout corpus to cached, memory-mapped spectrogram patches.

Two passes keep peak memory far below the size of the features: the first
(:func:`~convae_lightning.data.index.index_utterances`) validates every ``.PHN`` file and audio
header, keeping only phone boundaries, and decides which phones are kept and the patch width; the
second (:mod:`~convae_lightning.data.extract`) decodes each audio file once, in chunks of
utterances spread over worker processes, and streams patches into preallocated ``.npy`` files.
The cache is built in a temporary folder and renamed into place only when complete, so an
interrupted run never leaves a cache that a later run trusts.
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
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from convae_lightning.data.extract import allocate_rows, plan_chunks, write_chunks
from convae_lightning.data.features import FeatureConfig
from convae_lightning.data.index import (
    CorpusIndex,
    CorpusOptions,
    IndexedUtterance,
    PaddingPlan,
    index_utterances,
    plan_padding,
    warn_skipped,
    write_skipped_report,
)
from convae_lightning.data.phones import PHONES_48
from convae_lightning.data.splits import SPLITS
from convae_lightning.data.timit import CorpusError, Utterance, find_utterances
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
    workers: int | None = None,
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

    ``batch_size`` phones make a chunk (one STFT batch, one write); ``workers`` processes extract
    the chunks (``None``: one per CPU core, see
    :func:`~convae_lightning.data.extract.resolve_workers`). Neither changes a byte of the cache.
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
    tmp = _start_build(cache_dir, key)
    try:
        index, meta = _index_and_write(
            root, utterances, features, options, tmp, progress, batch_size, workers
        )
        warn_skipped(index.skipped)
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


def _index_and_write(
    root: Path,
    utterances: Sequence[Utterance],
    features: FeatureConfig,
    options: CorpusOptions,
    out_dir: Path,
    progress: bool,
    batch_size: int,
    workers: int | None,
) -> tuple[CorpusIndex, dict]:
    """Index the corpus and write its features into ``out_dir``; return the index and the meta.

    The index reads audio headers only and the feature pass decodes every file, once. A file
    that fails only there (frames that do not decode, NaN samples) is, with ``on_error="skip"``,
    left out by indexing and writing again without it, as the full-decode index would have.
    """
    audio_paths = {u.audio_path for u in utterances}
    audio_errors: dict[Path, CorpusError] = {}
    while True:
        index = index_utterances(
            root, utterances, options, features.sample_rate, decode=False, audio_errors=audio_errors
        )
        plan = plan_padding(index, features, options)
        try:
            meta = _write_features(index, plan, features, out_dir, progress, batch_size, workers)
            return index, meta
        except CorpusError as error:
            found_by_decoding = error.path in audio_paths and error.path not in audio_errors
            if options.on_error == "raise" or not found_by_decoding:
                raise
            audio_errors[error.path] = error


def _write_features(
    index: CorpusIndex,
    plan: PaddingPlan,
    features: FeatureConfig,
    out_dir: Path,
    progress: bool,
    batch_size: int,
    workers: int | None,
) -> dict:
    shape = (features.num_channels, features.num_bins, plan.num_frames)
    speakers = sorted({u.utterance.speaker for items in index.splits.values() for u in items})
    speaker_id = {s: i for i, s in enumerate(speakers)}
    utterances = [u.utterance.utterance_id for s in SPLITS for u in index.splits[s]]
    utterance_id = {u: i for i, u in enumerate(utterances)}
    files = {}
    for split in SPLITS:
        path = out_dir / f"{split}_x.npy"
        files[split] = (path, allocate_rows(path, (plan.kept[split], *shape)))
        rows = _row_labels(index.splits[split], plan, speaker_id, utterance_id)
        for name, values in rows.items():
            np.save(out_dir / f"{split}_{name}.npy", values)
    chunks = plan_chunks(index, plan, files, int(np.prod(shape)) * 4, batch_size)
    with _progress(progress) as bar:
        tasks = {s: bar.add_task(f"features {s}", total=len(index.splits[s])) for s in SPLITS}
        sums = write_chunks(
            chunks,
            features,
            plan.segment_length,
            workers,
            lambda chunk: bar.advance(tasks[chunk.split], len(chunk.audio_paths)),
        )
    total = np.zeros(sums.shape[1], dtype=np.float64)
    for chunk, chunk_sum in zip(chunks, sums, strict=True):  # in chunk order: same bits always
        if chunk.split == "train":
            total += chunk_sum
    mean = (total / max(plan.kept["train"], 1)).astype(np.float32).reshape(shape)
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


def _row_labels(
    items: Sequence[IndexedUtterance],
    plan: PaddingPlan,
    speaker_id: dict[str, int],
    utterance_id: dict[str, int],
) -> dict[str, np.ndarray]:
    """Per kept phone, in cache order: class id, speaker, utterance and ``(start, end)`` span."""
    keeps = [u.ends - u.starts <= plan.max_length for u in items]
    counts = [int(k.sum()) for k in keeps]

    def each(values: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(values).astype(dtype) if values else np.zeros(0, dtype=dtype)

    spans = [np.stack([u.starts[k], u.ends[k]], 1) for u, k in zip(items, keeps, strict=True)]
    return {
        "y": each([u.labels[k] for u, k in zip(items, keeps, strict=True)], np.int64),
        "speaker": np.repeat([speaker_id[u.utterance.speaker] for u in items], counts).astype(
            np.int32
        ),
        "utt": np.repeat([utterance_id[u.utterance.utterance_id] for u in items], counts).astype(
            np.int32
        ),
        "span": np.concatenate(spans) if spans else np.zeros((0, 2), dtype=np.int64),
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
