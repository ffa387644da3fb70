"""``convae predict``: every model's ``predict_step`` outputs, gathered into one ``.npz`` file."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from convae_lightning.console import run_folder

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.npz`` into the run folder, one row per predicted patch.

    What the model's ``predict_step`` returns, concatenated over batches (``posteriors`` and
    ``predicted`` for classifiers; ``codes``, and ``reconstructions`` when asked, for
    autoencoders), in the order of ``index`` (the row of the split), with what the DataModule
    knows about each row (``predict_info()``): ``labels`` (class ids, -1 for audio),
    ``label_names`` (the phone of each row, "" when unknown), ``utterance_ids`` and ``spans``
    (start/end sample) when the cache records them; ``class_names`` (index = class id, the
    columns of ``posteriors``), ``checkpoint`` and ``sample_rate``.

    Args:
        reconstructions: Autoencoders also return their reconstructions (the model's
            ``predict_reconstructions`` switch).
        output_dir: Folder of the file (default: the run folder the CLI chose).
        filename: File name.

    Raises:
        ValueError: when ``reconstructions`` is asked of a model that cannot give them.
    """

    def __init__(
        self,
        reconstructions: bool = False,
        output_dir: str | None = None,
        filename: str = "predictions.npz",
    ) -> None:
        super().__init__(write_interval="batch")
        self.reconstructions = reconstructions
        self.output_dir = output_dir
        self.filename = filename
        self.checkpoint: str | None = None  # set by the CLI: recorded in the file
        self._parts: dict[str, list[np.ndarray]] = defaultdict(list)

    @property
    def path(self) -> Path | None:
        return Path(self.output_dir) / self.filename if self.output_dir else None

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts.clear()
        if trainer.world_size > 1:
            raise ValueError(
                "convae predict runs on one device: give --trainer.devices 1 (predictions are "
                "gathered in one process)"
            )
        if self.reconstructions:
            if not hasattr(pl_module, "predict_reconstructions"):
                raise ValueError(
                    f"prediction.reconstructions: {type(pl_module).__name__} gives no "
                    "reconstructions (autoencoders only)"
                )
            pl_module.predict_reconstructions = True

    @override
    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, dict):
            raise TypeError(
                f"{type(pl_module).__name__}.predict_step must return a dict of tensors, got "
                f"{type(prediction).__name__}"
            )
        if "index" not in prediction and isinstance(batch, (list, tuple)) and len(batch) > 2:
            prediction = {**prediction, "index": batch[2]}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            self._parts["labels"].append(_numpy(batch[1]))
        for key, value in prediction.items():
            self._parts[key].append(_numpy(value))

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reconstructions:
            pl_module.predict_reconstructions = False
        if not trainer.is_global_zero or not self._parts:
            return
        arrays = {key: np.concatenate(parts) for key, parts in self._parts.items()}
        datamodule = trainer.datamodule
        info = datamodule.predict_info() if hasattr(datamodule, "predict_info") else {}
        if "index" in arrays:
            index = arrays["index"].astype(np.int64)
            order = np.argsort(index, kind="stable")
            arrays = {key: value[order] for key, value in arrays.items()}
            for key, values in info.items():
                arrays.setdefault(key, np.asarray(values)[arrays["index"]])
        names = list(getattr(datamodule, "class_names", []))
        if names:
            arrays["class_names"] = np.asarray(names)
            if "labels" in arrays:
                labels = arrays["labels"].astype(np.int64)
                known = (labels >= 0) & (labels < len(names))
                arrays["label_names"] = np.where(known, np.asarray(names)[labels * known], "")
        arrays["checkpoint"] = np.asarray(self.checkpoint or "")
        rate = getattr(datamodule, "sample_rate", None)
        if rate is not None:
            arrays["sample_rate"] = np.asarray(rate)
        default = Path(run_folder(trainer) or trainer.default_root_dir) / self.filename
        self._save(arrays, self.path or default)
        self._parts.clear()

    @staticmethod
    def _save(arrays: dict[str, np.ndarray], path: Path) -> None:
        """Write atomically: a kill leaves the previous file or none, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
