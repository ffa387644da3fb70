"""``convae data stft-quality [ROOT]``: Table 1 of the thesis on any TIMIT-layout corpus.

Cuts every phone (``q`` dropped, SA sentences left out, as the cache does) out of its utterance,
zero-pads it on both sides to ``num_frames`` frames, and measures how well it survives the STFT
(:mod:`convae_lightning.data.stft_quality`). Prints Table 1 with the thesis's values beside ours
and writes it as Markdown and CSV.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio
from rich.console import Console
from rich.progress import track
from rich.table import Table

from convae_lightning.data.datamodule import embedded_corpus_root
from convae_lightning.data.features import FeatureConfig
from convae_lightning.data.phones import MAP_61_TO_48
from convae_lightning.data.stft_quality import (
    BINS,
    ROWS,
    THESIS_TABLE1,
    Discard,
    Framing,
    Measure,
    OverlapAdd,
    Reading,
    ShortFFT,
    Table1,
    evaluate,
    n_fft_for,
)
from convae_lightning.data.stft_quality import all_readings as every_reading
from convae_lightning.data.timit import Utterance, find_utterances, read_audio, read_phones

ROW_TITLES = {
    "available": "phase available",
    "discarded": "phase discarded ({discard})",
    "real_part": "real part, least squares (our patches)",
}


def phone_segments(
    utterance: Utterance, config: FeatureConfig, length: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The utterance's phones zero-padded on both sides to ``length`` samples (float64), a mask
    of each phone's own samples, and how many phones were longer than ``length`` (left out)."""
    audio, rate = read_audio(utterance.audio_path)
    phones = read_phones(utterance.phn_path, len(audio))
    if rate != config.sample_rate:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, config.sample_rate)
        audio = audio.numpy()
    scale = config.sample_rate / rate
    segments, masks, too_long = [], [], 0
    for phone in phones:
        if MAP_61_TO_48[phone.label] is None:
            continue
        start, end = round(phone.start * scale), min(round(phone.end * scale), len(audio))
        if end - start > length:
            too_long += 1
            continue
        offset = (length - (end - start)) // 2
        segment = np.zeros(length)
        segment[offset : offset + end - start] = audio[start:end]
        mask = np.zeros(length, dtype=bool)
        mask[offset : offset + end - start] = True
        segments.append(segment)
        masks.append(mask)
    if not segments:
        return (
            torch.zeros(0, length, dtype=torch.float64),
            torch.zeros(0, length, dtype=torch.bool),
            too_long,
        )
    return torch.from_numpy(np.stack(segments)), torch.from_numpy(np.stack(masks)), too_long


def _batches(
    utterances: Sequence[Utterance],
    config: FeatureConfig,
    length: int,
    batch_size: int,
    max_segments: int | None,
    progress: bool,
    counts: dict[str, int],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``batch_size`` padded segments and their phone masks, up to ``max_segments``."""
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    held = 0
    limit = max_segments if max_segments is not None else math.inf
    for utterance in track(utterances, "stft-quality (utterances)", disable=not progress):
        segments, masks, too_long = phone_segments(utterance, config, length)
        counts["too_long"] += too_long
        take = int(min(len(segments), limit - counts["segments"] - held))
        pending.append((segments[:take], masks[:take]))
        held += take
        while held >= batch_size:
            audio, mask = (torch.cat(parts) for parts in zip(*pending, strict=True))
            yield audio[:batch_size], mask[:batch_size]
            pending, held = [(audio[batch_size:], mask[batch_size:])], held - batch_size
            counts["segments"] += batch_size
        if counts["segments"] + held >= limit:
            break
    if held:
        counts["segments"] += held
        yield tuple(torch.cat(parts) for parts in zip(*pending, strict=True))


def stft_quality(
    root: str | None = None,
    out: str | None = None,
    max_utterances: int | None = None,
    max_segments: int | None = None,
    num_frames: int = 16,
    bins: Sequence[int] = BINS,
    short_fft: ShortFFT = "wrap",
    discard: Discard = "real_part",
    overlap_add: OverlapAdd = "normalised",
    measure: Measure = "waveform",
    all_readings: bool = False,
    griffin_lim_iters: int = 32,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> Table1:
    """Reproduce Table 1 of the thesis: correlation of each phone's audio with its STFT
    reconstruction, per number of frequency bins, with and without phase (docs/table1.md).

    Args:
        root: corpus folder (holding TRAIN/ and TEST/); default: the embedded corpus.
        out: folder to write table1.md and table1.csv into (and readings.md/.csv with
            all_readings); nothing is written without it.
        max_utterances: use at most this many utterances, drawn at random (seed).
        max_segments: stop after this many phone segments.
        num_frames: patch width T: phones are zero-padded to 272 + 152 (T - 1) samples; longer
            ones are left out (thesis: 16).
        bins: the table's columns, in frequency bins (n_fft = 2 (bins - 1)).
        short_fft: reading: wrap or truncate a frame longer than the FFT (101 bins).
        discard: reading: how audio is rebuilt without phase: real_part, zero_phase or
            griffin_lim.
        overlap_add: reading: normalised (least-squares inverse STFT) or plain.
        measure: reading: waveform, waveform_phone, best_lag or spectrogram correlation.
        all_readings: measure every reading as well and rank them by their distance to the
            thesis's numbers.
        griffin_lim_iters: Griffin-Lim iterations (discard=griffin_lim).
        batch_size: segments analysed at once.
        seed: seed of the utterance draw.
        progress: show a progress bar.
    """
    chosen = Reading(short_fft, discard, overlap_add, measure)
    config = FeatureConfig()
    _check_options(config, bins, max_utterances, max_segments, num_frames, batch_size)
    corpus = Path(root) if root is not None else embedded_corpus_root()
    utterances = find_utterances(corpus)
    order = np.random.default_rng(seed).permutation(len(utterances))[:max_utterances]
    utterances = [utterances[i] for i in order]
    readings = [chosen, *(r for r in every_reading() if r != chosen)] if all_readings else [chosen]
    table = Table1(readings, bins)
    length = config.segment_length(num_frames)
    counts = {"segments": 0, "too_long": 0}
    console = Console()
    for audio, mask in _batches(
        utterances, config, length, batch_size, max_segments, progress, counts
    ):
        evaluate(table, audio, mask, config, griffin_lim_iters)
    if not table.segments:
        raise ValueError(
            f"{corpus}: no phone of at most {length} samples ({num_frames} frames) found; "
            "raise num_frames"
        )
    note = (
        f"corpus {corpus}: {table.segments} phone segments (zero-padded to {length} samples, "
        f"{num_frames} frames; {counts['too_long']} longer phones left out)"
    )
    console.print(note)
    console.print(_rich_table(table, chosen))
    if all_readings:
        console.print(_rich_ranking(table))
    if out is not None:
        _write_outputs(Path(out), table, chosen, note, all_readings)
        console.print(f"wrote {out}")
    return table


def _check_options(
    config: FeatureConfig,
    bins: Sequence[int],
    max_utterances: int | None,
    max_segments: int | None,
    num_frames: int,
    batch_size: int,
) -> None:
    for name, value in (
        ("max_utterances", max_utterances),
        ("max_segments", max_segments),
        ("num_frames", num_frames),
        ("batch_size", batch_size),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if not bins:
        raise ValueError("bins must name at least one number of frequency bins")
    for count in bins:
        if count < 2:
            raise ValueError(f"bins must be at least 2 each, got {count!r}")
        Framing(config, n_fft_for(count))  # rejects FFTs shorter than the hop


def _thesis(row: str, bins: int) -> str:
    value = THESIS_TABLE1.get(row, {}).get(bins, "")
    return "N/A" if value is None else ("" if value == "" else f"{value:.2f}")


def _title(row: str, reading: Reading) -> str:
    return ROW_TITLES[row].format(discard=reading.discard)


def _cells(table: Table1, reading: Reading) -> list[list[str]]:
    """Rows of ``[title, "ours (thesis)" per bins]``."""
    rows = []
    for row in ROWS:
        cells = [_title(row, reading)]
        for bins in table.bins:
            thesis = _thesis(row, bins)
            ours = f"{table.cell(reading, row, bins):.2f}"
            cells.append(f"{ours} (thesis {thesis})" if thesis else ours)
        rows.append(cells)
    return rows


def _rich_table(table: Table1, reading: Reading) -> Table:
    title = (
        f"Table 1, reading {reading.name}: distance to the thesis "
        f"{table.distance(reading):.3f} (RMS over its numeric cells)"
    )
    out = Table(title=title)
    out.add_column("phase information")
    for bins in table.bins:
        out.add_column(f"{bins} bins", justify="right")
    for cells in _cells(table, reading):
        out.add_row(*cells)
    return out


def _rich_ranking(table: Table1, top: int = 10) -> Table:
    out = Table(title=f"The {top} readings closest to the thesis (all in readings.md)")
    out.add_column("distance", justify="right")
    out.add_column("reading")
    for row in ROWS[:2]:
        out.add_column(row, justify="right")
    for reading in table.ranked()[:top]:
        out.add_row(
            f"{table.distance(reading):.3f}",
            reading.name,
            *(
                " ".join(f"{table.cell(reading, row, b):.2f}" for b in table.bins)
                for row in ROWS[:2]
            ),
        )
    return out


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_outputs(
    out: Path, table: Table1, reading: Reading, note: str, all_readings: bool
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    header = ["phase information", *(f"{b} bins" for b in table.bins)]
    distance = f"{table.distance(reading):.3f}"
    files = {
        "table1.md": f"# Table 1: STFT reconstruction correlation\n\n{note}.\n\nReading "
        f"`{reading.name}`; distance to the thesis (RMS over its numeric cells): {distance}.\n\n"
        + _markdown(header, _cells(table, reading)),
        "table1.csv": _csv(
            ["row", "bins", "n_fft", "ours", "thesis", "reading", "segments"],
            [
                [
                    row,
                    b,
                    n_fft_for(b),
                    f"{table.cell(reading, row, b):.4f}",
                    _thesis(row, b),
                    reading.name,
                    table.segments,
                ]
                for row in ROWS
                for b in table.bins
            ],
        ),
    }
    if all_readings:
        columns = [f"{row}_{b}" for row in ROWS for b in table.bins]
        ranked = [
            [i + 1, r.name, f"{table.distance(r):.4f}"]
            + [f"{table.cell(r, row, b):.4f}" for row in ROWS for b in table.bins]
            for i, r in enumerate(table.ranked())
        ]
        header = ["rank", "reading", "distance", *columns]
        thesis = ["", "thesis", ""] + [_thesis(row, b) for row in ROWS for b in table.bins]
        files["readings.csv"] = _csv(header, ranked)
        files["readings.md"] = (
            f"# Table 1 under every reading\n\n{note}. Distance: RMS difference from the "
            "thesis over its numeric cells. Cells are `{row}_{bins}`.\n\n"
            + _markdown(header, [thesis, *[[str(c) for c in r] for r in ranked]])
        )
    for name, text in files.items():
        _write_atomic(out / name, text)


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: a reader never sees half a table."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


__all__ = ["phone_segments", "stft_quality"]
