"""Benchmarks 1 and 3 on a CUDA GPU and a training smoke run of every model there: one script for
a lent GPU (an H100 or H200 in under 8 minutes), results in docs/benchmarks.md.

1. Peaks: dense fp32 and TF32 matrix products measured in the same run (the denominators).
2. Training throughput (``training.py`` on the GPU): the plain PyTorch loop on the plain
   models, our module in that loop and our module through ``Trainer.fit``, for the forward
   network and 1-/4-unit CAEs: samples/s and the fraction of both peaks. Convolutions run as
   PyTorch leaves them by default (cuDNN may use TF32); matrix products in full fp32.
3. The data path (``data_path.py`` on the GPU): the DataModule's loaders alone and in
   ``Trainer.fit`` against in-memory tensors, every ``hold_features`` choice including
   ``device`` (the features on the GPU, resampled there).
4. ``Trainer.fit(accelerator="gpu")`` of each model on the real DataModule (embedded corpus,
   features on the device): forward classifier, switch and blind CAEs, a weakly stacked CAE
   growing a unit, and a classifier initialised from the CAE's checkpoint; every logged metric
   must be finite and the weights must move.

Only torch, lightning, torchmetrics, numpy, soundfile and jsonargparse need to be installed; the
repository's ``convae_lightning`` is imported from this checkout. Prints Markdown tables and,
when ``$OUT`` is set, writes ``$OUT/gpu.json`` (and ``data_path.json``)::

    python benchmarks/gpu.py                  # on the GPU machine, ~4-6 minutes
    python benchmarks/gpu.py --sections '[fit]'   # one part only
    python benchmarks/gpu.py --smoke true     # seconds; without CUDA every part runs on the CPU
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jsonargparse import CLI

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("peak", "training", "data_path", "fit")


def _import_path() -> None:
    """This checkout's ``convae_lightning`` and the benchmark helpers beside this file."""
    for folder in (str(REPO), str(REPO / "benchmarks")):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def matmul_peak(device: str, precision: str, n: int = 8192, repeats: int = 20) -> float:
    """GFLOP/s of an ``n``-cube float32 matrix product under ``torch.set_float32_matmul_precision
    (precision)`` (``highest``: fp32; ``high``: TF32 on GPUs that have it)."""
    import torch

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        for _ in range(3):
            a @ b
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_float32_matmul_precision(previous)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_section(
    device: str, batch_sizes: list[int], steps: int, warmup: int, rounds: int, peaks: dict
) -> tuple[str, dict]:
    from benchlib import table
    from training import MODELS, measure_model, table_rows

    limits = {"fp32": peaks["fp32"], "TF32": peaks["tf32"]}
    results, rows = {}, []
    for batch_size in batch_sizes:
        for name in MODELS:
            r = measure_model(name, batch_size, steps, warmup, rounds, "32-true", device)
            results[f"{name}/{batch_size}"] = r
            rows += table_rows(name, batch_size, r, limits)
    header = ("model", "batch", "variant", "samples/s", "vs plain", "GFLOP/s", "of fp32 peak")
    header += ("of TF32 peak",)
    return table(header, rows), results


def _fit_models(input_shape: tuple[int, ...], checkpoint: Path) -> list[tuple[str, Any, dict]]:
    """(name, model factory, extra Trainer arguments) of the smoke runs, in order: the CAE
    before the classifier that reads its ``checkpoint``."""
    from convae_lightning.callbacks import StackGrowth
    from convae_lightning.models import (
        AutoencoderClassifier,
        ConvAutoencoder,
        ForwardClassifier,
        StackedAutoencoder,
    )

    return [
        ("ForwardClassifier", lambda: ForwardClassifier(input_shape=input_shape), {}),
        (
            "ConvAutoencoder (switch, 4 units)",
            lambda: ConvAutoencoder(input_shape=input_shape, unpool="switch"),
            {},
        ),
        (
            "ConvAutoencoder (blind, 4 units)",
            lambda: ConvAutoencoder(input_shape=input_shape, unpool="blind"),
            {},
        ),
        (
            "StackedAutoencoder (weak, grows to 2 units)",
            lambda: StackedAutoencoder(input_shape=input_shape, mode="weak"),
            {"max_epochs": 2, "callbacks": [StackGrowth(max_epochs_per_unit=1)]},
        ),
        (
            "AutoencoderClassifier (pretrained)",
            lambda: AutoencoderClassifier(
                input_shape=input_shape, autoencoder_checkpoint=str(checkpoint)
            ),
            {},
        ),
    ]


def fit_section(device: str, smoke: bool) -> tuple[str, dict]:
    """Train every model a few steps through ``Trainer.fit`` on ``device`` with the real
    DataModule; raises when a logged metric is not finite or the weights did not move."""
    import lightning.pytorch as pl
    import torch
    from benchlib import table

    from convae_lightning.data import TimitDataModule

    class TrainingDevice(pl.Callback):
        """Where the weights were while training ran (Lightning moves them back afterwards)."""

        device = "?"

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.device = next(pl_module.parameters()).device.type

    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    hold = "device" if accelerator == "gpu" else "memory"
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        dm = TimitDataModule(
            cache_dir=str(Path(tmp) / "cache"),
            train_per_class=5,
            eval_per_class=3,
            batch_size=16 if smoke else 64,
            hold_features=hold,
            progress=False,
        )
        dm.prepare_data()
        dm.setup("fit")
        checkpoint = Path(tmp) / "cae.ckpt"
        for name, build, extra in _fit_models(dm.input_shape, checkpoint):
            pl.seed_everything(0, verbose=False)
            model = build()
            before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
            seen = TrainingDevice()
            options = dict(extra)
            trainer = pl.Trainer(
                callbacks=[seen, *options.pop("callbacks", [])],
                **{
                    "accelerator": accelerator,
                    "devices": 1,
                    "max_epochs": 1,
                    "limit_train_batches": 2 if smoke else 10,
                    "limit_val_batches": 1 if smoke else 2,
                    "logger": False,
                    "enable_checkpointing": False,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "default_root_dir": tmp,
                    **options,
                },
            )
            start = time.perf_counter()
            trainer.fit(model, datamodule=dm)
            seconds = time.perf_counter() - start
            if name.startswith("ConvAutoencoder (switch"):
                trainer.save_checkpoint(checkpoint)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
            after = [p.detach().cpu() for p in model.parameters() if p.requires_grad]
            moved = any(not torch.equal(a.cpu(), b) for a, b in zip(before, after, strict=False))
            where = seen.device
            if bad or not moved or not metrics:
                raise RuntimeError(
                    f"{name} on {device}: non-finite metrics {bad}, weights moved: {moved}, "
                    f"metrics: {metrics}"
                )
            results[name] = {
                "seconds": seconds,
                "steps": trainer.global_step,
                "device": where,
                "metrics": metrics,
            }
            shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items())[:3])
            rows.append((name, trainer.current_epoch, trainer.global_step, where, seconds, shown))
    header = ("model", "epochs", "steps", "trained on", "seconds", "metrics (first 3, finite)")
    return table(header, rows), results


def main(
    sections: list[str] = list(SECTIONS),  # noqa: B006
    batch_sizes: list[int] = [256, 1024],  # noqa: B006
    steps: int = 20,
    warmup: int = 5,
    rounds: int = 2,
    smoke: bool = False,
    out: Path | None = None,
) -> dict:
    """Run the GPU benchmarks (every part on the CPU, at toy sizes, with ``smoke`` and no CUDA).

    Args:
        sections: Any of ``peak``, ``training``, ``data_path``, ``fit``.
        batch_sizes: Samples per step of the training throughput table.
        steps: Measured steps per variant and round.
        warmup: Unmeasured steps first (cuDNN picks its algorithms there).
        rounds: Interleaved rounds; medians.
        smoke: A seconds-long run (no timing meaning): checks the script works.
        out: Write the results as JSON here (default ``$OUT/gpu.json`` if ``$OUT`` is set).
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"sections: {unknown} not among {list(SECTIONS)}")
    _import_path()
    import torch
    from benchlib import emit, machine, quiet, save

    from convae_lightning.allocator import tune_malloc

    tune_malloc()  # as the console scripts do
    quiet()
    if torch.cuda.is_available():
        device = "cuda"
        gpu = torch.cuda.get_device_properties(0)
        emit(f"GPU: {gpu.name}, {gpu.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    elif smoke:
        device = "cpu"
        emit("CUDA is not available: the GPU parts are skipped; smoke mode runs them on the CPU")
    else:
        emit("CUDA is not available: skipping every GPU benchmark (run with a CUDA GPU)")
        return {"cuda": False}
    if smoke:
        batch_sizes, steps, warmup, rounds = [4], 2, 0, 1
    emit(f"machine: {machine()}")
    results: dict[str, Any] = {"machine": machine(), "device": device, "cuda": device == "cuda"}
    if device == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
    peaks = {"fp32": 1.0, "tf32": 1.0}
    if "peak" in sections or "training" in sections:
        size = 512 if smoke else 8192
        peaks = {
            "fp32": matmul_peak(device, "highest", size, 2 if smoke else 20),
            "tf32": matmul_peak(device, "high", size, 2 if smoke else 20),
        }
        results["peak_gflops"] = peaks
        emit(
            f"\n### Peaks ({size}^3 float32 matmul)\n\nfp32: {peaks['fp32']:,.0f} GFLOP/s; "
            f"TF32: {peaks['tf32']:,.0f} GFLOP/s"
        )
    if "training" in sections:
        start = time.perf_counter()
        text, results["training"] = training_section(
            device, batch_sizes, steps, warmup, rounds, peaks
        )
        emit(
            f"\n### Training throughput on {device} ({time.perf_counter() - start:.0f} s)\n\n{text}"
        )
    if "data_path" in sections:
        import data_path

        start = time.perf_counter()
        emit(f"\n## Data path on {device}")
        results["data_path"] = data_path.main(
            device=device, steps=steps, warmup=warmup, rounds=min(rounds, 2), smoke=smoke
        )
        emit(f"({time.perf_counter() - start:.0f} s)")
    if "fit" in sections:
        start = time.perf_counter()
        text, results["fit"] = fit_section(device, smoke)
        emit(f"\n### Trainer.fit smoke on {device} ({time.perf_counter() - start:.0f} s)\n\n{text}")
    save(results, out, "gpu.json")
    return results


if __name__ == "__main__":
    CLI(main, as_positional=False)
