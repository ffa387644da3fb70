"""What a run prints: the run's own version in the progress bar, a model summary without the
meaningless "FLOPs: 0", and none of the known noise of dependencies."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)
from typing_extensions import override

__all__ = ["QuietModelSummary", "RunProgressBar", "quiet_known_noise", "run_folder"]

#: Warnings of dependencies that say nothing a user can act on (message regexes).
KNOWN_WARNINGS: tuple[str, ...] = (
    # torch >= 2.10 deprecates LeafSpec; Lightning 2.6's _pytree still uses it.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # The DataModule picks 0 workers on CPU on purpose (batches are single memmap reads).
    r".*does not have many workers which may be a bottleneck",
    # The CLI places every run in its own folder; a resumed run writes into its folder again.
    r"Checkpoint directory .* exists and is not empty",
    # Lightning 2.6's LightningCLI calls jsonargparse APIs deprecated in jsonargparse 4.49.
    r"\s*.* was deprecated in v4\.\d+\.\d+ and will be removed in v5",
)

#: Lines Lightning logs that advertise its cloud products, or report the CLI's own choices.
_ADVERTS = ("💡 Tip:", "Trainer already configured with model summary callbacks")


class _NoAdverts(logging.Filter):
    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ADVERTS)


def quiet_known_noise() -> None:
    """Filter the known warnings and Lightning's advert lines (idempotent)."""
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in logger.filters):
            logger.addFilter(_NoAdverts())


class RunProgressBar(RichProgressBar):
    """Rich progress bar whose ``v_num`` is the run folder's version (``version_3`` -> 3).

    Lightning joins the versions of all loggers, so with W&B beside CSV the bar showed the end
    of the W&B run id instead.
    """

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        version = _run_version(run_folder(trainer))
        return {"v_num": version, **items} if version is not None else items


def run_folder(trainer: pl.Trainer) -> str | None:
    """The run folder as ``trainer.log_dir`` gives it, without its broadcast: this runs on
    rank 0 only (the progress bar, the prediction writer), and a collective there deadlocks DDP.
    """
    if trainer.loggers:
        return trainer.loggers[0].log_dir
    return trainer.default_root_dir


def _run_version(log_dir: str | None) -> str | None:
    """``"3"`` for ``.../version_3``, the folder name otherwise (``trial_5``)."""
    if not log_dir:
        return None
    name = os.path.basename(os.path.normpath(log_dir))
    head, _, tail = name.rpartition("_")
    return tail if head == "version" and tail.isdigit() else name


class QuietModelSummary(RichModelSummary):
    """``RichModelSummary`` without the FLOPs column and total when nothing was counted (FLOPs
    are only counted for a module with an ``example_input_array``; otherwise all read 0)."""

    @staticmethod
    @override
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            numeric = name in ("Params", "Params per Device", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if numeric else "left")
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        grid = Table.grid(expand=True)
        grid.add_column()
        frozen = int(total_parameters - trainable_parameters)
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(frozen)),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", total_training_modes["train"]),
            ("Modules in eval mode", total_training_modes["eval"]),
        ):  # fmt: skip
            grid.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(grid)
