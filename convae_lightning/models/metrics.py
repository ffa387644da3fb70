"""Reconstruction measures (per sample) and the torchmetrics that average them over an epoch, and
48/39-class accuracy metrics.

Every epoch-level figure is a torchmetrics ``Metric`` logged as an object: Lightning computes it at
the epoch's end, synchronised over all processes (DDP), and resets it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

__all__ = [
    "MEASURES",
    "ZERO_CODE_MEASURES",
    "ClassificationMetrics",
    "RatioOfMeans",
    "ReconstructionMetrics",
    "reconstruction_measures",
]

#: Logged for every autoencoder evaluation view: ``val/{name}_{view}``.
MEASURES: tuple[str, ...] = (
    "loss",
    "euclid",
    "cosine",
    "corr",
    "euclid_scaled",
    "input_norm",
    "euclid_rel",
)
#: Logged besides for switch-unpooling autoencoders: the reconstruction from the switches alone.
ZERO_CODE_MEASURES: tuple[str, ...] = ("euclid_zero_code", "corr_zero_code")


def reconstruction_measures(recon: Tensor, x: Tensor, eps: float = 1e-12) -> dict[str, Tensor]:
    """Per-sample measures between reconstructions and inputs, each of shape ``(B,)``.

    - ``sq_error``: squared Euclidean error (the training loss of B.7, before averaging).
    - ``euclid``: Euclidean distance, the figure the thesis reports (Tables 3, 4).
    - ``cosine``: cosine similarity; ``corr``: Pearson correlation (cosine of centred vectors).
    - ``euclid_scaled``: distance after the optimal scalar rescaling ``min_a ||a*recon - x||``.
      These three are scale-invariant, as the thesis's conclusion asks.
    - ``input_norm``: the input's distance to zero, the thesis's reference for its errors (3.1
      on its data; Appendix A).
    """
    r = recon.flatten(1)  # (B, C*F*T)
    t = x.flatten(1)  # (B, C*F*T)
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
        "input_norm": tt.sqrt(),
    }


class RatioOfMeans(Metric):
    """``mean(numerator) / mean(denominator)`` over everything seen (and every process).

    ``euclid_rel`` is the mean error over the mean input norm: the ratio the thesis's tables imply
    (error against the reference 3.1), not a mean of per-sample ratios, which near-silent patches
    would dominate.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("numerator", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("denominator", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, numerator: Tensor, denominator: Tensor) -> None:
        self.numerator += numerator.detach().sum()
        self.denominator += denominator.detach().sum()

    def compute(self) -> Tensor:
        return self.numerator / self.denominator


class ReconstructionMetrics(nn.ModuleDict):
    """Epoch means of :func:`reconstruction_measures` for one (stage, view): the
    :data:`MEASURES` and, when fed a zero-code reconstruction, the :data:`ZERO_CODE_MEASURES`.

    A ``ModuleDict`` of metrics (name -> ``Metric``), each logged as its own key; ``add_batch``
    feeds them all (``update`` stays the dict's).
    """

    def __init__(self) -> None:
        metrics: dict[str, Metric] = {name: MeanMetric() for name in MEASURES}
        metrics.update({name: MeanMetric() for name in ZERO_CODE_MEASURES})
        metrics["euclid_rel"] = RatioOfMeans()
        super().__init__(metrics)

    def add_batch(self, recon: Tensor, x: Tensor, zero_code_recon: Tensor | None = None) -> None:
        """Add a batch: reconstructions, inputs and optionally the switches-only reconstruction."""
        m = reconstruction_measures(recon.detach(), x)
        self["loss"].update(m["sq_error"])
        for name in ("euclid", "cosine", "corr", "euclid_scaled", "input_norm"):
            self[name].update(m[name])
        self["euclid_rel"].update(m["euclid"], m["input_norm"])
        if zero_code_recon is not None:
            zero = reconstruction_measures(zero_code_recon.detach(), x)
            self["euclid_zero_code"].update(zero["euclid"])
            self["corr_zero_code"].update(zero["corr"])


class ClassificationMetrics(nn.ModuleDict):
    """Accuracy over the classes (``acc48``), over the 39 folded ones (``acc39``, for the 48 TIMIT
    classes) and optionally the mean cross-entropy (``loss``).

    Args:
        num_classes: Number of classes of the predictions.
        fold: Class index -> folded index (``FOLD_48_TO_39``); ``None`` disables ``acc39``.
        loss: Also average the per-sample cross-entropy.
    """

    def __init__(self, num_classes: int, fold: Sequence[int] | None = None, loss: bool = True):
        metrics: dict[str, Metric] = {}
        if loss:
            metrics["loss"] = MeanMetric()
        metrics["acc48"] = MulticlassAccuracy(num_classes=num_classes, average="micro")
        if fold is not None:
            metrics["acc39"] = MulticlassAccuracy(num_classes=max(fold) + 1, average="micro")
        super().__init__(metrics)
        if fold is not None:
            self.register_buffer("fold", torch.tensor(fold, dtype=torch.long), persistent=False)
        else:
            self.fold = None

    def add_batch(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``(B, num_classes)`` and class ids ``(B,)``."""
        logits = logits.detach()
        pred = logits.argmax(1)  # (B,)
        if "loss" in self:
            self["loss"].update(F.cross_entropy(logits, target, reduction="none"))
        self["acc48"].update(pred, target)
        if self.fold is not None:
            self["acc39"].update(self.fold[pred], self.fold[target])
