"""The one DataModule: TIMIT-layout corpus -> cached patches -> resampled batches."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal, get_args

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from convae_lightning.data.features import (
    FeatureConfig,
    Representation,
    WindowPosition,
    audio_to_patches,
)
from convae_lightning.data.memory import HOLD_FEATURES, HoldFeatures, TensorBatches, choose_hold
from convae_lightning.data.phones import PHONES_48
from convae_lightning.data.prepare import CorpusOptions, build_cache, default_cache_dir
from convae_lightning.data.sampler import StratifiedResampler
from convae_lightning.data.splits import SplitScheme
from convae_lightning.data.timit import OnError, embedded_corpus_root, read_audio
from convae_lightning.runs import EVAL_VIEWS

log = logging.getLogger(__name__)

EvalDistribution = Literal["balanced", "natural", "both"]
Split = Literal["val", "train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


class PatchDataset(Dataset):
    """Patches of one split, memory-mapped; fetches whole batches at once (``__getitems__``).

    The cache stores patches as computed; the training mean (``mean``) is subtracted here, per
    batch, rather than by rewriting the cache when it is built.
    """

    def __init__(
        self, features: np.ndarray, labels: np.ndarray, mean: np.ndarray | None = None
    ) -> None:
        self.features = features
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.mean = mean

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0][0], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One fancy-indexing read per batch instead of one per sample (sorted for locality).
        order = np.argsort(indices, kind="stable")
        sorted_idx = np.asarray(indices)[order]
        batch = np.empty((len(indices), *self.features.shape[1:]), dtype=np.float32)
        batch[order] = self.features[sorted_idx]
        if self.mean is not None:
            batch -= self.mean
        return torch.from_numpy(batch), self.labels[torch.as_tensor(indices)]

    def load(self) -> torch.Tensor:
        """All patches in RAM, mean subtracted: what ``hold_features: memory`` trains on."""
        features = torch.from_numpy(np.array(self.features, dtype=np.float32))
        if self.mean is not None:
            features -= torch.from_numpy(self.mean)
        return features


class IndexedPatches(Dataset):
    """Batches ``(x, y, index)`` of a dataset's rows: what ``predict_step`` receives, so the
    writer can put utterance ids and spans beside each prediction."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = self.dataset.__getitems__(indices)  # type: ignore[attr-defined]
        return x, y, torch.as_tensor(indices, dtype=torch.int64)


class _Patches(Dataset):
    """In-memory patches with their labels (``-1``: unknown), batched like :class:`PatchDataset`."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.features[index], self.labels[index]


def _collate_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch  # the datasets' __getitems__ already return a collated batch


class TimitDataModule(pl.LightningDataModule):
    """TIMIT (or any TIMIT-layout corpus) as 201 x T spectrogram patches of single phones.

    ``prepare_data`` builds the feature cache once (keyed by the corpus file list and every
    setting below); ``setup`` memory-maps it. Training batches are stratified-resampled every epoch
    (``train_per_class`` per class); validation and test report the ``balanced`` (stratified: one
    draw of ``eval_per_class`` per class, the same at every evaluation) and/or ``natural`` (every
    phone once) distributions, in the order given by :attr:`eval_views` (one dataloader each).

    Args:
        root: corpus folder holding ``TRAIN``/``TEST``; ``None`` uses the embedded synthetic corpus.
        cache_dir: where feature caches live (default ``$CONVAE_CACHE_DIR`` or
            ``~/.cache/convae-lightning``).
        split_scheme: ``thesis`` (validation = held-out TRAIN speakers) or ``standard``
            (50-speaker development set, 24-speaker core test set).
        val_fraction: share of TRAIN speakers held out for validation (``thesis`` scheme).
        include_sa: keep the SA sentences (thesis: dropped).
        discard_longest: fraction of longest training phones dropped before padding (thesis 5%).
        num_frames: force the patch width T (``None``: from the longest kept phone).
        window_position: where the 25 ms window sits in the 400-sample FFT frame: ``start``
            (MATLAB's ``fft(x, n)`` zero-pads at the end; the thesis's patches) or ``center``
            (``torch.stft``'s convention). See docs/table1.md.
        representation: ``real`` (thesis), ``magnitude``, ``magnitude_phase``, ``real_imag``,
            ``log_mel`` or ``mfcc``.
        deltas: add delta (1) or delta and delta-delta (2) channels.
        sample_rate: the corpus is resampled to this rate first.
        n_mels: mel bands (``log_mel``, ``mfcc``).
        n_mfcc: cepstral coefficients (``mfcc``).
        train_per_class: examples per class per training epoch (thesis: 500).
        eval_per_class: examples per class in balanced evaluation (thesis: 200).
        eval_distribution: ``balanced``, ``natural`` or ``both``.
        val_split: split the validation loaders read: ``val``; ``train`` or ``test`` evaluate an
            (untrained) model on those splits with ``lightning validate``.
        batch_size: examples per batch.
        num_workers: dataloader workers when the features stay on disk; ``None`` picks 0 on CPU
            (batches are single memmap reads, workers would only compete with training for the
            cores) and 4 with a GPU.
        hold_features: where training and evaluation read the features: ``disk`` (the
            memory-mapped cache, one read per batch), ``memory`` (loaded into RAM), ``device``
            (on the trainer's accelerator: batches never cross the bus) or ``auto`` (the
            accelerator, else RAM, wherever they take at most a quarter of the free memory,
            else the disk). The batches are the same whichever is chosen.
        predict_split: split whose phones ``convae predict`` runs on (every phone once, in cache
            order).
        predict_audio: an audio file ``convae predict`` runs on instead: resampled to
            ``sample_rate``, cut into consecutive segments of one patch's length (labels -1).
        on_error: ``raise`` on the first bad corpus file, or ``skip`` bad files with a warning.
        seed: seed of the per-epoch resampling and of the validation-speaker choice.
        progress: show a progress bar while building the cache.
        prepare_workers: processes that extract features while building the cache: ``None``
            uses one per CPU core (at most 8; one for a small corpus), 1 builds in this process
            alone. The cache is the same bytes whatever the count (not part of its key).

    Raises:
        ValueError: for a bad value, or ``val_fraction: 0`` with ``val_split: val`` under the
            ``thesis`` scheme (no validation speakers; validate on ``test`` instead).
    """

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str | None = None,
        split_scheme: SplitScheme = "thesis",
        val_fraction: float = 0.1,
        include_sa: bool = False,
        discard_longest: float = 0.05,
        num_frames: int | None = None,
        window_position: WindowPosition = "start",
        representation: Representation = "real",
        deltas: int = 0,
        sample_rate: int = 16000,
        n_mels: int = 40,
        n_mfcc: int = 13,
        train_per_class: int = 500,
        eval_per_class: int = 200,
        eval_distribution: EvalDistribution = "both",
        val_split: Split = "val",
        batch_size: int = 256,
        num_workers: int | None = None,
        hold_features: HoldFeatures = "auto",
        predict_split: Split = "test",
        predict_audio: str | None = None,
        on_error: OnError = "raise",
        seed: int = 0,
        progress: bool = True,
        prepare_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (
            ("train_per_class", train_per_class),
            ("eval_per_class", eval_per_class),
            ("batch_size", batch_size),
            ("prepare_workers", 1 if prepare_workers is None else prepare_workers),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if hold_features not in HOLD_FEATURES:
            raise ValueError(
                f"hold_features must be one of {list(HOLD_FEATURES)}, got {hold_features!r}"
            )
        for name, value in (("val_split", val_split), ("predict_split", predict_split)):
            if value not in SPLITS:
                raise ValueError(f"{name} must be one of {list(SPLITS)}, got {value!r}")
        if val_fraction == 0 and val_split == "val" and split_scheme == "thesis":
            raise ValueError(
                "data.val_fraction 0 leaves the validation split empty; validate on TEST with "
                "data.val_split test (the thesis protocol), or hold out speakers with "
                "data.val_fraction > 0"
            )
        if eval_distribution not in ("balanced", "natural", "both"):
            raise ValueError(
                "eval_distribution must be 'balanced', 'natural' or 'both', "
                f"got {eval_distribution!r}"
            )
        self.root = Path(root).expanduser() if root is not None else embedded_corpus_root()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.features = FeatureConfig(
            sample_rate=sample_rate,
            representation=representation,
            deltas=deltas,
            n_mels=n_mels,
            n_mfcc=n_mfcc,
            window_position=window_position,
        )
        self.options = CorpusOptions(
            include_sa=include_sa,
            split_scheme=split_scheme,
            val_fraction=val_fraction,
            split_seed=seed,
            discard_longest=discard_longest,
            num_frames=num_frames,
            on_error=on_error,
        )
        self.eval_views: list[str] = (
            list(EVAL_VIEWS) if eval_distribution == "both" else [eval_distribution]
        )
        self.cache_path: Path | None = None
        self.meta: dict = {}
        self.datasets: dict[str, PatchDataset] = {}
        self.mean_spectrogram: np.ndarray | None = None
        # Splits held in RAM or on the accelerator (hold_features): features and labels.
        self._held: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._predict_set: tuple[Dataset, dict[str, np.ndarray]] | None = None

    @property
    def num_classes(self) -> int:
        return len(PHONES_48)

    @property
    def class_names(self) -> list[str]:
        """The 48 class labels; index = class id."""
        return list(PHONES_48)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, F, T)`` of one patch.

        T follows from the corpus (the longest kept phone) unless ``num_frames`` is set, so asking
        before ``setup`` builds or finds the cache (the CLI links this into the model).
        """
        if not self.meta:
            self._load_meta()
        return tuple(self.meta["input_shape"])  # type: ignore[return-value]

    def _build(self) -> Path:
        if not self.root.exists():
            hint = "" if self.hparams.root else " (the embedded corpus is missing from the package)"
            raise FileNotFoundError(f"data.root {str(self.root)!r} does not exist{hint}")
        return build_cache(
            self.root,
            self.cache_dir,
            self.features,
            self.options,
            progress=self.hparams.progress,
            workers=self.hparams.prepare_workers,
        )

    def _load_meta(self) -> None:
        self.cache_path = self._build()  # cheap when the cache exists
        self.meta = json.loads((self.cache_path / "meta.json").read_text())

    def prepare_data(self) -> None:
        """Build the feature cache (one process; later runs find it by its key)."""
        self._build()

    def setup(self, stage: str | None = None) -> None:
        """Memory-map the cache; idempotent.

        Raises:
            ValueError: when the split a stage evaluates on holds no phones.
        """
        if not self.datasets:
            self._load_datasets()
        needed = {"fit": self.hparams.val_split, "validate": self.hparams.val_split}
        needed["test"] = "test"
        if self.hparams.predict_audio is None:
            needed["predict"] = self.hparams.predict_split
        elif stage == "predict":
            self._predict_data()  # read the file now: a bad one fails before anything is written
        split = needed.get(stage or "")
        trainer = getattr(self, "trainer", None)
        if stage == "fit" and trainer is not None and trainer.limit_val_batches == 0:
            split = None  # no validation asked for
        if split is not None and len(self.datasets[split]) == 0:
            raise ValueError(
                f"the {split} split of the corpus at {self.root} holds no phones: nothing to "
                f"{stage} on (check data.val_fraction / data.split_scheme / data.val_split)"
            )

    def _load_datasets(self) -> None:
        self._load_meta()
        self.mean_spectrogram = np.load(self.cache_path / "mean.npy")
        for split in ("train", "val", "test"):
            features = np.load(self.cache_path / f"{split}_x.npy", mmap_mode="r")
            labels = np.load(self.cache_path / f"{split}_y.npy")
            self.datasets[split] = PatchDataset(features, labels, self.mean_spectrogram)
        for split, dataset in self.datasets.items():
            if len(dataset) == 0 and split != "val":
                log.warning("the %s split of %s holds no phones", split, self.root)

    # ------------------------------------------------------------ what callbacks may use
    # After ``setup``: ``features`` (the FeatureConfig that made the patches), ``mean_spectrogram``
    # (the training mean subtracted from every patch), ``class_names``, ``eval_views``,
    # :attr:`sample_rate`, :attr:`segment_length`, :meth:`example_batch` and :meth:`predict_info`.
    # Callbacks use these, never ``datasets``.

    @property
    def sample_rate(self) -> int:
        """Sample rate of the audio behind every patch (the corpus is resampled to it first)."""
        return self.features.sample_rate

    @property
    def segment_length(self) -> int:
        """Samples in one (padded) phone segment: what one patch covers."""
        if not self.meta:
            self._load_meta()
        return int(self.meta["segment_length"])

    def example_batch(
        self, num_examples: int, split: str = "val", seed: int = 0
    ) -> tuple[torch.Tensor, list[str]]:
        """The same ``num_examples`` patches ``(N, C, F, T)`` of a split every time, and their
        class names: the first of a seeded permutation, in dataset order. Falls back to the
        training split when ``split`` is empty (a corpus too small for validation speakers).
        """
        self._require_setup()
        dataset = self.datasets[split] if len(self.datasets.get(split, ())) else None
        dataset = dataset or self.datasets["train"]
        rng = np.random.default_rng(seed)
        indices = sorted(rng.permutation(len(dataset))[:num_examples].tolist())
        x, y = dataset.__getitems__(indices)
        return x, [self.class_names[int(c)] for c in y]

    def example(self, index: int, split: str = "val") -> tuple[torch.Tensor, str]:
        """Patch ``index`` ``(1, C, F, T)`` of a split (``"val"``: the validation split) and its
        class name, for tools that show one chosen example (``convae reconstruct --input val:N``).

        Raises:
            IndexError: naming the split, its size and the index asked for.
        """
        self._require_setup()
        split = self.hparams.val_split if split == "val" else split
        dataset = self.datasets[split]
        if not 0 <= index < len(dataset):
            raise IndexError(
                f"the {split!r} split has {len(dataset)} examples; index {index} is outside "
                f"0..{len(dataset) - 1}"
            )
        x, y = dataset[index]
        return x.unsqueeze(0), self.class_names[int(y)]

    def _loader(
        self, split: str | Dataset, sampler: torch.utils.data.Sampler
    ) -> DataLoader | TensorBatches:
        if isinstance(split, str) and self._hold() != "disk":
            features, labels = self._held_split(split)
            return TensorBatches(
                features, labels, sampler, self.hparams.batch_size, dataset=self.datasets[split]
            )
        workers = self.hparams.num_workers
        on_gpu = torch.cuda.is_available() and self._trainer_on_gpu()
        if workers is None:
            workers = 4 if on_gpu else 0
        return DataLoader(
            self.datasets[split] if isinstance(split, str) else split,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=_collate_batch,
            # Its own generator: creating an iterator then draws no number from torch's global
            # one, so dropout masks depend only on the seed and a resumed run continues exactly.
            generator=torch.Generator().manual_seed(self.hparams.seed),
            num_workers=workers,
            pin_memory=on_gpu,
            persistent_workers=workers > 0,
        )

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _hold(self) -> str:
        """Where the features of the splits in use live (``hold_features`` resolved)."""
        trainer = getattr(self, "trainer", None)
        processes = trainer.num_devices if trainer is not None else 1
        needed = {"train", self.hparams.val_split, "test"}
        num_bytes = sum(self.datasets[s].features.nbytes for s in needed)
        return choose_hold(self.hparams.hold_features, num_bytes, self._device(), processes)

    def _held_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A split's features (mean subtracted) and labels in RAM or on the device, loaded once."""
        device = self._device() if self._hold() == "device" else torch.device("cpu")
        held = self._held.get(split)
        if held is None or held[0].device != device:
            dataset = self.datasets[split]
            held = (dataset.load().to(device), dataset.labels.to(device))
            self._held[split] = held
        return held

    def _trainer_on_gpu(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)

    def _resampler(
        self, split: str, per_class: int, seed_offset: int, resample: bool = True
    ) -> StratifiedResampler:
        trainer = getattr(self, "trainer", None)
        world = (trainer.world_size, trainer.global_rank) if trainer is not None else (None, None)
        return StratifiedResampler(
            self.datasets[split].labels.numpy(),
            per_class,
            seed=self.hparams.seed + seed_offset,
            num_classes=self.num_classes,
            class_names=self.class_names,
            num_replicas=world[0],
            rank=world[1],
            resample=resample,
        )

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("call setup() before requesting dataloaders")

    def train_dataloader(self) -> DataLoader | TensorBatches:
        self._require_setup()
        return self._loader("train", self._resampler("train", self.hparams.train_per_class, 0))

    def _eval_loaders(self, split: str) -> list[DataLoader | TensorBatches]:
        self._require_setup()
        loaders = []
        for view in self.eval_views:
            if view == "balanced":
                sampler = self._resampler(split, self.hparams.eval_per_class, 1, resample=False)
            else:
                sampler = SequentialSampler(self.datasets[split])
            loaders.append(self._loader(split, sampler))
        return loaders

    def val_dataloader(self) -> list[DataLoader | TensorBatches]:
        return self._eval_loaders(self.hparams.val_split)

    def test_dataloader(self) -> list[DataLoader | TensorBatches]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        """Batches ``(x, y, index)``: each phone of ``predict_split`` once, or ``predict_audio``."""
        dataset, _ = self._predict_data()
        return self._loader(IndexedPatches(dataset), SequentialSampler(dataset))

    def predict_info(self) -> dict[str, np.ndarray]:
        """Per row of the predict set (the ``index`` of a batch): ``labels`` (class ids, -1 when
        unknown), and where each patch comes from when the cache records it: ``utterance_ids``
        (``train/DR1/FCJF0/SI1027``, or the audio file) and ``spans`` (start/end sample at
        :attr:`sample_rate`)."""
        return self._predict_data()[1]

    def _predict_data(self) -> tuple[Dataset, dict[str, np.ndarray]]:
        self._require_setup()
        if self._predict_set is None:
            audio = self.hparams.predict_audio
            self._predict_set = self._audio_set(audio) if audio else self._split_set()
        return self._predict_set

    def _split_set(self) -> tuple[Dataset, dict[str, np.ndarray]]:
        split = self.hparams.predict_split
        dataset = self.datasets[split]
        info = {"labels": dataset.labels.numpy()}
        utterances = self.cache_path / f"{split}_utt.npy"
        spans = self.cache_path / f"{split}_span.npy"
        if utterances.is_file() and "utterances" in self.meta:
            names = np.asarray(self.meta["utterances"], dtype=str)
            info["utterance_ids"] = names[np.load(utterances)]
        if spans.is_file():
            info["spans"] = np.load(spans).astype(np.int64)
        return dataset, info

    def _audio_set(self, path: str) -> tuple[Dataset, dict[str, np.ndarray]]:
        import torchaudio

        audio, rate = read_audio(Path(path).expanduser())
        wave = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        if rate != self.sample_rate:
            wave = torchaudio.functional.resample(wave, rate, self.sample_rate)
        length = self.segment_length
        patches = audio_to_patches(wave, self.features, length, self.mean_spectrogram)
        starts = np.arange(len(patches), dtype=np.int64) * length
        info = {
            "labels": np.full(len(patches), -1, dtype=np.int64),
            "utterance_ids": np.full(len(patches), str(path)),
            "spans": np.stack([starts, np.minimum(starts + length, wave.numel())], axis=1),
        }
        return _Patches(patches, torch.from_numpy(info["labels"])), info


__all__ = ["IndexedPatches", "PatchDataset", "TimitDataModule"]
