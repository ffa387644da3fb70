"""Corpus statistics for ``convae data stats``: what a run on this corpus would see."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict

import numpy as np
from rich.console import Console
from rich.table import Table

from convae_lightning.data.features import FeatureConfig
from convae_lightning.data.index import CorpusOptions, SkippedFile, index_corpus, plan_padding
from convae_lightning.data.phones import MAP_48_TO_39, PHONES_39, PHONES_48
from convae_lightning.data.splits import SPLITS

PERCENTILES = (5, 25, 50, 75, 95, 99, 100)


def corpus_stats(
    root: str | os.PathLike,
    options: CorpusOptions | None = None,
    features: FeatureConfig | None = None,
) -> dict:
    """Utterances, speakers, phones per class (48 and 39), durations, the discard count and the
    skipped files, from the same validation pass as ``prepare`` (it rejects what prepare rejects).
    """
    options = options or CorpusOptions()
    features = features or FeatureConfig()
    index = index_corpus(root, options, features.sample_rate)
    plan = plan_padding(index, features, options)
    stats: dict = {
        "root": str(root),
        "splits": {},
        "skipped_files": len(index.skipped),
        "skipped": [asdict(s) for s in index.skipped],
        "corpus_sample_rate": index.corpus_sample_rate,
        "padding": {
            "max_phone_ms": 1000 * plan.max_length / features.sample_rate,
            "num_frames": plan.num_frames,
            "segment_samples": plan.segment_length,
            "patch_shape": [features.num_channels, features.num_bins, plan.num_frames],
        },
    }
    for split in SPLITS:
        items = index.splits[split]
        labels = index.labels(split)
        lengths_ms = 1000 * index.phone_lengths(split) / features.sample_rate
        counts48 = Counter(PHONES_48[i] for i in labels.tolist())
        counts39 = Counter(MAP_48_TO_39[p] for p in counts48.elements())
        stats["splits"][split] = {
            "utterances": len(items),
            "speakers": len({u.utterance.speaker for u in items}),
            "phones": int(labels.size),
            "discarded": plan.discarded[split],
            "kept": plan.kept[split],
            "duration_ms_percentiles": {
                str(p): float(np.percentile(lengths_ms, p)) if lengths_ms.size else None
                for p in PERCENTILES
            },
            "phones_per_class_48": {p: counts48.get(p, 0) for p in PHONES_48},
            "phones_per_class_39": {p: counts39.get(p, 0) for p in PHONES_39},
            "missing_classes_48": [p for p in PHONES_48 if not counts48.get(p)],
        }
    return stats


def print_stats(stats: dict, console: Console | None = None) -> None:
    """Render :func:`corpus_stats` as tables."""
    console = console or Console()
    splits = stats["splits"]
    overview = Table(title=f"Corpus {stats['root']}")
    overview.add_column("")
    for split in splits:
        overview.add_column(split, justify="right")
    rows = ["utterances", "speakers", "phones", "discarded", "kept"]
    for row in rows:
        overview.add_row(row, *(str(splits[s][row]) for s in splits))
    for p in PERCENTILES:
        overview.add_row(
            f"phone ms p{p}",
            *(_fmt(splits[s]["duration_ms_percentiles"][str(p)]) for s in splits),
        )
    console.print(overview)
    pad = stats["padding"]
    console.print(
        f"patches: {pad['patch_shape']} (C, F, T); phones padded to {pad['segment_samples']} "
        f"samples; longest kept phone {pad['max_phone_ms']:.1f} ms; corpus rate "
        f"{stats['corpus_sample_rate']} Hz; skipped files: {stats['skipped_files']}"
    )
    for classes in ("48", "39"):
        table = Table(title=f"Phones per class ({classes} classes)")
        table.add_column("class")
        for split in splits:
            table.add_column(split, justify="right")
        for name in splits["train"][f"phones_per_class_{classes}"]:
            table.add_row(
                name, *(str(splits[s][f"phones_per_class_{classes}"][name]) for s in splits)
            )
        console.print(table)
    for split in splits:
        missing = splits[split]["missing_classes_48"]
        console.print(f"{split}: missing classes (48): {', '.join(missing) if missing else 'none'}")
    if stats["skipped"]:
        # One unwrapped line per file, so that a path can be copied whole.
        console.print(f"skipped {len(stats['skipped'])} bad file(s) (on_error=skip):")
        for skipped in stats["skipped"]:
            console.print(f"  {SkippedFile(**skipped)}", soft_wrap=True, highlight=False)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


__all__ = ["corpus_stats", "print_stats"]
