"""``convae data ...`` subcommands (jsonargparse builds their CLI from these signatures)."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from rich.console import Console

from convae_lightning.data.datamodule import TimitDataModule
from convae_lightning.data.features import Representation
from convae_lightning.data.index import CorpusOptions, SkippedFile, write_skipped_report
from convae_lightning.data.profile import (
    energy_profile,
    padding_only_frames,
    print_profile,
    save_profile_figure,
)
from convae_lightning.data.splits import SplitScheme
from convae_lightning.data.stats import corpus_stats, print_stats
from convae_lightning.data.timit import OnError, embedded_corpus_root


def stats(
    root: str | None = None,
    split_scheme: SplitScheme = "thesis",
    val_fraction: float = 0.1,
    include_sa: bool = False,
    discard_longest: float = 0.05,
    on_error: OnError = "raise",
    json_output: bool = False,
    skipped_report: str | None = None,
) -> None:
    """Describe a TIMIT-layout corpus: utterances, speakers, phones per class, durations.

    Args:
        root: corpus folder (holding TRAIN/ and TEST/); default: the embedded corpus.
        split_scheme: thesis or standard.
        val_fraction: share of TRAIN speakers held out for validation (thesis scheme).
        include_sa: keep the SA sentences.
        discard_longest: fraction of longest training phones discarded before padding.
        on_error: raise on the first bad file, or skip bad files, each one listed.
        json_output: print JSON instead of tables.
        skipped_report: also write the skipped files to this TSV file (path, line, reason).
    """
    options = CorpusOptions(
        include_sa=include_sa,
        split_scheme=split_scheme,
        val_fraction=val_fraction,
        discard_longest=discard_longest,
        on_error=on_error,
    )
    result = corpus_stats(root or embedded_corpus_root(), options)
    if skipped_report is not None:
        write_skipped_report(skipped_report, [SkippedFile(**s) for s in result["skipped"]])
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        print_stats(result, Console())


def prepare(
    root: str | None = None,
    cache_dir: str | None = None,
    split_scheme: SplitScheme = "thesis",
    val_fraction: float = 0.1,
    include_sa: bool = False,
    discard_longest: float = 0.05,
    num_frames: int | None = None,
    representation: Representation = "real",
    n_mels: int = 40,
    n_mfcc: int = 13,
    deltas: int = 0,
    on_error: OnError = "raise",
    seed: int = 0,
    workers: int | None = None,
    profile: Literal["train", "val", "test"] | None = None,
    profile_image: str | None = None,
) -> None:
    """Build the feature cache of a corpus (what a training run's prepare_data does).

    Args:
        root: corpus folder (holding TRAIN/ and TEST/); default: the embedded corpus.
        cache_dir: where caches live (default $CONVAE_CACHE_DIR or ~/.cache/convae-lightning).
        split_scheme: thesis or standard.
        val_fraction: share of TRAIN speakers held out for validation (thesis scheme).
        include_sa: keep the SA sentences.
        discard_longest: fraction of longest training phones discarded before padding.
        num_frames: force the patch width T.
        representation: real, magnitude, magnitude_phase, real_imag, log_mel or mfcc.
        n_mels: mel bands of log_mel and mfcc.
        n_mfcc: cepstral coefficients of mfcc.
        deltas: 0, 1 or 2 delta channels.
        on_error: raise on the first bad file, or skip bad files, each one listed (and in
            skipped.tsv in the cache folder).
        seed: seed of the validation-speaker choice.
        workers: processes extracting features (default: one per CPU core, at most 8, one for
            a small corpus; 1: this process only). The cache is the same whatever the count.
        profile: also show where this split's mean-removed patches hold their squared norm
            (what the Euclidean error weights): per frame, per row, and in the zero padding.
        profile_image: also draw that profile into this PNG file (needs ``profile``).
    """
    if profile_image is not None and profile is None:
        raise ValueError("--profile_image needs --profile SPLIT (train, val or test)")
    datamodule = TimitDataModule(
        root=root,
        cache_dir=cache_dir,
        split_scheme=split_scheme,
        val_fraction=val_fraction,
        include_sa=include_sa,
        discard_longest=discard_longest,
        num_frames=num_frames,
        representation=representation,
        n_mels=n_mels,
        n_mfcc=n_mfcc,
        deltas=deltas,
        on_error=on_error,
        seed=seed,
        prepare_workers=workers,
    )
    datamodule.prepare_data()
    datamodule.setup()
    meta = datamodule.meta
    console = Console()
    console.print(f"cache: {datamodule.cache_path}")
    console.print(f"patch shape (C, F, T): {tuple(meta['input_shape'])}")
    for split in ("train", "val", "test"):
        console.print(
            f"{split}: {meta['kept'][split]} phones kept, {meta['discarded'][split]} discarded "
            f"(longer than {meta['max_phone_length']} samples), "
            f"{len(meta['split_speakers'][split])} speakers"
        )
    if meta["skipped"]:
        report = datamodule.cache_path / "skipped.tsv"
        console.print(f"skipped {len(meta['skipped'])} bad file(s), listed in {report}:")
        for line in meta["skipped"]:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
    if profile is not None:
        _profile(datamodule, profile, profile_image, console)


def _profile(datamodule: TimitDataModule, split: str, image: str | None, console: Console) -> None:
    spans = np.load(datamodule.cache_path / f"{split}_span.npy")
    patches = np.load(datamodule.cache_path / f"{split}_x.npy", mmap_mode="r")
    if len(patches) == 0:
        raise ValueError(f"the {split} split of {datamodule.root} holds no phones to profile")
    padding = padding_only_frames(
        spans[:, 1] - spans[:, 0], datamodule.segment_length, patches.shape[-1], datamodule.features
    )
    result = energy_profile(patches, datamodule.mean_spectrogram, padding)
    title = f"{datamodule.features.representation} patches, {split}"
    print_profile(result, title, console)
    if image is not None:
        console.print(f"profile figure: {save_profile_figure(result, title, image)}")
