"""Training objectives of the autoencoders beyond the thesis's (its section 8): input corruption
(denoising), a sparse (L1) code, a contractive penalty and scale-invariant reconstruction losses.

They change training only: validation, test and prediction see the clean input, and the
evaluation metrics (``val/euclid_*``...) stay the Euclidean ones, comparable across options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from convae_lightning.models.metrics import reconstruction_measures

__all__ = [
    "RECONSTRUCTION_LOSSES",
    "InputCorruption",
    "ObjectiveTerms",
    "ReconstructionLoss",
    "TrainingObjective",
    "check_non_negative",
    "code_l1_penalty",
    "contractive_penalty",
    "reconstruction_loss",
]

#: ``euclidean``: the thesis's squared error (B.7); ``relative``: divided by the input's squared
#: norm; ``scale_invariant``: the error left after the best scaling of the reconstruction,
#: relative to the input's squared norm.
ReconstructionLoss = Literal["euclidean", "relative", "scale_invariant"]
RECONSTRUCTION_LOSSES: tuple[str, ...] = get_args(ReconstructionLoss)
#: Keeps silent (all-zero) inputs from dividing by zero in the relative losses.
_EPS = 1e-12


def check_non_negative(name: str, value: float) -> float:
    """``value`` as a float when it is a finite number >= 0.

    Raises:
        ValueError: naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def reconstruction_loss(recon: Tensor, x: Tensor, kind: str) -> Tensor:
    """Per-sample training loss ``(B,)`` of reconstructions ``recon`` of inputs ``x``.

    - ``euclidean``: ``||r - x||^2``.
    - ``relative``: ``||r - x||^2 / ||x||^2``: loud and quiet patches weigh alike.
    - ``scale_invariant``: ``||a r - x||^2 / ||x||^2`` with the optimal ``a = <r, x> / ||r||^2``
      (``a`` is part of the graph): only the reconstruction's shape is penalised, not its scale,
      the thesis's main criticism of the Euclidean error (section 8).
    """
    r = recon.flatten(1)  # (B, C*F*T)
    t = x.flatten(1)
    if kind == "euclidean":
        return (r - t).pow(2).sum(1)
    norm = t.pow(2).sum(1).clamp_min(_EPS)
    if kind == "relative":
        return (r - t).pow(2).sum(1) / norm
    if kind == "scale_invariant":
        alpha = (r * t).sum(1, keepdim=True) / r.pow(2).sum(1, keepdim=True).clamp_min(_EPS)
        return (alpha * r - t).pow(2).sum(1) / norm
    raise ValueError(f"reconstruction_loss must be one of {RECONSTRUCTION_LOSSES}, got {kind!r}")


def code_l1_penalty(code: Tensor) -> Tensor:
    """``||code||_1`` per sample, averaged over the batch (a sparse code)."""
    return code.abs().flatten(1).sum(1).mean()


def contractive_penalty(code: Tensor, inputs: Tensor) -> Tensor:
    """Unbiased estimate of ``||d code / d inputs||_F^2`` per sample, averaged over the batch.

    For a conv encoder the Jacobian is too large to form; ``E_v ||v^T J||^2 = ||J||_F^2`` for
    ``v ~ N(0, I)`` in code space, so one vector-Jacobian product per step (with
    ``create_graph=True``, so the penalty trains the encoder) gives an unbiased estimate.
    ``inputs`` must require gradients and ``code`` depend on it.
    """
    v = torch.randn_like(code)
    (vjp,) = torch.autograd.grad(code, inputs, grad_outputs=v, create_graph=True)
    return vjp.pow(2).flatten(1).sum(1).mean()


class InputCorruption(nn.Module):
    """Denoising-autoencoder corruption of training inputs ``(B, C, F, T)``: additive Gaussian
    noise, then SpecAugment-style masks (torchaudio's ``FrequencyMasking``/``TimeMasking``,
    drawn independently per example and channel) set to 0, which is the training mean of the
    mean-subtracted features.

    Args:
        noise_std: Standard deviation of the noise, absolute, in the units of the (mean
            subtracted) features.
        freq_mask: Maximum width in frequency rows of one mask (0: none).
        time_mask: Maximum width in frames of one mask (0: none).
    """

    def __init__(self, noise_std: float = 0.0, freq_mask: int = 0, time_mask: int = 0) -> None:
        super().__init__()
        self.noise_std = noise_std
        self.freq_mask, self.time_mask = freq_mask, time_mask
        if freq_mask > 0 or time_mask > 0:
            # Imported here: models without masks need torch alone (the lent GPU machines have
            # no torchaudio; tests/test_benchmarks.py checks benchmarks/gpu.py imports none).
            import torchaudio

            self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
            self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)

    def forward(self, x: Tensor) -> Tensor:
        """A corrupted copy of ``x`` (``x`` itself is left as it is)."""
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        if self.freq_mask > 0:
            x = self.freq(x)
        if self.time_mask > 0:
            x = self.time(x)
        return x


class ObjectiveTerms(NamedTuple):
    """One training step's loss and what it is made of (all scalars but ``euclid``)."""

    loss: Tensor
    euclid: Tensor  # (B,) Euclidean distance of the reconstructions to the clean inputs
    reconstruction: Tensor
    penalties: dict[str, Tensor]  # unweighted, by log name: code_l1, contractive


class TrainingObjective:
    """The autoencoders' training loss: reconstruction of the clean input from a corrupted one,
    plus weighted penalties on the code (innermost encoder output).

    At its defaults it is the thesis's loss exactly: the mean squared Euclidean error. Not a
    module: it holds no state (the masks have none), so a model's modules, state and summary
    stay the thesis's whatever the options.

    Args:
        reconstruction_loss: ``euclidean``, ``relative`` or ``scale_invariant``
            (:func:`reconstruction_loss`).
        input_noise_std: See :class:`InputCorruption` (``noise_std``).
        freq_mask: See :class:`InputCorruption`.
        time_mask: See :class:`InputCorruption`.
        code_l1: Weight of :func:`code_l1_penalty`.
        contractive: Weight of :func:`contractive_penalty`.
        input_shape: ``(C, F, T)`` of the inputs, to check the mask widths against.
    """

    def __init__(
        self,
        reconstruction_loss: ReconstructionLoss = "euclidean",
        input_noise_std: float = 0.0,
        freq_mask: int = 0,
        time_mask: int = 0,
        code_l1: float = 0.0,
        contractive: float = 0.0,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"reconstruction_loss must be one of {RECONSTRUCTION_LOSSES}, got "
                f"{reconstruction_loss!r}"
            )
        self.kind = reconstruction_loss
        self.code_l1 = check_non_negative("code_l1", code_l1)
        self.contractive = check_non_negative("contractive", contractive)
        noise = check_non_negative("input_noise_std", input_noise_std)
        sizes = dict(zip(("freq_mask", "time_mask"), (input_shape or (0, 0, 0))[1:], strict=True))
        for name, width in (("freq_mask", freq_mask), ("time_mask", time_mask)):
            if isinstance(width, bool) or not isinstance(width, int) or width < 0:
                raise ValueError(f"{name} must be an int >= 0 (a width), got {width!r}")
            if input_shape is not None and width > sizes[name]:
                raise ValueError(
                    f"{name}={width} is wider than the input ({sizes[name]} "
                    f"{'rows' if name == 'freq_mask' else 'frames'} of input_shape "
                    f"{tuple(input_shape)})"
                )
        self.corruption = (
            InputCorruption(noise, freq_mask, time_mask)
            if noise > 0 or freq_mask > 0 or time_mask > 0
            else None
        )

    @property
    def has_penalties(self) -> bool:
        return self.code_l1 > 0 or self.contractive > 0

    def __call__(
        self,
        x: Tensor,
        encode: Callable[[Tensor], tuple[Tensor, list]],
        decode: Callable[[Tensor, list], Tensor],
    ) -> ObjectiveTerms:
        """The loss of reconstructing clean inputs ``x`` through ``encode`` and ``decode``."""
        inputs = self.corruption(x) if self.corruption is not None else x
        if self.contractive > 0:
            inputs = inputs.detach().requires_grad_(True)
        code, states = encode(inputs)
        recon = decode(code, states)
        measures = reconstruction_measures(recon, x)
        if self.kind == "euclidean":
            reconstruction = measures["sq_error"].mean()
        else:
            reconstruction = reconstruction_loss(recon, x, self.kind).mean()
        loss = reconstruction
        penalties: dict[str, Tensor] = {}
        if self.code_l1 > 0:
            penalties["code_l1"] = code_l1_penalty(code)
            loss = loss + self.code_l1 * penalties["code_l1"]
        if self.contractive > 0:
            penalties["contractive"] = contractive_penalty(code, inputs)
            loss = loss + self.contractive * penalties["contractive"]
        return ObjectiveTerms(loss, measures["euclid"], reconstruction, penalties)
