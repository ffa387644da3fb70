"""A trial is a real ``convae fit``: the same :class:`ConvaeCLI`, in process, in its own folder.

The trial's command line is the ``fit`` a user could type, plus ``--run_dir
runs/<study>/trial_<n>``; its W&B run is grouped by study (job type ``sweep``, the trial's
parameters as tags) through the CLI's ``wandb_init``. The objective is read from what the run
logged: ``<metric>_best`` (the CLI's best-so-far key, within the final depth of a stacked
autoencoder) or the last value of ``<metric>``.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback

from convae_lightning.cli import ConvaeCLI
from convae_lightning.runs import best_key
from convae_lightning.sweeps.runner import TrialContext, TrialResult
from convae_lightning.sweeps.space import fit_args, wandb_tags

__all__ = ["ObjectiveMissingError", "command_line", "fit_trial", "trial_wandb"]

#: W&B job type of sweep trials.
JOB_TYPE = "sweep"


class ObjectiveMissingError(ValueError):
    """The objective metric was never logged: every trial would fail the same way."""


def trial_wandb(study: str, number: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """W&B settings of a trial: grouped by study, job type ``sweep``, parameters as tags."""
    return {
        "group": study,
        "job_type": JOB_TYPE,
        "tags": wandb_tags(params),
        "name": f"{study}/trial_{number}",
    }


def fit_trial(context: TrialContext) -> TrialResult:
    """Run the trial as ``convae fit --run_dir runs/<study>/trial_<n> ...`` and read its
    objective from the run's logged metrics.

    Pruning (spec ``pruner``) reports the per-epoch metric to Optuna after every validation.

    Raises:
        optuna.TrialPruned: the pruner stopped the run early.
        ObjectiveMissingError: the run never logged the objective metric.
    """
    sweep, trial = context.sweep, context.trial
    spec = sweep.spec
    metric = spec.objective.metric
    callbacks: list[Callback] = []
    if spec.pruner.name != "none":
        from optuna_integration import PyTorchLightningPruningCallback

        callbacks.append(PyTorchLightningPruningCallback(trial, monitor=metric))
    args = [*fit_args(spec, context.params, sweep.extra_args), "--run_dir", str(context.run_dir)]
    trial.set_user_attr("fit_args", args)
    cli = ConvaeCLI(
        args=args,
        trainer_defaults={"callbacks": callbacks},
        wandb_init=trial_wandb(sweep.study_name, trial.number, context.params),
    )
    metrics = cli.trainer.callback_metrics
    if metric not in metrics:
        raise ObjectiveMissingError(
            f"objective.metric {metric!r} was never logged; logged keys: {sorted(metrics)}"
        )
    final = float(metrics[metric])
    # The CLI logs <metric>_best once the metric had a finite value: absent, there was none.
    best = float(metrics.get(best_key(metric), math.nan))
    value = best if spec.objective.value == "best" else final
    attrs = {
        "metric_final": final,
        "metric_best": best,
        "epochs": cli.trainer.current_epoch,
        "threads": torch.get_num_threads(),  # a worker's share of the cores (launcher)
    }
    return TrialResult(value=value, attrs=attrs)


def command_line(args: Sequence[str]) -> str:
    """A trial's command line as a user would type it (for logs and ``--dry-run``)."""
    return "convae " + shlex.join(args)
