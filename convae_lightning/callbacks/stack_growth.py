"""Grow a stacked autoencoder one unit at a time, each trained until it converges (thesis 4.3),
keeping every depth's best epoch as a result of its own (Table 4 cells, Table 5 inputs)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from typing_extensions import override

from convae_lightning.callbacks.checks import require_module
from convae_lightning.models.base import NonFiniteLossError
from convae_lightning.runs import unit_stage

__all__ = ["StackGrowth", "unit_checkpoint_name", "unit_converged"]


def unit_converged(
    epochs_in_unit: int,
    wait: int,
    patience: int,
    max_epochs_per_unit: int | None,
) -> tuple[bool, str]:
    """Whether the outermost unit is done, and why (EarlyStopping's rule, per unit)."""
    if max_epochs_per_unit is not None and epochs_in_unit >= max_epochs_per_unit:
        return True, f"reached max_epochs_per_unit={max_epochs_per_unit}"
    if wait >= patience:
        return True, f"no improvement for {wait} epochs (patience={patience})"
    return False, ""


def unit_checkpoint_name(units: int) -> str:
    """``unit{k}.ckpt``: the best epoch of a stacked run at depth ``k``."""
    return f"unit{units}.ckpt"


class StackGrowth(EarlyStopping):
    """Drives a :class:`~convae_lightning.models.StackedAutoencoder` through its units.

    The active units train until the monitored metric stops improving (``patience`` checks
    without an improvement larger than ``min_delta``: EarlyStopping's bookkeeping, restarted for
    every unit) or ``max_epochs_per_unit`` epochs have passed; then the next unit is inserted
    between the trained encoders and decoders (``module.grow()``) at the start of the next epoch:
    under ``strong`` stacking the trained units are fixed, under ``weak`` they keep training. The
    run stops when the last unit has converged. A line is printed whenever a unit is added.

    Every depth is a result of its own: whenever the metric reaches a new best *within* the
    current depth, the run is saved to ``checkpoints/unit{k}.ckpt`` (k = active units; it loads
    at depth k), and when the unit converges (or training ends) that epoch's validation metrics
    are logged again as ``val_unit{k}/...`` (``val_unit2/euclid_balanced``), with
    ``val_unit{k}/epochs`` (epochs spent at that depth, the thesis's n) and
    ``val_unit{k}/best_epoch``.

    Growth waits for the next epoch so that checkpoints written at the end of a convergence epoch
    (``last.ckpt``, a best by ModelCheckpoint) hold the depth their scores were measured at; a
    run resumed from one grows as the uninterrupted run would (the pending growth is part of this
    callback's state). A ModelCheckpoint monitoring the same metric still compares scores across
    depths: ``unit{k}.ckpt`` are the per-depth bests.

    Freezing under strong stacking happens after the strategy wrapped the model; under DDP use
    ``strategy: ddp_find_unused_parameters_true`` (inactive and fixed units get no gradients;
    Lightning#20340).

    Args:
        monitor: Metric deciding convergence, e.g. ``val/euclid_balanced``.
        mode: ``min`` or ``max``.
        patience: Checks without improvement before a unit counts as converged (thesis: 5).
        min_delta: Smallest change that counts as an improvement (for convergence; the unit
            checkpoint follows every new best).
        max_epochs_per_unit: Cap on the epochs spent on one unit (``None``: no cap).
        reset_optimizer: Start the optimiser (and LR schedulers) afresh for every new unit, as a
            new training stage of the thesis does; ``False`` keeps the accumulated state.
        check_on_train_epoch_end: Decide after the training epoch instead of after validation
            (for ``train/...`` metrics or runs without validation).
        dirpath: Folder of the ``unit{k}.ckpt`` files; default: the checkpoint callback's folder
            (``runs/<name>/version_N/checkpoints``), else ``<log_dir>/checkpoints``.

    Raises:
        ValueError: for a bad ``mode``, negative ``patience``/``min_delta`` or a non-positive
            ``max_epochs_per_unit``.
    """

    def __init__(
        self,
        monitor: str = "val/euclid_balanced",
        mode: Literal["min", "max"] = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        max_epochs_per_unit: int | None = None,
        reset_optimizer: bool = True,
        check_on_train_epoch_end: bool = False,
        dirpath: str | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if max_epochs_per_unit is not None and max_epochs_per_unit <= 0:
            raise ValueError(f"max_epochs_per_unit must be positive, got {max_epochs_per_unit!r}")
        super().__init__(
            monitor=monitor,
            min_delta=min_delta,
            patience=patience,
            mode=mode,
            check_on_train_epoch_end=check_on_train_epoch_end,
        )
        self.max_epochs_per_unit = max_epochs_per_unit
        self.reset_optimizer = reset_optimizer
        self.dirpath = dirpath
        self.grow_pending = False
        self.history: list[dict[str, Any]] = []  # one entry per finished unit
        self._start_unit()

    def _start_unit(self) -> None:
        self.wait_count = 0
        self.best_score = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        self.epochs_in_unit = 0
        self.unit_best: float | None = None  # best value within the depth (strictly better)
        self.unit_best_epoch = -1
        self.unit_best_metrics: dict[str, float] = {}

    @staticmethod
    def check_module(pl_module: pl.LightningModule) -> None:
        """Fail early on a module that cannot grow."""
        require_module(
            "StackGrowth",
            pl_module,
            ["grow", "num_active_units", "num_units"],
            "Use a StackedAutoencoder, or remove the callback.",
        )

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check_module(pl_module)
        super().setup(trainer, pl_module, stage)

    @override
    def _validate_condition_metric(self, logs: dict[str, Tensor]) -> bool:
        if self.monitor not in logs:
            raise MisconfigurationException(
                f"StackGrowth could not find the monitored metric {self.monitor!r}; available: "
                f"{sorted(logs)}. Set StackGrowth.monitor to one of them."
            )
        return True

    # ------------------------------------------------------------------------- decisions
    @override
    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        logs = trainer.callback_metrics
        if trainer.fast_dev_run or not self._validate_condition_metric(logs):
            return
        current = logs[self.monitor].squeeze()
        if not torch.isfinite(current):
            raise NonFiniteLossError(
                f"StackGrowth: {self.monitor} is {float(current)} at epoch "
                f"{trainer.current_epoch}; lower the learning rate or check the inputs."
            )
        self.epochs_in_unit += 1
        self._evaluate_stopping_criteria(current)  # EarlyStopping's wait_count and best_score
        improved = self.unit_best is None or bool(self.monitor_op(current, self.unit_best))
        if trainer.strategy.reduce_boolean_decision(improved):
            self._save_unit_best(trainer, float(current), logs)
        done, reason = unit_converged(
            self.epochs_in_unit, self.wait_count, self.patience, self.max_epochs_per_unit
        )
        if trainer.strategy.reduce_boolean_decision(done, all=False):
            self._finish_unit(trainer, reason)

    def _save_unit_best(self, trainer: pl.Trainer, value: float, logs: dict[str, Tensor]) -> None:
        self.unit_best, self.unit_best_epoch = value, trainer.current_epoch
        self.unit_best_metrics = {k: float(v) for k, v in logs.items() if k.startswith("val/")}
        depth = trainer.lightning_module.num_active_units
        trainer.save_checkpoint(self._unit_dir(trainer) / unit_checkpoint_name(depth))

    def _finish_unit(self, trainer: pl.Trainer, reason: str) -> None:
        depth = trainer.lightning_module.num_active_units
        self.history.append(
            {
                "units": depth,
                "best": self.unit_best,
                "best_epoch": self.unit_best_epoch,
                "epochs": self.epochs_in_unit,
                "reason": reason,
            }
        )
        self._log_unit_results(trainer, depth)
        if depth >= trainer.lightning_module.num_units:
            rank_zero_info(f"StackGrowth: the last unit ({depth}) converged ({reason}); stopping.")
            trainer.should_stop = True
        else:
            self.grow_pending = True
        self._start_unit()

    def _log_unit_results(self, trainer: pl.Trainer, depth: int, epoch: int | None = None) -> None:
        """Log the depth's best-epoch results, in a row of ``epoch`` (default: the current one)."""
        stage = unit_stage("val", depth)
        metrics = {f"{stage}/{k.split('/', 1)[1]}": v for k, v in self.unit_best_metrics.items()}
        metrics[f"{stage}/epochs"] = float(self.epochs_in_unit)
        metrics[f"{stage}/best_epoch"] = float(self.unit_best_epoch)
        # As Lightning's own rows carry it.
        metrics["epoch"] = trainer.current_epoch if epoch is None else epoch  # an int, as there
        for logger in trainer.loggers:  # after validation, where LightningModule.log is closed
            logger.log_metrics(metrics, step=trainer.global_step)

    def _unit_dir(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "dirpath", None):
            return Path(checkpoint.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"

    # ------------------------------------------------------------------------------ hooks
    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.grow_pending:
            return
        self.grow_pending = False
        depth = pl_module.grow()
        finished = self.history[-1]
        rank_zero_info(
            f"StackGrowth: unit {depth - 1} converged after {finished['epochs']} epochs "
            f"({finished['reason']}; best {self.monitor} = {finished['best']:.4g} at epoch "
            f"{finished['best_epoch']}, {unit_checkpoint_name(depth - 1)}); "
            f"now training {depth} units"
        )
        if self.reset_optimizer:
            trainer.strategy.setup_optimizers(trainer)
        # A new unit's transpose_sync decoder starts as the transpose of its (new) encoder.
        if hasattr(pl_module, "sync_transposes"):
            pl_module.sync_transposes()

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Stopped (max_epochs) before the current unit converged: its best so far is its result.
        if self.unit_best is not None:
            # The loop has counted the last epoch as done: its row is the last trained epoch's,
            # not one more (which would read as an extra epoch trained in metrics.csv).
            last = max(trainer.current_epoch - 1, self.unit_best_epoch)
            self._log_unit_results(trainer, pl_module.num_active_units, last)

    # ------------------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "epochs_in_unit": self.epochs_in_unit,
            "grow_pending": self.grow_pending,
            "unit_best": self.unit_best,
            "unit_best_epoch": self.unit_best_epoch,
            "unit_best_metrics": dict(self.unit_best_metrics),
            "history": list(self.history),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        # Written before StackGrowth built on EarlyStopping: "best" and "wait".
        state.setdefault("wait_count", state.get("wait", 0))
        state.setdefault("best_score", torch.tensor(state.get("best", float(self.best_score))))
        state.setdefault("stopped_epoch", 0)
        state.setdefault("patience", self.patience)
        super().load_state_dict(state)
        self.epochs_in_unit = state.get("epochs_in_unit", 0)
        self.grow_pending = state.get("grow_pending", False)
        self.unit_best = state.get("unit_best")
        self.unit_best_epoch = state.get("unit_best_epoch", -1)
        self.unit_best_metrics = dict(state.get("unit_best_metrics", {}))
        self.history = list(state.get("history", []))
