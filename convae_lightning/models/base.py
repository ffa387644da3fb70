"""What every LightningModule of the project shares: optimiser wiring, freezing by parameter name,
evaluation metrics per view, non-finite loss checks, prediction outputs and self-describing
checkpoints."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric
from typing_extensions import override

from convae_lightning.runs import EVAL_VIEWS, metric_key

__all__ = [
    "CHECKPOINT_META_KEY",
    "DEFAULT_EVAL_VIEWS",
    "ConvaeModule",
    "NonFiniteLossError",
    "match_parameters",
    "read_checkpoint",
    "unpack_batch",
]

#: View names when the datamodule does not say (``eval_views``): loader 0, loader 1.
DEFAULT_EVAL_VIEWS: tuple[str, ...] = EVAL_VIEWS
#: Key under which models describe themselves in their checkpoints.
CHECKPOINT_META_KEY = "convae"


class NonFiniteLossError(FloatingPointError):
    """The loss (or a monitored metric) became NaN or infinite: the run cannot go on.

    A user error with a remedy in its message; the CLI shows it as one line.
    """


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """AdaGrad, as in the thesis (B.9); lr 0.01 is PyTorch's default (the thesis gives none).

    On the CPU its fused kernel: the same updates to float rounding, about twice as fast as the
    per-tensor loop (``benchmarks/levers.py``); PyTorch has it for the CPU only.
    """
    params = list(params)
    fused = bool(params) and all(p.device.type == "cpu" for p in params)
    return torch.optim.Adagrad(params, lr=0.01, fused=fused or None)


def match_parameters(module: nn.Module, patterns: Iterable[str], owner: str) -> list[str]:
    """Names of ``module``'s parameters matching any glob pattern, each once, in match order.

    The one implementation of freezing by name (``frozen`` arguments, ``LayerFreezing``).

    Raises:
        ValueError: naming ``owner`` for a pattern that matches no parameter, listing the names.
    """
    names = [name for name, _ in module.named_parameters()]
    matched: list[str] = []
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise ValueError(
                f"{owner}: pattern {pattern!r} matches no parameter of {type(module).__name__}; "
                f"available: {names}"
            )
        matched.extend(h for h in hits if h not in matched)
    return matched


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(x, y, index)`` of a batch ``(x, y)``, ``(x, y, index)`` or a bare tensor ``x``."""
    if not isinstance(batch, (list, tuple)):
        return batch, None, None
    x, y, *rest = batch
    return x, y, (rest[0] if rest else None)


class ConvaeModule(pl.LightningModule):
    """Base class: subclasses build their layers (``specs``, ``input_shape``), then call
    :meth:`_apply_frozen`, and implement :meth:`predict_outputs`.

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
        # Created at first use per (stage, view): the number of views is the datamodule's.
        self.eval_metrics = nn.ModuleDict()
        # Per stage, the first non-finite loss seen (check_finite), kept on the device.
        self._non_finite: dict[str, Tensor] = {}

    # ----------------------------------------------------------------------------- freezing
    def _apply_frozen(self, patterns: Sequence[str], arg_name: str = "frozen") -> None:
        """Freeze (``requires_grad=False``) every parameter whose name matches a glob pattern.

        Frozen-by-configuration parameters are left out of the optimiser. A pattern that matches
        nothing is an error listing the available names.
        """
        self._config_frozen.update(match_parameters(self, patterns, arg_name))
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

    # ---------------------------------------------------------------------------- metrics
    def view_name(self, dataloader_idx: int) -> str:
        """Name of the evaluation view of a val/test loader (``datamodule.eval_views``)."""
        views: Sequence[str] = DEFAULT_EVAL_VIEWS
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None and getattr(datamodule, "eval_views", None):
            views = datamodule.eval_views
        return views[dataloader_idx] if dataloader_idx < len(views) else f"view{dataloader_idx}"

    def metrics_for(
        self, stage: str, view: str, factory: Callable[[], nn.ModuleDict]
    ) -> tuple[nn.ModuleDict, str]:
        """The metrics of one (stage, view), made by ``factory`` at first use, and their path."""
        key = f"{stage}_{view}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = factory().to(self.device)
        return self.eval_metrics[key], f"eval_metrics.{key}"

    def log_metrics(
        self,
        stage: str,
        view: str | None,
        metrics: nn.ModuleDict,
        attribute: str,
        names: Iterable[str],
        prog_bar: str | None = None,
    ) -> None:
        """Log torchmetrics objects as ``{stage}/{name}_{view}``: Lightning computes them at the
        epoch's end (synchronised across processes) and resets them."""
        for name in names:
            metric: Metric = metrics[name]
            # metric_attribute is explicit: Lightning caches the attribute map at the first
            # log, before lazily created metrics exist.
            self.log(
                metric_key(stage, name, view),
                metric,
                on_step=False,
                on_epoch=True,
                add_dataloader_idx=False,
                metric_attribute=f"{attribute}.{name}",
                prog_bar=name == prog_bar,
            )

    def check_finite(self, loss: Tensor, stage: str) -> None:
        """Stop the run with a clear message when the loss is NaN or infinite.

        Inside a Trainer the check does not wait for the device: the first non-finite loss is
        recorded on the device (with its epoch and step) and reported at the next logging step
        (``trainer.log_every_n_steps``, when Lightning synchronises anyway), at the end of the
        training epoch, before validation and before any checkpoint is written, so the run
        still stops within the epoch and no checkpoint holds the broken weights. Outside a
        Trainer it checks at once.

        Raises:
            NonFiniteLossError: with the epoch, the step and what to try.
        """
        loss = loss.detach()
        if self._trainer is None:
            value = float(loss)
            if not math.isfinite(value):
                raise NonFiniteLossError(self._non_finite_message(stage, value, None, None))
            return
        record = self._non_finite.get(stage)
        if record is None or record.device != loss.device:
            # (value, global step, epoch) of the first non-finite loss; step -1: none yet.
            record = torch.full((3,), -1.0, dtype=torch.float64, device=loss.device)
            self._non_finite[stage] = record
        first = ~torch.isfinite(loss) & (record[1] < 0)
        here = torch.stack(
            [
                loss.to(torch.float64),
                record.new_full((), float(self.global_step)),
                record.new_full((), float(self.current_epoch)),
            ]
        )
        record.copy_(torch.where(first, here, record))

    def raise_if_non_finite(self) -> None:
        """Raise for a non-finite loss recorded by :meth:`check_finite` (one host sync).

        Raises:
            NonFiniteLossError: with the epoch, the step and what to try.
        """
        for stage, record in self._non_finite.items():
            value, step, epoch = record.tolist()
            if step >= 0:
                raise NonFiniteLossError(
                    self._non_finite_message(stage, value, int(epoch), int(step))
                )

    def _non_finite_message(
        self, stage: str, value: float, epoch: int | None, step: int | None
    ) -> str:
        where = f" at epoch {epoch}, global step {step}" if step is not None else ""
        return (
            f"{type(self).__name__}: {stage} loss is {value}{where}. Lower the learning rate "
            "(optimizer.init_args.lr), check the input normalisation, or enable gradient "
            "clipping (trainer.gradient_clip_val)."
        )

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        trainer = self._trainer
        if trainer is not None and self.global_step % max(1, trainer.log_every_n_steps) == 0:
            self.raise_if_non_finite()

    @override
    def on_train_epoch_end(self) -> None:
        self.raise_if_non_finite()

    @override
    def on_validation_epoch_start(self) -> None:
        self.raise_if_non_finite()

    # ------------------------------------------------------------------------- prediction
    @override
    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Per-sample outputs of a batch ``(x, y)`` or ``(x, y, index)`` (:meth:`predict_outputs`);
        ``index`` (the rows of the split, int64) passes through unchanged as ``"index"``."""
        x, _, index = unpack_batch(batch)
        outputs = self.predict_outputs(x)
        if index is not None:
            outputs["index"] = index
        return outputs

    def predict_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """What ``convae predict`` writes for inputs ``x``, each with a leading batch axis."""
        raise NotImplementedError(f"{type(self).__name__} defines no prediction outputs")

    # ------------------------------------------------------------------------- checkpoints
    def checkpoint_metadata(self) -> dict[str, Any]:
        """Self-description stored in checkpoints: kind, input shape, layer shapes and the
        encoder's ``activation``."""
        meta: dict[str, Any] = {"kind": self.checkpoint_kind}
        if hasattr(self, "specs"):
            meta["layers"] = [spec.signature() for spec in self.specs]
            meta["input_shape"] = list(self.input_shape)
        if hasattr(self, "activation"):
            # The encoder's nonlinearity: models taking these convolutions build the same.
            meta["activation"] = self.activation
        return meta

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_non_finite()  # never write weights a non-finite loss has broken
        checkpoint[CHECKPOINT_META_KEY] = self.checkpoint_metadata()


def read_checkpoint(
    path: str | Path, expected_kinds: Sequence[str], arg_name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a project checkpoint (the whole dict) and its metadata, checking what kind it is.

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
    return checkpoint, meta
