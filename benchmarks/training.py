"""Training throughput: ``Trainer.fit`` with this package's modules against a plain PyTorch loop on
straightforward PyTorch models, and both against the machine's FMA limit (benchmark 1 of
docs/benchmarks.md).

For each model (the Figure 2 forward network, 1- and 4-unit CAEs with switch and blind unpooling)
and in the same run: the plain model (``benchmarks/plain_models.py``) in a plain loop (Adagrad,
in-memory batches), our module in the same plain loop (the layers alone) and our module through
``Trainer.fit`` on the same in-memory batches (layers plus Lightning's per-step work: logging,
metrics, hooks). Rates are medians of per-step samples/s; GFLOP/s counts the plain model's FLOPs
(``FlopCounterMode``) for every variant, so it is the same work per sample. The FMA limit is
measured in the same run (``benchlib.fma_limit``)::

    python benchmarks/training.py                       # all models, batch 256, ~5 minutes
    python benchmarks/training.py --models '[forward]' --batch_sizes '[64, 256]'
    python benchmarks/training.py --precision bf16-mixed   # autocast in both loops
    python benchmarks/training.py --smoke true          # seconds, for CI (no timing meaning)
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from benchlib import (
    BatchList,
    emit,
    fma_limit,
    machine,
    plain_loop_rate,
    quiet,
    save,
    table,
    trainer_fit_rate,
    training_flops,
)
from jsonargparse import CLI
from plain_models import PlainAutoencoder, PlainForward, classifier_loss, reconstruction_loss
from torch import nn
from torch.utils.data import DataLoader

from convae_lightning.allocator import tune_malloc
from convae_lightning.models import ConvAutoencoder, ForwardClassifier

#: name -> (our module, the plain model, loss of the plain loop)
MODELS: dict[str, tuple[Callable[[], pl.LightningModule], Callable[[], nn.Module], Callable]] = {
    "forward": (ForwardClassifier, PlainForward, classifier_loss),
    "cae1_switch": (
        lambda: ConvAutoencoder(num_units=1, unpool="switch"),
        lambda: PlainAutoencoder(1, "switch"),
        reconstruction_loss,
    ),
    "cae1_blind": (
        lambda: ConvAutoencoder(num_units=1, unpool="blind"),
        lambda: PlainAutoencoder(1, "blind"),
        reconstruction_loss,
    ),
    "cae4_switch": (
        lambda: ConvAutoencoder(num_units=4, unpool="switch"),
        lambda: PlainAutoencoder(4, "switch"),
        reconstruction_loss,
    ),
    "cae4_blind": (
        lambda: ConvAutoencoder(num_units=4, unpool="blind"),
        lambda: PlainAutoencoder(4, "blind"),
        reconstruction_loss,
    ),
}


def make_batches(count: int, batch_size: int, seed: int = 0) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch_size, 1, 201, 16, generator=generator),
            torch.randint(0, 48, (batch_size,), generator=generator),
        )
        for _ in range(count)
    ]


def measure_model(
    name: str,
    batch_size: int,
    steps: int,
    warmup: int,
    rounds: int,
    precision: str,
    device: str = "cpu",
) -> dict:
    """Median samples/s of the three variants over ``rounds`` interleaved rounds on ``device``
    (``cpu`` or ``cuda``; ``benchmarks/gpu.py`` measures the GPU)."""
    ours, plain, loss_fn = MODELS[name]
    batches = make_batches(4, batch_size)
    # FLOPs are linear in the batch: count them on a few samples, on the CPU.
    few = tuple(t[:4] for t in batches[0])
    flops = training_flops(plain(), loss_fn, few) / len(few[0])
    batches = [tuple(t.to(device) for t in batch) for batch in batches]
    device_type = torch.device(device).type
    autocast = (
        torch.autocast(device_type, dtype=torch.bfloat16)
        if precision.startswith("bf16")
        else contextlib.nullcontext()
    )

    def autocast_loss(model: nn.Module, *batch) -> torch.Tensor:
        with autocast:
            return loss_fn(model, *batch)

    rates: dict[str, list[float]] = {"plain": [], "ours_loop": [], "ours_fit": []}
    for _ in range(rounds):
        torch.manual_seed(0)
        rates["plain"].append(
            plain_loop_rate(plain().to(device), autocast_loss, batches, steps, warmup)
        )
        torch.manual_seed(0)
        rates["ours_loop"].append(
            plain_loop_rate(ours().to(device), autocast_loss, batches, steps, warmup)
        )
        torch.manual_seed(0)
        loader = DataLoader(BatchList(batches, warmup + steps + 1), batch_size=None)
        rates["ours_fit"].append(
            trainer_fit_rate(
                ours(),
                loader,
                steps,
                warmup,
                batch_size,
                accelerator="gpu" if device_type == "cuda" else "cpu",
                devices=1,
                precision=precision,
            )
        )
    result = {key: statistics.median(values) for key, values in rates.items()}
    result["all_rates"] = rates
    result["flops_per_sample"] = flops
    return result


#: (key of measure_model's result, the table's label) per variant.
VARIANTS = (
    ("plain", "plain loop, plain model"),
    ("ours_loop", "plain loop, our module"),
    ("ours_fit", "Trainer.fit, our module"),
)


def table_rows(name: str, batch_size: int, result: dict, limits: dict[str, float]) -> list[tuple]:
    """One row per variant of :func:`measure_model`'s ``result``: samples/s, ratio to the plain
    loop, GFLOP/s and the share of each limit (GFLOP/s by name)."""
    gflop = result["flops_per_sample"] / 1e9
    rows = []
    for variant, label in VARIANTS:
        rate = result[variant]
        shares = (f"{100 * rate * gflop / limit:.1f}%" for limit in limits.values())
        rows.append(
            (name, batch_size, label, rate, f"{rate / result['plain']:.2f}", rate * gflop, *shares)
        )
    return rows


def main(
    models: list[str] = ["forward", "cae1_switch", "cae1_blind", "cae4_switch", "cae4_blind"],  # noqa: B006
    batch_sizes: list[int] = [256],  # noqa: B006
    steps: int = 8,
    warmup: int = 2,
    rounds: int = 3,
    threads: int = 2,
    precision: str = "32-true",
    smoke: bool = False,
    out: Path | None = None,
) -> dict:
    """Print the throughput table.

    Args:
        models: Any of ``forward``, ``cae1_switch``, ``cae1_blind``, ``cae4_switch``,
            ``cae4_blind``.
        batch_sizes: Samples per step.
        steps: Measured steps per variant and round.
        warmup: Unmeasured steps first.
        rounds: Interleaved rounds (plain, ours in a loop, ours in ``Trainer.fit``); medians.
        threads: torch threads (and threads of the FMA limit).
        precision: ``32-true`` or ``bf16-mixed`` (``Trainer(precision=...)``; autocast to
            bfloat16 in the plain loops).
        smoke: A seconds-long run that only checks the script works (no timing meaning).
        out: Write the results as JSON here (default ``$OUT/training.json`` if ``$OUT`` is set).
    """
    if smoke:
        models, batch_sizes, steps, warmup, rounds = ["forward", "cae1_switch"], [4], 2, 0, 1
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"models: {unknown} not among {list(MODELS)}")
    tune_malloc()  # as the console scripts do
    quiet()
    torch.set_num_threads(threads)
    emit(f"machine: {machine()}")
    limit = fma_limit(threads, seconds=0.05 if smoke else 0.5)
    emit(f"FMA limit: {limit.gflops:,.0f} GFLOP/s ({limit.method})")
    results: dict = {"machine": machine(), "fma_limit": limit.gflops, "fma_method": limit.method}
    rows = []
    for batch_size in batch_sizes:
        for name in models:
            r = measure_model(name, batch_size, steps, warmup, rounds, precision)
            results[f"{name}/{batch_size}"] = r
            rows += table_rows(name, batch_size, r, {"FMA limit": limit.gflops})
            emit(f"done: {name} batch {batch_size}")
    limit_end = fma_limit(threads, seconds=0.05 if smoke else 0.5)
    results["fma_limit_end"] = limit_end.gflops
    header = ("model", "batch", "variant", "samples/s", "vs plain", "GFLOP/s", "of FMA limit")
    emit(
        f"\nprecision {precision}; FMA limit {limit.gflops:,.0f} GFLOP/s at the start, "
        f"{limit_end.gflops:,.0f} at the end\n\n" + table(header, rows)
    )
    save(results, out, "training.json")
    return results


if __name__ == "__main__":
    CLI(main, as_positional=False)
