"""What every LightningModule of the project shares: optimiser wiring, freezing by parameter name,
evaluation-view names, non-finite loss checks and self-describing checkpoints."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from convae_lightning.runs import EVAL_VIEWS

__all__ = ["CHECKPOINT_META_KEY", "DEFAULT_EVAL_VIEWS", "ConvaeModule", "read_checkpoint"]

#: View names when the datamodule does not say (``eval_views``): loader 0, loader 1.
DEFAULT_EVAL_VIEWS: tuple[str, ...] = EVAL_VIEWS
#: Key under which models describe themselves in their checkpoints.
CHECKPOINT_META_KEY = "convae"


def default_optimizer(params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """AdaGrad, as in the thesis (B.9); lr 0.01 is PyTorch's default (the thesis gives none)."""
    return torch.optim.Adagrad(params, lr=0.01)


class ConvaeModule(pl.LightningModule):
    """Base class: subclasses build their layers, then call :meth:`_apply_frozen`.

    Args:
        optimizer: Optimiser factory taking the parameters (LightningCLI ``OptimizerCallable``).
        lr_scheduler: Optional scheduler factory taking the optimiser.
    """

    #: Written into checkpoints as ``checkpoint["convae"]["kind"]``.
    checkpoint_kind: str = "module"

    def __init__(
        self,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self._optimizer_factory = optimizer
        self._scheduler_factory = lr_scheduler
        self._config_frozen: set[str] = set()

    # ----------------------------------------------------------------------------- freezing
    def _apply_frozen(self, patterns: Sequence[str], arg_name: str = "frozen") -> None:
        """Freeze (``requires_grad=False``) every parameter whose name matches a glob pattern.

        Frozen-by-configuration parameters are left out of the optimiser. A pattern that matches
        nothing is an error listing the available names.
        """
        names = [n for n, _ in self.named_parameters()]
        for pattern in patterns:
            matched = fnmatch.filter(names, pattern)
            if not matched:
                raise ValueError(
                    f"{arg_name}: pattern {pattern!r} matches no parameter; available: {names}"
                )
            self._config_frozen.update(matched)
        for name, param in self.named_parameters():
            if name in self._config_frozen:
                param.requires_grad_(False)

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Parameters given to the optimiser: all except those frozen by configuration.

        Parameters frozen *later* (strong stacking, callbacks) stay in the optimiser: with
        ``requires_grad=False`` their ``grad`` is ``None`` and optimisers skip them, and the
        optimiser's parameter groups stay identical across checkpoint resumes.
        """
        return [p for n, p in self.named_parameters() if n not in self._config_frozen]

    @override
    def configure_optimizers(self) -> Any:
        params = self.optimizer_parameters()
        if not params:
            # Every part frozen: the "no training" baselines. A dummy keeps fit() running.
            params = [nn.Parameter(torch.zeros(1, device=self.device))]
        optimizer = self._optimizer_factory(params)
        if self._scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self._scheduler_factory(optimizer)}

    # ------------------------------------------------------------------------------ helpers
    def view_name(self, dataloader_idx: int) -> str:
        """Name of the evaluation view of a val/test loader (``datamodule.eval_views``)."""
        views: Sequence[str] = DEFAULT_EVAL_VIEWS
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None and getattr(datamodule, "eval_views", None):
            views = datamodule.eval_views
        return views[dataloader_idx] if dataloader_idx < len(views) else f"view{dataloader_idx}"

    def check_finite(self, loss: Tensor, stage: str) -> None:
        """Stop the run with a clear message when the loss is NaN or infinite."""
        value = float(loss.detach())
        if not math.isfinite(value):
            where = ""
            if self._trainer is not None:
                where = f" at epoch {self.current_epoch}, global step {self.global_step}"
            raise FloatingPointError(
                f"{type(self).__name__}: {stage} loss is {value}{where}. Lower the learning rate "
                "(optimizer.init_args.lr), check the input normalisation, or enable gradient "
                "clipping (trainer.gradient_clip_val)."
            )

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Self-description stored in checkpoints (kind and layer shapes)."""
        return {"kind": self.checkpoint_kind}

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_META_KEY] = self.checkpoint_metadata()


def read_checkpoint(
    path: str | Path, expected_kinds: Sequence[str], arg_name: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a project checkpoint's ``state_dict`` and metadata, checking what kind it is.

    Raises:
        FileNotFoundError: naming ``arg_name`` when the file is missing.
        ValueError: naming ``arg_name`` when the checkpoint is of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{arg_name}: checkpoint {str(path)!r} does not exist")
    # Our own Lightning checkpoints hold hyperparameters and loop state besides tensors, which
    # weights_only=True rejects; they are trusted local files written by this project.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle, zip and torch errors alike: the file is not ours
        raise ValueError(f"{arg_name}: {str(path)!r} is not a checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{arg_name}: {str(path)!r} is not a Lightning checkpoint")
    meta = checkpoint.get(CHECKPOINT_META_KEY) or {}
    kind = meta.get("kind", "unknown")
    if kind not in expected_kinds:
        raise ValueError(
            f"{arg_name}: {str(path)!r} is a {kind!r} checkpoint, expected one of "
            f"{list(expected_kinds)}"
        )
    return checkpoint["state_dict"], meta
