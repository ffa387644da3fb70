"""Reconstruction measures (per sample) and 48/39-class accuracy metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["ClassificationMetrics", "reconstruction_measures"]


def reconstruction_measures(recon: Tensor, x: Tensor, eps: float = 1e-12) -> dict[str, Tensor]:
    """Per-sample measures between reconstructions and inputs, each of shape ``(B,)``.

    - ``sq_error``: squared Euclidean error (the training loss of B.7, before averaging).
    - ``euclid``: Euclidean distance, the figure the thesis reports (Tables 3, 4).
    - ``cosine``: cosine similarity; ``corr``: Pearson correlation (cosine of centred vectors).
    - ``euclid_scaled``: distance after the optimal scalar rescaling ``min_a ||a*recon - x||``.
      These three are scale-invariant, as the thesis's conclusion asks.
    """
    r = recon.flatten(1)
    t = x.flatten(1)
    sq = (r - t).pow(2).sum(1)
    rr = r.pow(2).sum(1)
    tt = t.pow(2).sum(1)
    rt = (r * t).sum(1)
    cosine = rt / (rr.sqrt() * tt.sqrt()).clamp_min(eps)
    rc = r - r.mean(1, keepdim=True)
    tc = t - t.mean(1, keepdim=True)
    corr = (rc * tc).sum(1) / (rc.norm(dim=1) * tc.norm(dim=1)).clamp_min(eps)
    scaled_sq = (tt - rt.pow(2) / rr.clamp_min(eps)).clamp_min(0)
    return {
        "sq_error": sq,
        "euclid": sq.sqrt(),
        "cosine": cosine,
        "corr": corr,
        "euclid_scaled": scaled_sq.sqrt(),
    }


class ClassificationMetrics(nn.Module):
    """Accuracy over the classes, and (for the 48 TIMIT classes) over the 39 folded ones.

    Args:
        num_classes: Number of classes of the predictions.
        fold: Class index -> folded index (``FOLD_48_TO_39``); ``None`` disables ``acc39``.
    """

    def __init__(self, num_classes: int, fold: Sequence[int] | None = None) -> None:
        super().__init__()
        self.acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.folded: MulticlassAccuracy | None = None
        if fold is not None:
            self.register_buffer("fold", torch.tensor(fold, dtype=torch.long), persistent=False)
            self.folded = MulticlassAccuracy(num_classes=max(fold) + 1, average="micro")

    def update(self, logits: Tensor, target: Tensor) -> None:
        pred = logits.argmax(1)
        self.acc.update(pred, target)
        if self.folded is not None:
            self.folded.update(self.fold[pred], self.fold[target])
