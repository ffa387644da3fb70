"""Training throughput (samples/s) of the forward network and the 4-unit CAE at 201x16, CPU.

Compares, in the same run, our decoder implementation (deterministic scatter switch unpooling,
decoder convolutions as ``conv_transpose2d``) with a naive baseline (``nn.MaxUnpool2d`` and
padded ``conv2d`` decoders), and reports medians and ratios. Usage (tuned glibc malloc as in
cpu-performance-notes.md; the variables must be set before Python starts)::

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 \
    MALLOC_TOP_PAD_=536870912 python benchmarks/train_speed.py

Options: ``--batch-sizes 64 256 --steps 6 --warmup 2 --threads 2``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convae_lightning.models import ConvAutoencoder, ForwardClassifier
from convae_lightning.nn import SwitchUnpool2d


class MaxUnpoolBaseline(SwitchUnpool2d):
    """The naive switch unpooling: ``max_unpool2d`` (nondeterministic on repeated indices)."""

    def forward(self, y: Tensor, indices: Tensor, output_size: tuple[int, int]) -> Tensor:
        kernel = self.kernel_size or tuple(output_size)
        stride = self.stride or kernel
        return F.max_unpool2d(y, indices, kernel, stride, output_size=output_size)


def naive_autoencoder() -> ConvAutoencoder:
    model = ConvAutoencoder(decoder_impl="conv2d")
    for block in model.decoder:
        block.unpool = MaxUnpoolBaseline(block.unpool.kernel_size, block.unpool.stride)
    return model


def measure(model: nn.Module, loss_fn: Callable, batch: int, steps: int, warmup: int) -> float:
    """Median samples/s of full training steps (forward, backward, AdaGrad update)."""
    x = torch.randn(batch, 1, 201, 16)
    y = torch.randint(0, 48, (batch,))
    optimizer = torch.optim.Adagrad([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    rates = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, x, y).backward()
        optimizer.step()
        if step >= warmup:
            rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates)


def classifier_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


def reconstruction_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x) - x).pow(2).flatten(1).sum(1).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tuned = "MALLOC_MMAP_THRESHOLD_" in os.environ
    print(f"torch {torch.__version__}, {args.threads} threads, tuned malloc: {tuned}")
    print("| model | batch | samples/s | ratio vs naive |")
    print("|---|---|---|---|")
    for batch in args.batch_sizes:
        fwd = measure(ForwardClassifier(), classifier_loss, batch, args.steps, args.warmup)
        print(f"| forward net (Figure 2) | {batch} | {fwd:,.0f} | - |", flush=True)
        naive = measure(naive_autoencoder(), reconstruction_loss, batch, args.steps, args.warmup)
        ours = measure(ConvAutoencoder(), reconstruction_loss, batch, args.steps, args.warmup)
        print(f"| 4-unit CAE, naive (MaxUnpool2d + conv2d) | {batch} | {naive:,.0f} | 1.00 |")
        print(
            f"| 4-unit CAE, ours (scatter unpool + conv_transpose2d) | {batch} | {ours:,.0f} | "
            f"{ours / naive:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
