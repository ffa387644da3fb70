"""Speaker-disjoint train / validation / test splits of a TIMIT-layout corpus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from convae_lightning.data.timit import Utterance

SplitScheme = Literal["thesis", "standard"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

# The 24-speaker core test set and the 50-speaker development set of Halberstadt (1998), both drawn
# from TIMIT's TEST folder; the training set is the whole TRAIN folder (462 speakers).
CORE_TEST_SPEAKERS: frozenset[str] = frozenset(
    "MDAB0 MWBT0 FELC0 MTAS1 MWEW0 FPAS0 MJMP0 MLNT0 FPKT0 MLLL0 MTLS0 FJLM0 "
    "MBPM0 MKLT0 FNLP0 MCMJ0 MJDH0 FMGD0 MGRT0 MNJM0 FDHC0 MJLN0 MPAM0 FMLD0".split()
)
DEV_SPEAKERS: frozenset[str] = frozenset(
    "FAKS0 FDAC1 FJEM0 MGWT0 MJAR0 MMDB1 MMDM2 MPDF0 FCMH0 FKMS0 MBDG0 MBWM0 MCSH0 FADG0 "
    "FDMS0 FEDW0 MGJF0 MGLB0 MRTK0 MTAA0 MTDT0 MTHC0 MWJG0 FNMR0 FREW0 FSEM0 MBNS0 MMJR0 "
    "MDLS0 MDLF0 MDVC0 MERS0 FMAH0 FDRW0 MRCS0 MRJM4 FCAL1 MMWH0 FJSJ0 MAJC0 MJSW0 MREB0 "
    "FGJD0 FJMG0 MROA0 MTEB0 MJFC0 MRJR0 FMML0 MRWS1".split()
)


def assign_splits(
    utterances: Sequence[Utterance],
    scheme: SplitScheme = "thesis",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[Utterance]]:
    """Split utterances into ``train``/``val``/``test`` without any speaker crossing splits.

    ``thesis``: train = TRAIN, test = TEST, validation = ``val_fraction`` of the TRAIN speakers
    (at least one), drawn in a seeded order from each dialect region in turn.
    ``standard``: train = TRAIN, validation = the 50-speaker development set, test = the 24-speaker
    core test set (both from TEST; other TEST speakers are unused).

    Raises:
        ValueError: for an unknown scheme, a ``val_fraction`` outside [0, 1), or a ``standard``
            split on a corpus that lacks TIMIT's development/core-test speakers.
    """
    if scheme not in ("thesis", "standard"):
        raise ValueError(f"split_scheme must be 'thesis' or 'standard', got {scheme!r}")
    train = [u for u in utterances if u.split == "train"]
    test = [u for u in utterances if u.split == "test"]
    if scheme == "standard":
        dev = [u for u in test if u.speaker in DEV_SPEAKERS]
        core = [u for u in test if u.speaker in CORE_TEST_SPEAKERS]
        if not dev or not core:
            raise ValueError(
                "split_scheme='standard' needs TIMIT's 50 development and 24 core-test speakers "
                f"in the TEST folder; this corpus has {len(dev)} development and {len(core)} "
                "core-test utterances. Use split_scheme='thesis' for other corpora."
            )
        return {"train": train, "val": dev, "test": core}
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    val_speakers = _held_out_speakers(train, val_fraction, seed)
    return {
        "train": [u for u in train if u.speaker not in val_speakers],
        "val": [u for u in train if u.speaker in val_speakers],
        "test": test,
    }


def _held_out_speakers(train: Sequence[Utterance], fraction: float, seed: int) -> set[str]:
    """``round(fraction * speakers)`` TRAIN speakers (at least one when ``fraction > 0``), taken
    in turn from the dialect regions in a seeded order, so small corpora stay balanced too."""
    by_region: dict[str, set[str]] = {}
    for u in train:
        by_region.setdefault(u.dialect, set()).add(u.speaker)
    total = sum(len(v) for v in by_region.values())
    count = max(1, round(total * fraction)) if fraction > 0 and total > 1 else 0
    rng = np.random.default_rng(seed)
    queues = {r: rng.permutation(sorted(by_region[r])).tolist() for r in sorted(by_region)}
    order = rng.permutation(sorted(queues)).tolist()
    chosen: set[str] = set()
    while len(chosen) < count:
        for region in order:
            if queues[region] and len(chosen) < count:
                chosen.add(queues[region].pop())
    return chosen


__all__ = ["CORE_TEST_SPEAKERS", "DEV_SPEAKERS", "SPLITS", "SplitScheme", "assign_splits"]
