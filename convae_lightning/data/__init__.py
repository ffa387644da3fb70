"""Corpus reading -> patches -> sampler -> DataModule.

Making corpora (Festival speech, toy tones, TIMIT-layout writing) is :mod:`convae_lightning.synth`.
"""

from convae_lightning.data.datamodule import PatchDataset, TimitDataModule
from convae_lightning.data.features import FeatureConfig, PatchExtractor, patch_to_audio
from convae_lightning.data.prepare import CorpusOptions, build_cache
from convae_lightning.data.sampler import StratifiedResampler
from convae_lightning.data.timit import (
    CorpusError,
    Segment,
    Utterance,
    embedded_corpus_root,
    find_utterances,
)

__all__ = [
    "CorpusError",
    "CorpusOptions",
    "FeatureConfig",
    "PatchDataset",
    "PatchExtractor",
    "Segment",
    "StratifiedResampler",
    "TimitDataModule",
    "Utterance",
    "build_cache",
    "embedded_corpus_root",
    "find_utterances",
    "patch_to_audio",
]
