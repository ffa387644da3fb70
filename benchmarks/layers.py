"""Per-layer time and GFLOP/s of a training step, forward and backward, so the slowest layer is
named (benchmark 2 of docs/benchmarks.md).

Every aten operation of a few training steps is timed (on the CPU operations are synchronous) and
charged to the innermost module running it, forward or backward, as
``torch.utils.module_tracker.ModuleTracker`` sees it; FLOPs come from the formulas of
``torch.utils.flop_counter``. Work outside any layer (the loss, ReLUs called inside a block) is
charged to the enclosing module, the optimiser step to its own row. The same table for the plain
PyTorch versions (``benchmarks/plain_models.py``) is printed with ``--plain``::

    python benchmarks/layers.py                       # our forward net, 4-unit CAEs
    python benchmarks/layers.py --plain true          # the plain PyTorch versions too
    python benchmarks/layers.py --smoke true          # seconds, for CI (no timing meaning)
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from benchlib import emit, machine, save, table
from jsonargparse import CLI
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from torch.utils.module_tracker import ModuleTracker
from training import MODELS

from convae_lightning.allocator import tune_malloc


class _LayerClock(TorchDispatchMode):
    """Times every aten call and counts its FLOPs, charged to (innermost module, fwd/bwd)."""

    def __init__(self, tracker: ModuleTracker) -> None:
        super().__init__()
        self.tracker = tracker
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.flops: dict[tuple[str, str], float] = defaultdict(float)
        self.order: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        start = time.perf_counter()
        out = func(*args, **kwargs)
        elapsed = time.perf_counter() - start
        layer = max(self.tracker.parents, key=lambda name: name.count("."))
        layer = layer.split(".", 1)[1] if "." in layer else "(model)"
        if layer not in self.order:
            self.order.append(layer)
        key = (layer, "bwd" if self.tracker.is_bw else "fwd")
        self.seconds[key] += elapsed
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops[key] += count(*args, **kwargs, out_val=out)
        return out


def profile(
    model: nn.Module, loss_fn: Callable, batch: tuple[Tensor, Tensor], steps: int, warmup: int
) -> list[dict]:
    """Per-layer medians over ``steps`` training steps (after ``warmup``)."""
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    model.train()
    per_step: list[_LayerClock] = []
    step_seconds: list[float] = []
    for step in range(warmup + steps):
        optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with ModuleTracker() as tracker, _LayerClock(tracker) as clock:
            loss_fn(model, *batch).backward()
        middle = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        if step >= warmup:
            clock.seconds[("optimiser step", "fwd")] = end - middle
            per_step.append(clock)
            step_seconds.append(end - start)
    layers = [*per_step[-1].order, "optimiser step"]
    rows = []
    for layer in layers:
        row = {"layer": layer}
        for phase in ("fwd", "bwd"):
            times = [c.seconds[(layer, phase)] for c in per_step]
            row[f"{phase}_ms"] = 1e3 * statistics.median(times)
            row[f"{phase}_gflop"] = per_step[-1].flops[(layer, phase)] / 1e9
        rows.append(row)
    total = sum(r["fwd_ms"] + r["bwd_ms"] for r in rows)
    for row in rows:
        row["share"] = (row["fwd_ms"] + row["bwd_ms"]) / total
    rows.append(
        {
            "layer": "step (wall, with the timer's overhead)",
            "fwd_ms": 1e3 * statistics.median(step_seconds),
            "bwd_ms": 0.0,
            "fwd_gflop": sum(r["fwd_gflop"] for r in rows),
            "bwd_gflop": sum(r["bwd_gflop"] for r in rows),
            "share": 1.0,
        }
    )
    return rows


def render(rows: list[dict], batch_size: int) -> str:
    slowest = max(rows[:-1], key=lambda r: r["fwd_ms"] + r["bwd_ms"])

    def rate(gflop: float, ms: float) -> str:
        return f"{gflop / ms * 1e3:,.0f}" if gflop and ms > 0 else "-"

    body = []
    for r in rows:
        name = f"**{r['layer']}**" if r is slowest else r["layer"]
        body.append(
            (
                name,
                f"{r['fwd_ms']:.1f}",
                rate(r["fwd_gflop"], r["fwd_ms"]),
                f"{r['bwd_ms']:.1f}",
                rate(r["bwd_gflop"], r["bwd_ms"]),
                f"{100 * r['share']:.0f}%",
            )
        )
    header = ("layer", "fwd ms", "fwd GFLOP/s", "bwd ms", "bwd GFLOP/s", "share")
    return table(header, body) + f"\n\nslowest: {slowest['layer']} (batch {batch_size})"


def main(
    models: list[str] = ["forward", "cae4_switch", "cae4_blind"],  # noqa: B006
    plain: bool = False,
    batch_size: int = 256,
    steps: int = 3,
    warmup: int = 1,
    threads: int = 2,
    smoke: bool = False,
    out: Path | None = None,
) -> dict:
    """Print one per-layer table per model (and per plain model with ``plain``).

    Args:
        models: Any of ``training.MODELS``: ``forward``, ``cae1_switch``, ``cae1_blind``,
            ``cae4_switch``, ``cae4_blind``.
        plain: Also profile the plain PyTorch versions.
        batch_size: Samples per step.
        steps: Measured steps (medians).
        warmup: Unmeasured steps first.
        threads: torch threads.
        smoke: A seconds-long run (batch 4, 1 step) that only checks the script works.
        out: Write the rows as JSON here (default ``$OUT/layers.json`` when ``$OUT`` is set).
    """
    if smoke:
        batch_size, steps, warmup = 4, 1, 0
    tune_malloc()  # as the console scripts do
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    emit(f"machine: {machine()}")
    results = {}
    for name in models:
        if name not in MODELS:
            raise ValueError(f"models: {name!r} is not one of {list(MODELS)}")
        ours, baseline, loss_fn = MODELS[name]
        x = torch.randn(batch_size, 1, 201, 16)
        y = torch.randint(0, 48, (batch_size,))
        variants = [("ours", ours)] + ([("plain", baseline)] if plain else [])
        for label, build in variants:
            rows = profile(build(), loss_fn, (x, y), steps, warmup)
            results[f"{name}/{label}"] = rows
            emit(f"\n### {name} ({label}), batch {batch_size}\n\n{render(rows, batch_size)}")
    save(results, out, "layers.json")
    return results


if __name__ == "__main__":
    CLI(main, as_positional=False)
