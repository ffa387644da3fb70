"""Grow a stacked autoencoder one unit at a time, each trained until it converges (thesis 4.3)."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

log = logging.getLogger(__name__)


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


class StackGrowth(Callback):
    """Drives a :class:`~convae_lightning.models.StackedAutoencoder` through its units.

    The active units train until the monitored metric stops improving (``patience`` checks
    without an improvement larger than ``min_delta``) or ``max_epochs_per_unit`` epochs have
    passed; then the next unit is inserted between the trained encoders and decoders
    (``module.grow()``): under ``strong`` stacking the trained units are fixed, under ``weak``
    they keep training. The run stops when the last unit has converged.

    Freezing under strong stacking happens after the strategy wrapped the model; under DDP use
    ``strategy: ddp_find_unused_parameters_true`` (inactive and fixed units get no gradients;
    Lightning#20340). Growth happens at the end of a validation run, before the epoch's
    checkpoint is written, so a checkpoint taken at any point restores the right depth (the
    module recreates it in ``on_load_checkpoint``) and this callback's counters, and a resumed run
    continues exactly as the uninterrupted one would.

    Args:
        monitor: Metric deciding convergence, e.g. ``val/euclid_balanced``.
        mode: ``min`` or ``max``.
        patience: Checks without improvement before a unit counts as converged (thesis: 5).
        min_delta: Smallest change that counts as an improvement.
        max_epochs_per_unit: Cap on the epochs spent on one unit (``None``: no cap).
        reset_optimizer: Start the optimiser (and LR schedulers) afresh for every new unit, as a
            new training stage of the thesis does; ``False`` keeps the accumulated state.
        check_on_train_epoch_end: Decide after the training epoch instead of after validation
            (for ``train/...`` metrics or runs without validation).

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
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if max_epochs_per_unit is not None and max_epochs_per_unit <= 0:
            raise ValueError(f"max_epochs_per_unit must be positive, got {max_epochs_per_unit!r}")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.max_epochs_per_unit = max_epochs_per_unit
        self.reset_optimizer = reset_optimizer
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self._reset_counters()
        self.history: list[dict[str, Any]] = []  # one entry per finished unit

    def _reset_counters(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.epochs_in_unit = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    # ------------------------------------------------------------------------------ checks
    @staticmethod
    def check_module(pl_module: pl.LightningModule) -> Any:
        """The module as a stacked autoencoder, or a clear error (the CLI checks before a run)."""
        if not all(hasattr(pl_module, a) for a in ("grow", "num_active_units", "num_units")):
            raise MisconfigurationException(
                f"StackGrowth needs a StackedAutoencoder (grow(), num_active_units, num_units); "
                f"got {type(pl_module).__name__}. Remove the callback or change model.class_path."
            )
        return pl_module

    def _improved(self, current: float) -> bool:
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check_module(pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.check_on_train_epoch_end and not trainer.sanity_checking:
            self._check(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.check_on_train_epoch_end:
            self._check(trainer, pl_module)

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = self.check_module(pl_module)
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise MisconfigurationException(
                f"StackGrowth could not find the monitored metric {self.monitor!r}; available: "
                f"{sorted(metrics)}. Set StackGrowth.monitor to one of them."
            )
        current = float(metrics[self.monitor])
        if not math.isfinite(current):
            raise FloatingPointError(f"StackGrowth: {self.monitor} is {current}; stopping.")
        self.epochs_in_unit += 1
        if self._improved(current):
            self.best, self.wait = current, 0
        else:
            self.wait += 1
        done, reason = unit_converged(
            self.epochs_in_unit, self.wait, self.patience, self.max_epochs_per_unit
        )
        if not done:
            return
        depth = module.num_active_units
        self.history.append(
            {"units": depth, "best": self.best, "epochs": self.epochs_in_unit, "reason": reason}
        )
        if depth >= module.num_units:
            log.info("StackGrowth: last unit (%d) converged: %s; stopping.", depth, reason)
            trainer.should_stop = True
            return
        module.grow()
        log.info(
            "StackGrowth: unit %d converged (%s); training %d units.", depth, reason, depth + 1
        )
        self._reset_counters()
        if self.reset_optimizer:
            trainer.strategy.setup_optimizers(trainer)
        _sync_if_needed(module)

    # ------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "wait": self.wait,
            "epochs_in_unit": self.epochs_in_unit,
            "history": list(self.history),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best", self.best)
        self.wait = state_dict.get("wait", 0)
        self.epochs_in_unit = state_dict.get("epochs_in_unit", 0)
        self.history = list(state_dict.get("history", []))


@torch.no_grad()
def _sync_if_needed(module: Any) -> None:
    # A new unit's transpose_sync decoder starts as the transpose of its (new) encoder.
    sync = getattr(module, "sync_transposes", None)
    if sync is not None:
        sync()


__all__ = ["StackGrowth", "unit_converged"]
