"""The dropout experiment behind ``ForwardClassifier(dropout=...)`` (see docs/models.md).

The thesis's "dropout rate 0.9" (Figure 2) is ambiguous: drop probability 0.9 (MatConvNet's
``vl_nndropout`` ``rate``, the toolbox the thesis used) or keep probability 0.9 (drop 0.1). This
trains the Figure 2 network briefly on synthetic class-template data (no TIMIT needed) with both
readings and prints train/held-out accuracy. Run::

    python benchmarks/dropout_study.py --epochs 8 --seeds 0 1

Synthetic data cannot settle what works on TIMIT; rerun on real data (``convae fit`` with
``model.dropout``) when the corpus is available.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from convae_lightning.models.classifier import ForwardClassifier


def synthetic(
    n: int, shape: tuple[int, int, int], classes: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class templates (smooth along frequency) plus noise; returns train and held-out sets."""
    g = torch.Generator().manual_seed(1000 + seed)
    templates = torch.randn(classes, *shape, generator=g)
    templates = F.avg_pool2d(templates, (5, 1), 1, (2, 0))  # smooth along frequency
    y = torch.randint(0, classes, (2 * n,), generator=g)
    x = templates[y] + noise * torch.randn(2 * n, *shape, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def run(dropout: float, seed: int, epochs: int, n: int, noise: float) -> tuple[float, float]:
    shape = (1, 40, 8)
    x, y, xt, yt = synthetic(n, shape, 48, noise, seed)
    torch.manual_seed(seed)
    model = ForwardClassifier(input_shape=shape, dropout=dropout)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n).split(64):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x).argmax(1) == y).float().mean().item()
        test_acc = (model(xt).argmax(1) == yt).float().mean().item()
    return train_acc, test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description="Dropout 0.1 vs 0.9 on synthetic data")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.9])
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| drop probability | seed | train acc | held-out acc |")
    print("|---|---|---|---|")
    for rate in args.rates:
        for seed in args.seeds:
            train_acc, test_acc = run(rate, seed, args.epochs, args.samples, args.noise)
            print(f"| {rate} | {seed} | {train_acc:.3f} | {test_acc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
