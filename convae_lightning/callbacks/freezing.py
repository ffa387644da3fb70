"""Freeze and unfreeze parameters by name, at fit start or at given epochs (thesis 4.3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from convae_lightning.models.base import match_parameters


class LayerFreezing(Callback):
    """Freezes parameters matching glob patterns of their names; weights and biases separately.

    A frozen parameter gets ``requires_grad=False``, is removed from every optimiser parameter
    group and loses its optimiser state, so it receives no update and holds no state. Unfreezing
    at an epoch adds it back as a new parameter group (as Lightning's ``BaseFinetuning`` does).

    Freezing happens in ``on_fit_start``, i.e. *after* the strategy wrapped the model: DDP then
    still tracks every parameter, so unfreezing later keeps gradients synchronised
    (Lightning#20340). Run DDP with ``strategy: ddp_find_unused_parameters_true`` so frozen
    parameters may go without gradients. On resume, the schedule up to the restored epoch is
    replayed before the optimiser state is loaded, so the parameter groups match the checkpoint.

    Why not Lightning's ``BaseFinetuning``: it freezes whole modules in ``setup`` (before the
    strategy wraps the model, which breaks unfreezing under DDP), only ever adds parameter groups
    (frozen parameters stay in the optimiser with their state), and tells parameters apart by
    value (``torch.equal``), not identity. We freeze weights and biases separately by name, at
    any epoch, and take frozen parameters out of the optimiser.

    Args:
        freeze: Patterns frozen at fit start, e.g. ``["encoder.*.weight"]`` or
            ``["encoder.0.conv.bias"]`` (names as in ``module.named_parameters()``).
        freeze_at_epoch: ``{epoch: patterns}`` frozen when that epoch starts.
        unfreeze_at_epoch: ``{epoch: patterns}`` unfrozen when that epoch starts.

    Raises:
        ValueError: if an epoch is negative. A pattern that matches no parameter is reported at
            fit start, listing the parameter names.
    """

    def __init__(
        self,
        freeze: Sequence[str] = (),
        freeze_at_epoch: Mapping[int, Sequence[str]] | None = None,
        unfreeze_at_epoch: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        self.freeze = list(freeze)
        self.freeze_at_epoch = {int(k): list(v) for k, v in (freeze_at_epoch or {}).items()}
        self.unfreeze_at_epoch = {int(k): list(v) for k, v in (unfreeze_at_epoch or {}).items()}
        for name, schedule in (
            ("freeze_at_epoch", self.freeze_at_epoch),
            ("unfreeze_at_epoch", self.unfreeze_at_epoch),
        ):
            bad = [epoch for epoch in schedule if epoch < 0]
            if bad:
                raise ValueError(f"{name}: epochs must be >= 0, got {bad}")
        self.frozen: set[str] = set()
        self.events: list[tuple[list[str], list[str]]] = []  # (frozen, thawed), in order
        self.applied_epoch = -1

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            freeze=self.freeze,
            freeze_at_epoch=self.freeze_at_epoch,
            unfreeze_at_epoch=self.unfreeze_at_epoch,
        )

    # ------------------------------------------------------------------ small static helpers
    @staticmethod
    def match(module: nn.Module, patterns: Iterable[str]) -> list[str]:
        """Names of the parameters matching any pattern; an unmatched pattern is an error."""
        return match_parameters(module, patterns, "LayerFreezing")

    @staticmethod
    def remove_from_optimizers(trainer: pl.Trainer, params: Iterable[nn.Parameter]) -> None:
        """Drop parameters (and their state) from every optimiser of the trainer."""
        drop = {id(p) for p in params}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in drop]
            for p in [p for p in optimizer.state if id(p) in drop]:
                del optimizer.state[p]
            optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]] or [
                _empty_group(optimizer)
            ]

    @staticmethod
    def add_to_optimizers(trainer: pl.Trainer, params: list[nn.Parameter]) -> None:
        """Add parameters as a new group of the first optimiser, with its first group's lr."""
        if not trainer.optimizers or not params:
            return
        optimizer = trainer.optimizers[0]
        present = {id(p) for g in optimizer.param_groups for p in g["params"]}
        params = [p for p in params if id(p) not in present]
        if params:
            lr = optimizer.param_groups[0].get("lr")
            optimizer.add_param_group({"params": params, **({"lr": lr} if lr else {})})

    # ------------------------------------------------------------------------------- hooks
    def _apply(
        self, trainer: pl.Trainer, module: nn.Module, freeze: list[str], thaw: list[str]
    ) -> None:
        params = dict(module.named_parameters())
        for name in freeze:
            params[name].requires_grad_(False)
        for name in thaw:
            params[name].requires_grad_(True)
        self.frozen.update(freeze)
        self.frozen.difference_update(thaw)
        self.remove_from_optimizers(trainer, [params[n] for n in freeze])
        self.add_to_optimizers(trainer, [params[n] for n in thaw])
        if freeze or thaw:
            self.events.append((freeze, thaw))

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resuming: Lightning restored this callback's state before the optimisers were built,
        # and loads the optimiser state right after this hook. Replaying the recorded changes on
        # the fresh optimiser rebuilds exactly the parameter groups that state was saved with.
        events = self.events if self.events else [(self.match(pl_module, self.freeze), [])]
        self.frozen, self.events = set(), []
        for freeze, thaw in events:
            self._apply(trainer, pl_module, list(freeze), list(thaw))

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch <= self.applied_epoch:
            return  # already applied before the checkpoint this run resumed from
        freeze = self.match(pl_module, self.freeze_at_epoch.get(epoch, []))
        thaw = self.match(pl_module, self.unfreeze_at_epoch.get(epoch, []))
        self._apply(trainer, pl_module, freeze, thaw)
        self.applied_epoch = epoch

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "frozen": sorted(self.frozen),
            "events": [(list(f), list(t)) for f, t in self.events],
            "applied_epoch": self.applied_epoch,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.frozen = set(state_dict.get("frozen", []))
        self.events = [(list(f), list(t)) for f, t in state_dict.get("events", [])]
        self.applied_epoch = state_dict.get("applied_epoch", -1)


def _empty_group(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    # Optimisers need at least one group; keep the defaults with no parameters.
    return {**optimizer.defaults, "params": []}


__all__ = ["LayerFreezing"]
