"""Faults for CLI subprocess tests: a process that SIGKILLs itself at a chosen point.

Given to ``convae fit`` by class path (the test puts this folder on ``PYTHONPATH``): a
``--trainer.callbacks+=`` ``KillAt`` or a ``--trainer.plugins`` ``KillDuringSave``.
Nothing here catches or cleans up: the process dies as it would under ``kill -9``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from convae_lightning.checkpointing import AtomicCheckpointIO


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(Callback):
    """SIGKILL during training batch ``batch`` of ``epoch`` (``when: batch``), or right after a
    stacked autoencoder grew at the start of ``epoch``, before any step at the new depth
    (``when: growth``; list it after StackGrowth, whose hook grows first)."""

    def __init__(self, epoch: int, when: Literal["batch", "growth"] = "batch", batch: int = 0):
        self.epoch, self.when, self.batch = epoch, when, batch
        self._depth: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        batch_idx = args[-1]
        if self.when == "batch" and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            die()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        depth = getattr(pl_module, "num_active_units", None)
        if self.when == "growth" and trainer.current_epoch == self.epoch:
            assert depth != self._depth, "KillAt(when=growth) needs a StackGrowth growing here"
            die()
        self._depth = depth


class KillDuringSave(AtomicCheckpointIO):
    """SIGKILL on the ``nth`` write of checkpoint file ``file`` in this process: halfway through
    writing it (``when: mid_write``) or right after it is in place (``after_write``)."""

    def __init__(
        self,
        file: str = "last.ckpt",
        nth: int = 1,
        when: Literal["mid_write", "after_write"] = "mid_write",
    ) -> None:
        super().__init__()
        self.file, self.nth, self.when = file, nth, when
        self.count = 0
        self._armed = False

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None):
        self.count += Path(path).name == self.file
        self._armed = Path(path).name == self.file and self.count == self.nth
        super().save_checkpoint(checkpoint, path, storage_options)
        if self._armed and self.when == "after_write":
            die()

    def _write(self, path: Path, data: memoryview) -> None:
        if self._armed and self.when == "mid_write":
            with open(path, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
            die()
        super()._write(path, data)
