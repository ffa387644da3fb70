"""What every benchmark shares: the machine's FMA limit measured in the same run, timing of
training steps (plain loops and ``Trainer.fit`` alike), FLOP counts and Markdown tables.

Not a benchmark itself; the scripts beside it import it (``python benchmarks/X.py`` puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from convae_lightning.allocator import is_tuned

#: A register-only FMA loop: ``CHAINS`` independent accumulators hide the FMA latency, so the
#: loop runs at the core's FMA throughput. Compiled at run time for the widest vectors the CPU has.
FMA_KERNEL = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define FMA _mm512_fmadd_ps
#define SET1 _mm512_set1_ps
#define ADD _mm512_add_ps
static float total(vec v) { return _mm512_reduce_add_ps(v); }
#else
typedef __m256 vec;
#define LANES 8
#define FMA _mm256_fmadd_ps
#define SET1 _mm256_set1_ps
#define ADD _mm256_add_ps
static float total(vec v) {
  float a[8]; _mm256_storeu_ps(a, v);
  float s = 0; for (int i = 0; i < 8; i++) s += a[i];
  return s;
}
#endif
#define CHAINS 12
static long iters;
static void *work(void *out) {
  vec a = SET1(0.999999f), b = SET1(1e-7f), acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
  for (long n = 0; n < iters; n++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], a, b);
  }
  vec s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = ADD(s, acc[i]);
  *(float *)out = total(s);  /* keeps the loop alive */
  return NULL;
}
int main(int argc, char **argv) {
  int threads = atoi(argv[1]); iters = atol(argv[2]);
  pthread_t t[256]; float out[256]; struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, work, &out[i]);
  for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec);
  printf("%.3f %d\n", 2.0 * LANES * CHAINS * (double)iters * threads / s / 1e9, LANES);
  return out[0] == 12345.0f;
}
"""

#: glibc settings that keep large temporaries in the heap instead of returning them to the OS
#: after every step (cpu-performance-notes.md). The console scripts apply the equivalent
#: ``mallopt`` settings for users (``convae_lightning.allocator``), and so do the benchmarks.
TUNED_MALLOC_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)


@dataclass
class Limit:
    """A peak rate of the machine: GFLOP/s and how it was measured."""

    gflops: float
    method: str


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), empty where unavailable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fma_limit(threads: int, seconds: float = 0.5, repeats: int = 3) -> Limit:
    """fp32 FMA throughput of ``threads`` threads (best of ``repeats``), from a register-only loop
    compiled with gcc; falls back to the best GEMM torch runs when no compiler is available."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return gemm_limit(threads)
    flags = cpu_flags()
    arch = ["-mavx512f"] if "avx512f" in flags else ["-mavx2", "-mfma"]
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "fma.c", Path(tmp) / "fma"
        source.write_text(FMA_KERNEL)
        build = subprocess.run(
            [gcc, "-O2", *arch, "-pthread", str(source), "-o", str(binary)],
            capture_output=True,
            text=True,
        )
        if build.returncode != 0:
            return gemm_limit(threads)
        # Calibrate the iteration count to ~``seconds`` per run.
        iters, rate, lanes = 10_000_000, 0.0, 0
        for _ in range(3):
            start = time.perf_counter()
            out = subprocess.run([str(binary), str(threads), str(iters)], capture_output=True)
            elapsed = time.perf_counter() - start
            if elapsed > seconds / 4:
                break
            iters *= 4
        iters = max(1, int(iters * seconds / max(elapsed, 1e-3)))
        for _ in range(repeats):
            out = subprocess.run(
                [str(binary), str(threads), str(iters)], capture_output=True, text=True
            )
            value, lanes_text = out.stdout.split()
            rate, lanes = max(rate, float(value)), int(lanes_text)
    width = "AVX-512" if lanes == 16 else "AVX2"
    return Limit(rate, f"register-only {width} FMA loop, {threads} threads, gcc")


def gemm_limit(threads: int, n: int = 2048) -> Limit:
    """The best of ``torch.mm`` and the same product as a 1x1 oneDNN convolution (GFLOP/s)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    x, w = a.view(1, n, n, 1), b.view(n, n, 1, 1)
    best = 0.0
    for run in (lambda: a @ b, lambda: torch.conv2d(x, w)):
        run()
        start = time.perf_counter()
        for _ in range(3):
            run()
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return Limit(best, f"best GEMM (torch.mm / 1x1 oneDNN conv, {n}^3), {threads} threads")


def training_flops(model: nn.Module, loss_fn: Callable, batch: Sequence[Tensor]) -> int:
    """FLOPs of one training step (forward and backward) counted by ``FlopCounterMode``."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model, *batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def machine() -> str:
    """One line naming the machine, torch and the allocator settings."""
    tuned = is_tuned() or all(v in os.environ for v in TUNED_MALLOC_VARIABLES)
    try:
        load = "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "load n/a"
    cpu = platform.processor() or platform.machine()
    for line in _read_lines("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), python {platform.python_version()}, tuned malloc: {tuned}, {load} at start, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def median_rate(timestamps: Sequence[float], samples_per_step: int, warmup: int) -> float:
    """Median samples/s from the start times of consecutive steps, skipping ``warmup`` steps."""
    gaps = [b - a for a, b in zip(timestamps[warmup:], timestamps[warmup + 1 :], strict=False)]
    if not gaps:
        raise ValueError(f"need more than {warmup + 1} timestamps, got {len(timestamps)}")
    return samples_per_step / statistics.median(gaps)


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def plain_loop_rate(
    model: nn.Module,
    loss_fn: Callable,
    batches: Sequence[Sequence[Tensor]],
    steps: int,
    warmup: int,
    lr: float = 0.01,
) -> float:
    """Samples/s of a plain PyTorch training loop (Adagrad, ``zero_grad(set_to_none=True)``).

    On the CPU the median over steps; on a GPU, where steps run asynchronously, all measured
    steps between two synchronisations.
    """
    device = batches[0][0].device
    optimizer = torch.optim.Adagrad(model.parameters(), lr=lr)
    model.train()
    stamps = []
    for step in range(warmup + steps + 1):
        if device.type == "cuda" and step in (warmup, warmup + steps):
            _sync(device)
        stamps.append(time.perf_counter())
        if step == warmup + steps:
            break
        batch = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, *batch).backward()
        optimizer.step()
    if device.type == "cuda":
        return steps * len(batches[0][0]) / (stamps[-1] - stamps[warmup])
    return median_rate(stamps, len(batches[0][0]), warmup)


class StepTimer(pl.Callback):
    """Records when every training batch starts (and when the last one ends); on a GPU it
    synchronises before the first measured step and at the end."""

    def __init__(self, warmup: int = 0) -> None:
        self.stamps: list[float] = []
        self.warmup = warmup

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if len(self.stamps) == self.warmup:
            _sync(trainer.strategy.root_device)
        self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(trainer.strategy.root_device)
        self.stamps.append(time.perf_counter())

    def rate(self, samples_per_step: int, on_gpu: bool) -> float:
        """Median samples/s (CPU) or samples/s over all measured steps (GPU)."""
        if on_gpu:
            steps = len(self.stamps) - 1 - self.warmup
            return steps * samples_per_step / (self.stamps[-1] - self.stamps[self.warmup])
        return median_rate(self.stamps, samples_per_step, self.warmup)


class BatchList(torch.utils.data.Dataset):
    """Ready-made batches as a dataset (``DataLoader(..., batch_size=None)``): in-memory data
    with no per-sample indexing, so a benchmark times the model and the Trainer alone."""

    def __init__(self, batches: Sequence[Sequence[Tensor]], length: int) -> None:
        self.batches = batches
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sequence[Tensor]:
        return self.batches[index % len(self.batches)]


def trainer_fit_rate(
    module: pl.LightningModule,
    loader: Iterable,
    steps: int,
    warmup: int,
    samples_per_step: int,
    **trainer_kwargs: Any,
) -> float:
    """Samples/s of ``Trainer.fit`` (CSV logger in a temporary folder, no checkpoints, no
    progress bar) on ``loader`` (a training loader or a DataModule): median gap between the
    starts of consecutive steps (on a GPU: all steps between two synchronisations)."""
    timer = StepTimer(warmup)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            max_steps=warmup + steps,
            max_epochs=-1,
            logger=pl.loggers.CSVLogger(tmp),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
            **trainer_kwargs,
        )
        if isinstance(loader, pl.LightningDataModule):
            trainer.fit(module, datamodule=loader)
        else:
            trainer.fit(module, train_dataloaders=loader)
    return timer.rate(samples_per_step, trainer.strategy.root_device.type == "cuda")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; floats printed with thousands separators or 2 decimals below 10."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def quiet() -> None:
    """Silence what Lightning and the DataModule say on every fit (tips, devices, logging
    intervals, classes absent from a small corpus): a benchmark prints tables."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "convae_lightning.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (
        ".*does not have many workers.*",
        ".*log_every_n_steps.*",
        ".*LeafSpec.*",
        ".*no `val_dataloader`.*",
        ".*smaller than the logging interval.*",
    ):
        warnings.filterwarnings("ignore", pattern)


def save(results: Any, out: Path | None, name: str) -> Path | None:
    """Write ``results`` as JSON to ``out``, else to ``$OUT/name`` when ``$OUT`` is set (the
    GPU machine's result folder), else nowhere; returns the path written."""
    if out is None and os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / name
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))
    return out


def emit(text: str) -> None:
    """Print now (benchmarks are long; show tables as they complete)."""
    print(text, flush=True)
    sys.stdout.flush()
