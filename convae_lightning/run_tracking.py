"""Callbacks the CLI adds to every run: its state on disk, the best value so far, and what a
resumed run needs to continue exactly where the checkpoint left off."""

from __future__ import annotations

import math
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from convae_lightning.loggers import RunMetricsWriter
from convae_lightning.runs import best_key, write_status

__all__ = ["BestMetricLogger", "ResumeState", "RunStatusWriter", "one_line"]


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class RunStatusWriter(Callback):
    """Keeps ``status.json`` of the run folder current: ``running`` (pid, host, start time,
    command) while the trainer runs, then ``finished``, ``failed`` (with the error's first line)
    or ``interrupted`` (Ctrl-C), each with the wall time. A run killed outright stays
    ``running``; :class:`~convae_lightning.runs.RunRecord` reads it as ``interrupted`` once its
    process is gone.

    Args:
        run_dir: The run folder.
        resumed_from: The checkpoint a resumed run continues from (recorded).
    """

    def __init__(self, run_dir: str | os.PathLike, resumed_from: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.resumed_from = resumed_from
        self._started = time.time()

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._started = time.time()
        if trainer.is_global_zero:
            write_status(
                self.run_dir,
                "running",
                stage=stage,
                pid=os.getpid(),
                host=socket.gethostname(),
                started=self._started,
                command=list(sys.argv),
                resumed_from=self.resumed_from,
                error=None,
                wall_time_s=None,
            )

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            write_status(self.run_dir, "finished", wall_time_s=time.time() - self._started)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not trainer.is_global_zero:
            return
        interrupted = isinstance(exception, KeyboardInterrupt)
        write_status(
            self.run_dir,
            "interrupted" if interrupted else "failed",
            error=None if interrupted else f"{type(exception).__name__}: {one_line(exception)}",
            wall_time_s=time.time() - self._started,
        )


class BestMetricLogger(Callback):
    """Logs ``<monitor>_best``, the best value of the monitored metric so far, after every
    validation epoch: sweeps and reports optimise the best epoch, not the last.

    For a stacked autoencoder the best is taken within the current depth (it restarts when
    ``num_active_units`` changes: the error of a deeper stack is not comparable).

    Args:
        monitor: The metric, e.g. ``val/euclid_balanced`` (the always-on checkpoint's).
        mode: ``min`` or ``max``.
    """

    def __init__(self, monitor: str, mode: Literal["min", "max"] = "min") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.depth: int | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        current = float(value)
        depth = getattr(pl_module, "num_active_units", None)
        if depth != self.depth:
            self.best, self.depth = None, depth
        if math.isfinite(current) and (self.best is None or self._better(current, self.best)):
            self.best = current
        if self.best is not None:
            pl_module.log(best_key(self.monitor), self.best, on_step=False, on_epoch=True)

    def _better(self, current: float, best: float) -> bool:
        return current < best if self.mode == "min" else current > best

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "depth": self.depth}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.depth = state_dict.get("depth")


class ResumeState(Callback):
    """What Lightning's checkpoints leave out for a resumed run to equal the uninterrupted one:
    the random number generators (dropout) and the rows of ``metrics.csv`` up to the checkpoint.

    At each checkpoint the CSV writer is flushed and its row count stored, with the epoch's
    training metrics that Lightning logs just *after* the end-of-epoch checkpoint; on resuming,
    rows logged after the checkpoint (by the killed process) are dropped and that row is put
    back, so none is missing or appears twice. The generators are stored as they are at the
    checkpoint (the end of a training epoch) and restored when the next training epoch starts,
    where the uninterrupted run stood.

    Args:
        writer: The run's CSV writer (``None`` on DDP ranks other than 0, or without CSV).
    """

    def __init__(self, writer: RunMetricsWriter | None = None) -> None:
        self.writer = writer
        self._trainer: pl.Trainer | None = None
        self._pending_rng: dict[str, Any] | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": _rng_states()}
        if self.writer is not None:
            self.writer.save()
            state["metrics_rows"] = self.writer.rows_written
            state["pending_rows"] = _epoch_row_to_come(self._trainer)
        return state

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None or trainer.state.fn != "fit":
            return  # evaluating a checkpoint changes nothing of the run
        self._pending_rng = state.get("rng")
        rows = state.get("metrics_rows")
        if self.writer is not None and rows is not None:
            self.writer.truncate(int(rows), state.get("pending_rows") or [])

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_rng is not None:
            _set_rng_states(self._pending_rng)
            self._pending_rng = None


def _epoch_row_to_come(trainer: pl.Trainer | None) -> list[dict[str, float]]:
    """The training-epoch metrics Lightning is about to log, when a checkpoint is written at
    the end of a training epoch (``on_train_epoch_end`` runs before they are logged).

    Built as ``LoggerConnector.log_metrics`` builds them (Lightning 2.6: the epoch's aggregated
    ``log`` metrics, ``epoch``, and the step of the epoch's last batch).
    """
    if trainer is None or trainer.state.fn != "fit":
        return []
    progress = trainer.fit_loop.epoch_progress.current
    if progress.processed != progress.completed + 1:
        return []  # not between the end of an epoch and its logging
    try:
        metrics = trainer._logger_connector.metrics["log"]
        step = trainer.fit_loop.epoch_loop._batches_that_stepped - 1
    except (AttributeError, KeyError, AssertionError):
        return []
    if not metrics:
        return []
    row = {key: float(value) for key, value in metrics.items()}
    row.setdefault("epoch", trainer.current_epoch)
    return [{**row, "step": step}]


def _rng_states() -> dict[str, Any]:
    # Tensors and plain tuples only: checkpoints must stay loadable with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
