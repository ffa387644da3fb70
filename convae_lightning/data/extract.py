"""The feature pass of the cache build: audio decoded once, patches written in fixed chunks.

The utterances of each split are cut into chunks of consecutive utterances (about ``rows``
phones each), and each chunk owns a fixed slice of rows of its split's ``{split}_x.npy``. A chunk is
decoded, padded, transformed and written as one batch, with one ``pwrite``, by whichever process
takes it: the building process alone (``workers=1``), or it and forked workers writing disjoint
slices of the same preallocated files. Chunks and the order their sums are added in do not depend
on the number of workers, so a parallel build writes the same bytes as a serial one.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convae_lightning.data.features import FeatureConfig, PatchExtractor
from convae_lightning.data.index import CorpusIndex, PaddingPlan
from convae_lightning.data.timit import read_audio

#: How long the parent waits for a worker's message before checking that the workers still live.
_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Chunk:
    """Consecutive utterances of one split and the rows of ``path`` their kept phones fill.

    ``starts``/``ends`` hold the kept phones of each utterance (samples at the feature rate);
    ``offset`` is the byte offset of the chunk's first row in the ``.npy`` file.
    """

    split: str
    path: Path
    offset: int
    rows: int
    audio_paths: tuple[Path, ...]
    starts: tuple[np.ndarray, ...]
    ends: tuple[np.ndarray, ...]


def allocate_rows(path: Path, shape: tuple[int, ...]) -> int:
    """Create ``path`` as a float32 ``.npy`` of ``shape`` (sparse, not yet written) and return the
    byte offset of its first row.

    Rows are written with plain file I/O (``pwrite``), not through a memmap, which would count
    every written page in the process's resident set: they go to the page cache, and peak RSS
    stays near one chunk.
    """
    with open(path, "wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)
        offset = fh.tell()
        fh.truncate(offset + int(np.prod(shape)) * 4)
    return offset


def plan_chunks(
    index: CorpusIndex,
    plan: PaddingPlan,
    files: dict[str, tuple[Path, int]],
    row_bytes: int,
    rows: int,
) -> list[Chunk]:
    """Cut every split's utterances, in cache order, into chunks of at least ``rows`` kept phones
    (the last one of a split fewer); ``files`` maps each split to its ``.npy`` and data offset."""
    chunks: list[Chunk] = []
    for split, (path, offset) in files.items():
        first = 0
        pending: list[tuple[Path, np.ndarray, np.ndarray]] = []
        filled = 0
        items = index.splits[split]
        for position, item in enumerate(items):
            keep = item.ends - item.starts <= plan.max_length
            pending.append((item.utterance.audio_path, item.starts[keep], item.ends[keep]))
            filled += int(keep.sum())
            if filled >= rows or position == len(items) - 1:
                paths, starts, ends = zip(*pending, strict=True)
                chunks.append(
                    Chunk(split, path, offset + first * row_bytes, filled, paths, starts, ends)
                )
                first += filled
                pending, filled = [], 0
    return chunks


def centred_offsets(lengths: np.ndarray, segment_length: int) -> np.ndarray:
    """Where each phone of ``lengths`` samples starts in its zero-padded segment: centred
    (thesis 2.1), the odd sample of padding after it."""
    return (segment_length - np.asarray(lengths, dtype=np.int64)) // 2


def extract_chunk(chunk: Chunk, extractor: PatchExtractor, segment_length: int) -> np.ndarray:
    """Decode, pad, transform and write one chunk; return the float64 sum of its patches.

    Each phone is zero-padded on both sides to ``segment_length`` samples, centred (thesis 2.1);
    rows carry the STFT's side padding too, so the batch goes to the transform without a copy.

    Raises:
        CorpusError: naming the audio file that fails to decode (or holds non-finite samples).
    """
    config = extractor.config
    sample_rate = config.sample_rate
    pad = extractor.side_pad
    batch = np.zeros((chunk.rows, segment_length + 2 * pad), dtype=np.float32)
    row = 0
    for path, starts, ends in zip(chunk.audio_paths, chunk.starts, chunk.ends, strict=True):
        audio, rate = read_audio(path)
        if rate != sample_rate:
            import torchaudio  # only for resampling: the common path needs torch alone

            audio = torchaudio.functional.resample(
                torch.from_numpy(audio), rate, sample_rate
            ).numpy()
        offsets = pad + centred_offsets(ends - starts, segment_length)
        for start, end, at in zip(starts.tolist(), ends.tolist(), offsets.tolist(), strict=True):
            piece = audio[start:end]
            batch[row, at : at + len(piece)] = piece
            row += 1
    if not chunk.rows:  # every phone too long: the audio was still checked
        return np.zeros(_width(config, segment_length), dtype=np.float64)
    patches = extractor(torch.from_numpy(batch), prepadded=True).numpy()
    data = memoryview(np.ascontiguousarray(patches, dtype="<f4")).cast("B")
    fd = os.open(chunk.path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, chunk.offset)
    finally:
        os.close(fd)
    # numpy adds the rows in order, one thread: the same bits whichever process runs the chunk.
    return np.add.reduce(patches.reshape(chunk.rows, -1), axis=0, dtype=np.float64)


def resolve_workers(workers: int | None, chunks: int) -> int:
    """Processes (this one included) for ``chunks`` chunks: ``workers``, never more than chunks.

    ``None``: one per usable CPU core, at most 8 (beyond, the disk and the page cache rather than
    the CPU bound the build) and at most one per 2 chunks (starting a worker costs about as much
    as a chunk: a small corpus builds faster in one process).
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = min(cores or 1, 8, chunks // 2)
    return max(1, min(workers, chunks))


def write_chunks(
    chunks: Sequence[Chunk],
    features: FeatureConfig,
    segment_length: int,
    workers: int | None = None,
    on_done: Callable[[Chunk], None] | None = None,
) -> np.ndarray:
    """Extract every chunk, in this process or in worker processes; return their sums, one row per
    chunk (float64 ``(len(chunks), C * F * T)``), once every file is on disk (``fsync``: the rename
    that publishes a cache must not outrun its data). ``on_done`` is called as each chunk
    completes.

    Raises:
        CorpusError: the first audio file that failed to decode; the other workers are stopped.
        RuntimeError: a worker process died without a word (killed, out of memory).
    """
    workers = resolve_workers(workers, len(chunks))
    width = _width(features, segment_length)
    with _Syncer(chunks) as syncer:

        def done(chunk: Chunk) -> None:
            syncer.done(chunk)
            if on_done is not None:
                on_done(chunk)

        if workers > 1:
            return _write_in_workers(chunks, features, segment_length, workers, width, done)
        extractor = PatchExtractor(features)
        sums = np.zeros((len(chunks), width), dtype=np.float64)
        for i, chunk in enumerate(chunks):
            sums[i] = extract_chunk(chunk, extractor, segment_length)
            done(chunk)
        return sums


class _Syncer:
    """Flushes each file to disk in a thread as soon as its last chunk is written, so that the
    disk writes of one split overlap the extraction of the next; on exit, waits for all."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.pending = Counter(chunk.path for chunk in chunks)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convae-fsync")
        self.futures: list[Future] = []

    def done(self, chunk: Chunk) -> None:
        self.pending[chunk.path] -= 1
        if not self.pending[chunk.path]:
            self.futures.append(self.thread.submit(_fsync, chunk.path))

    def __enter__(self) -> _Syncer:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.thread.shutdown(wait=True, cancel_futures=kind is not None)
        if kind is None:
            for future in self.futures:
                future.result()  # an I/O error of a flush surfaces here


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _width(features: FeatureConfig, segment_length: int) -> int:
    """Values in one patch, ``C * F * T``."""
    return features.num_channels * features.num_bins * features.frames_for(segment_length)


def _context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds (torch already imported); where fork is unsafe or
    # missing (macOS, Windows), spawn.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _write_in_workers(
    chunks: Sequence[Chunk],
    features: FeatureConfig,
    segment_length: int,
    workers: int,
    width: int,
    on_done: Callable[[Chunk], None],
) -> np.ndarray:
    context = _context()
    # Every process takes the next chunk from a shared counter (a busy core takes fewer) and puts
    # its sums in shared memory; messages carry only (chunk, error), so a worker never blocks on
    # a full pipe and, its parent gone, still runs out of chunks and exits. The parent is one of
    # the workers: one fork fewer (~50 ms of a 700 MB process here), and no core waits idle.
    next_chunk = context.Value("q", 0)
    shared = context.RawArray("d", len(chunks) * width)
    sums = np.frombuffer(shared, dtype=np.float64).reshape(len(chunks), width)
    messages = context.Queue()
    args = (chunks, features, segment_length, next_chunk, shared, messages)
    processes = [
        context.Process(target=_worker, args=args, daemon=True, name=f"convae-features-{n}")
        for n in range(1, workers)
    ]
    threads = torch.get_num_threads()
    try:
        for process in processes:
            process.start()
        torch.set_num_threads(1)  # one core per process: the processes are the parallelism
        extractor = PatchExtractor(features)
        remaining = len(chunks)
        while (i := _claim(next_chunk, len(chunks))) is not None:
            sums[i] = extract_chunk(chunks[i], extractor, segment_length)
            on_done(chunks[i])
            remaining -= 1 + _receive(messages, chunks, on_done, block=False)
        while remaining:
            received = _receive(messages, chunks, on_done, block=True)
            if not received:
                _check_alive(processes)
            remaining -= received
    finally:
        torch.set_num_threads(threads)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        messages.close()
    return sums.copy()


def _claim(next_chunk: multiprocessing.sharedctypes.Synchronized, count: int) -> int | None:
    """The next chunk nobody took yet, or ``None`` when all are taken."""
    with next_chunk.get_lock():
        i = next_chunk.value
        next_chunk.value += 1
    return i if i < count else None


def _receive(
    messages: multiprocessing.Queue,
    chunks: Sequence[Chunk],
    on_done: Callable[[Chunk], None],
    block: bool,
) -> int:
    """Handle the workers' messages waiting (``block``: at least one, or a poll's wait); return
    how many chunks they reported done. A worker's error is raised here."""
    received = 0
    while True:
        try:
            i, error = messages.get(block=block and not received, timeout=_POLL_SECONDS)
        except queue.Empty:
            return received
        if error is not None:
            raise error
        on_done(chunks[i])
        received += 1


def _check_alive(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Raise if a worker died, or all ended while chunks are still unreported."""
    dead = [p for p in processes if p.exitcode not in (None, 0)]
    if dead or all(p.exitcode is not None for p in processes):
        culprit = dead[0] if dead else processes[0]
        raise RuntimeError(
            f"feature worker {culprit.name} (pid {culprit.pid}) ended with exit code "
            f"{culprit.exitcode} before every chunk was written"
        )


def _worker(
    chunks: Sequence[Chunk],
    features: FeatureConfig,
    segment_length: int,
    next_chunk: multiprocessing.sharedctypes.Synchronized,
    shared: multiprocessing.sharedctypes.SynchronizedArray,
    messages: multiprocessing.Queue,
) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # one core per process: the processes are the parallelism
    extractor = PatchExtractor(features)
    sums = np.frombuffer(shared, dtype=np.float64).reshape(len(chunks), -1)
    while (i := _claim(next_chunk, len(chunks))) is not None:
        try:
            sums[i] = extract_chunk(chunks[i], extractor, segment_length)
        except Exception as error:  # sent to the parent, which raises it
            try:
                pickle.dumps(error)
            except Exception:  # an exception that cannot travel goes as its text
                error = RuntimeError(f"{type(error).__name__}: {error}")
            messages.put((i, error))
            return
        messages.put((i, None))


__all__ = [
    "Chunk",
    "allocate_rows",
    "extract_chunk",
    "plan_chunks",
    "resolve_workers",
    "write_chunks",
]
