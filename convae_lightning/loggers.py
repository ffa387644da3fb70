"""Loggers: Weights & Biases offline by default, without leaking settings between runs."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override


class OfflineWandbLogger(WandbLogger):
    """A ``WandbLogger`` that runs offline unless told otherwise, and leaves the process clean.

    Lightning's ``WandbLogger(offline=True)`` sets ``WANDB_MODE`` for the whole process, so a
    later run in the same process (a sweep's next trial) silently inherits it. This logger passes
    the mode to ``wandb.init`` instead and finishes its run in ``finalize``, so every run starts
    fresh. Offline runs land in ``<save_dir>/wandb/offline-run-*`` and can be uploaded later with
    ``wandb sync``.

    Args:
        offline: ``True`` (default) keeps everything local; ``False`` logs online (needs
            ``wandb login``). ``None`` follows ``$WANDB_MODE`` (``online`` switches it on).
        save_dir: Folder of the W&B files (the CLI sets it to the run directory).
        project: W&B project.
        name: Run name (default: W&B's).
        **kwargs: Passed to ``WandbLogger`` / ``wandb.init``.
    """

    def __init__(
        self,
        offline: bool | None = True,
        save_dir: str = "runs",
        project: str = "convae-lightning",
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") not in ("online", "run")
        # jsonargparse fills every wandb.init keyword with None; None must not override our mode.
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        kwargs.setdefault("mode", "offline" if offline else "online")
        super().__init__(save_dir=save_dir, project=project, name=name, offline=False, **kwargs)
        self.is_offline = offline

    def set_save_dir(self, save_dir: str) -> None:
        """Move the run's files (before the run starts)."""
        self._save_dir = save_dir
        self._wandb_init["dir"] = save_dir

    @property
    @override
    def experiment(self) -> Any:
        if self._experiment is None and self._save_dir:
            os.makedirs(self._save_dir, exist_ok=True)  # wandb falls back to /tmp otherwise
        return super().experiment

    @override
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


__all__ = ["OfflineWandbLogger"]
