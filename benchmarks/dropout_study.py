"""The dropout experiment behind ``ForwardClassifier(dropout=...)`` (see docs/models.md).

The thesis's "dropout rate 0.9" (Figure 2) is ambiguous: drop probability 0.9 (MatConvNet's
``vl_nndropout`` ``rate``, the toolbox the thesis used) or keep probability 0.9 (drop 0.1). This
trains the Figure 2 network on the embedded Festival corpus (real speech, the real DataModule
and resampling) with each reading and reports the best validation accuracies::

    python benchmarks/dropout_study.py --epochs 15 --seeds 0 1

The embedded corpus is small (24 speakers); rerun on TIMIT with ``--root /data/TIMIT``.
"""

from __future__ import annotations

import argparse
import tempfile

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from convae_lightning.data import TimitDataModule
from convae_lightning.models import ForwardClassifier


class BestMetrics(Callback):
    """Keeps the best value of each validation accuracy over the epochs."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("val/acc", "train/acc48")):
                self.best[key] = max(self.best.get(key, 0.0), float(value))


def run(dropout: float, seed: int, epochs: int, root: str | None, cache_dir: str) -> dict:
    pl.seed_everything(seed, verbose=False)
    datamodule = TimitDataModule(
        root=root, cache_dir=cache_dir, train_per_class=40, eval_per_class=20, batch_size=64,
        seed=seed, progress=False,
    )  # fmt: skip
    model = ForwardClassifier(datamodule.input_shape, dropout=dropout)
    best = BestMetrics()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="auto", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[best])  # fmt: skip
    trainer.fit(model, datamodule)
    return best.best


def main() -> None:
    parser = argparse.ArgumentParser(description="Dropout 0.1 vs 0.9 on the embedded corpus")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.9])
    parser.add_argument("--root", default=None, help="corpus root (default: embedded corpus)")
    args = parser.parse_args()
    keys = ["val/acc48_balanced", "val/acc48_natural", "val/acc39_natural"]
    print(f"| drop probability | seed | {' | '.join(f'best {k}' for k in keys)} |")
    print("|---|---|" + "---|" * len(keys))
    with tempfile.TemporaryDirectory() as cache_dir:
        for rate in args.rates:
            for seed in args.seeds:
                best = run(rate, seed, args.epochs, args.root, cache_dir)
                values = " | ".join(f"{best.get(k, float('nan')):.3f}" for k in keys)
                print(f"| {rate} | {seed} | {values} |", flush=True)


if __name__ == "__main__":
    main()
