"""The real data path (feature cache, stratified resampler, loaders) against tensors already in
memory: the data path alone, and ``Trainer.fit`` with the real DataModule against a plain loop on
in-memory batches (benchmark 3 of docs/benchmarks.md).

Every ``hold_features`` choice is measured: ``disk`` (memory-mapped cache; with and without
loader workers), ``memory`` (RAM) and, on a GPU, ``device``. The DataModule reads the embedded
corpus unless ``--root`` names another; its cache goes to a temporary folder unless
``--cache_dir`` is given::

    python benchmarks/data_path.py                  # CPU, ~3 minutes
    python benchmarks/data_path.py --device cuda    # the same on a GPU (benchmarks/gpu.py runs it)
    python benchmarks/data_path.py --smoke true     # seconds, for CI (no timing meaning)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from benchlib import (
    BatchList,
    emit,
    machine,
    plain_loop_rate,
    quiet,
    save,
    table,
    trainer_fit_rate,
)
from jsonargparse import CLI
from plain_models import classifier_loss, reconstruction_loss
from torch.utils.data import DataLoader

from convae_lightning.allocator import tune_malloc
from convae_lightning.data import TimitDataModule
from convae_lightning.models import ConvAutoencoder, ForwardClassifier

#: name -> (our module for an input shape, the loss of the plain loop)
MODELS: dict[str, tuple[Callable, Callable]] = {
    "forward": (lambda shape: ForwardClassifier(input_shape=shape), classifier_loss),
    "cae4_switch": (lambda shape: ConvAutoencoder(input_shape=shape), reconstruction_loss),
}


def _variants(device: str) -> list[tuple[str, dict]]:
    variants = [
        ("disk, no workers", {"hold_features": "disk", "num_workers": 0}),
        ("disk, 2 workers", {"hold_features": "disk", "num_workers": 2}),
        ("memory", {"hold_features": "memory"}),
    ]
    if device != "cpu":
        variants.append(("device", {"hold_features": "device"}))
    return variants


def datamodule(root: str | None, cache_dir: str, batch_size: int, **kwargs) -> TimitDataModule:
    dm = TimitDataModule(
        root=root, cache_dir=cache_dir, batch_size=batch_size, progress=False, **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def loader_rate(dm: TimitDataModule, epochs: int, device: str) -> float:
    """Samples/s of iterating the training loader for ``epochs`` epochs (after one warm-up
    epoch), batches delivered on ``device`` (and synchronised there)."""
    # Attached as fit attaches it: the DataModule serves the trainer's device.
    dm.trainer = pl.Trainer(accelerator=device, devices=1, logger=False, enable_progress_bar=False)
    loader = dm.train_dataloader()
    seen, elapsed = 0, 0.0
    for epoch in range(epochs + 1):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        count = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            count += len(y)
        if device != "cpu":
            torch.cuda.synchronize()
        if epoch:  # the first epoch loads the split (held variants) and starts workers
            seen, elapsed = seen + count, elapsed + time.perf_counter() - start
    return seen / elapsed


def main(
    root: str | None = None,
    cache_dir: str | None = None,
    models: list[str] = ["forward", "cae4_switch"],  # noqa: B006
    device: str = "cpu",
    batch_size: int = 256,
    epochs: int = 3,
    steps: int = 8,
    warmup: int = 2,
    rounds: int = 2,
    threads: int = 2,
    smoke: bool = False,
    out: Path | None = None,
) -> dict:
    """Print the data-path table and the Trainer.fit table.

    Args:
        root: A TIMIT-layout corpus (default: the embedded one).
        cache_dir: Feature cache folder (default: a temporary one).
        models: ``forward`` and/or ``cae4_switch``.
        device: ``cpu`` or ``cuda``.
        batch_size: Samples per batch.
        epochs: Measured epochs of the data path alone.
        steps: Measured training steps per variant and round.
        warmup: Unmeasured steps first.
        rounds: Interleaved rounds (medians).
        threads: torch threads.
        smoke: A seconds-long run (no timing meaning).
        out: Write the results as JSON here (default ``$OUT/data_path.json`` if ``$OUT`` is set).
    """
    if smoke:
        models, batch_size, epochs, steps, warmup, rounds = ["forward"], 16, 1, 2, 0, 1
    tune_malloc()  # as the console scripts do
    quiet()
    torch.set_num_threads(threads)
    emit(f"machine: {machine()}")
    results: dict = {"machine": machine(), "device": device}
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_dir or tmp
        extra = {"train_per_class": 5, "eval_per_class": 2} if smoke else {}
        probe = datamodule(root, cache, batch_size, **extra)
        shape = probe.input_shape
        emit(f"corpus: {probe.root} ({sum(probe.meta['kept'].values()):,} patches of {shape})")

        rows = []
        for label, kwargs in _variants(device):
            dm = datamodule(root, cache, batch_size, **extra, **kwargs)
            rate = loader_rate(dm, epochs, device)
            results[f"loader/{label}"] = rate
            rows.append((label, rate, 1e3 * batch_size / rate))
        emit(
            f"\n### The data path alone (batch {batch_size}, to {device})\n\n"
            + table(("hold_features", "samples/s", "ms per batch"), rows)
        )

        rows = []
        for name in models:
            build, loss_fn = MODELS[name]
            batches = [
                (
                    torch.randn(batch_size, *shape, device=device),
                    torch.randint(0, 48, (batch_size,), device=device),
                )
                for _ in range(4)
            ]
            rates: dict[str, list[float]] = {}
            for _ in range(rounds):
                torch.manual_seed(0)
                rates.setdefault("plain loop, in-memory tensors", []).append(
                    plain_loop_rate(build(shape).to(device), loss_fn, batches, steps, warmup)
                )
                torch.manual_seed(0)
                loader = DataLoader(BatchList(batches, warmup + steps + 1), batch_size=None)
                rates.setdefault("Trainer.fit, in-memory tensors", []).append(
                    trainer_fit_rate(
                        build(shape), loader, steps, warmup, batch_size, accelerator=device
                    )
                )
                for label, kwargs in _variants(device):
                    torch.manual_seed(0)
                    dm = datamodule(root, cache, batch_size, **extra, **kwargs)
                    rates.setdefault(f"Trainer.fit, DataModule ({label})", []).append(
                        trainer_fit_rate(
                            build(shape), dm, steps, warmup, batch_size, accelerator=device
                        )
                    )
            base = statistics.median(rates["plain loop, in-memory tensors"])
            for label, values in rates.items():
                rate = statistics.median(values)
                results[f"fit/{name}/{label}"] = rate
                rows.append((name, label, rate, f"{rate / base:.2f}"))
            emit(f"done: {name}")
        emit(
            f"\n### Training with the data path (batch {batch_size}, {device})\n\n"
            + table(("model", "variant", "samples/s", "vs the in-memory loop"), rows)
        )
    save(results, out, "data_path.json")
    return results


if __name__ == "__main__":
    CLI(main, as_positional=False)
