"""Corpus reading, phone maps, features, resampling and the DataModule."""

from convae_lightning.data.datamodule import PatchDataset, TimitDataModule, embedded_corpus_root
from convae_lightning.data.features import FeatureConfig, PatchExtractor, patch_to_audio
from convae_lightning.data.prepare import CorpusOptions, build_cache
from convae_lightning.data.sampler import StratifiedResampler
from convae_lightning.data.timit import CorpusError, Utterance, find_utterances

__all__ = [
    "CorpusError",
    "CorpusOptions",
    "FeatureConfig",
    "PatchDataset",
    "PatchExtractor",
    "StratifiedResampler",
    "TimitDataModule",
    "Utterance",
    "build_cache",
    "embedded_corpus_root",
    "find_utterances",
    "patch_to_audio",
]
