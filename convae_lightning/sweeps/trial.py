"""A trial is a real ``convae fit``: the same :class:`ConvaeCLI`, in process, in its own folder.

:class:`TrialCLI` is ``ConvaeCLI`` plus what a sweep needs of a run: its folder
(``runs/<study>/trial_<n>/``), its W&B run grouped by study (job type ``sweep``, the trial's
parameters as tags, the flattened config as the run config), and, for checking a spec, building
everything without fitting.
"""

from __future__ import annotations

import json
import math
import shlex
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from convae_lightning.cli import ConvaeCLI
from convae_lightning.runs import best_key, flatten_config
from convae_lightning.sweeps.runner import TrialContext, TrialResult
from convae_lightning.sweeps.space import fit_args, wandb_tags

__all__ = [
    "MetricTrace",
    "ObjectiveMissingError",
    "TrialCLI",
    "command_line",
    "fit_trial",
    "trial_wandb",
]

#: W&B job type of sweep trials.
JOB_TYPE = "sweep"


class ObjectiveMissingError(ValueError):
    """The objective metric was never logged: every trial would fail the same way."""


class MetricTrace(Callback):
    """Records a metric after every validation epoch (sanity checks excluded), with the depth
    of a stacked autoencoder (its ``num_active_units``) at that epoch.

    Args:
        monitor: The logged key to record (``val/euclid_balanced``).
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.values: list[float] = []
        self.depths: list[int | None] = []
        self.logged: list[str] = []

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.logged = sorted(trainer.callback_metrics)
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self.values.append(float(value))
            self.depths.append(getattr(pl_module, "num_active_units", None))

    def best(self, mode: str) -> float:
        """Best value at the final depth: a shallower stack's errors are not comparable."""
        final = [v for v, d in zip(self.values, self.depths, strict=True) if d == self.depths[-1]]
        return min(final) if mode == "min" else max(final)


class TrialCLI(ConvaeCLI):
    """``ConvaeCLI`` for one sweep trial (or, with ``fit=False``, for checking its config).

    Args:
        run_dir: The trial's run folder, ``runs/<study>/trial_<n>`` (``None``: the CLI's own).
        wandb: Extra ``wandb.init`` settings (``group``, ``job_type``, ``tags``, ``name``); the
            flattened resolved config is added as ``config``.
        fit: ``False`` parses and instantiates model, data and trainer, and stops there.
        **kwargs: ``ConvaeCLI``/``LightningCLI`` arguments (``args``, ``trainer_defaults``).
    """

    def __init__(
        self,
        *args: Any,
        run_dir: str | Path | None = None,
        wandb: Mapping[str, Any] | None = None,
        fit: bool = True,
        **kwargs: Any,
    ) -> None:
        self.sweep_run_dir = Path(run_dir) if run_dir is not None else None
        self.sweep_wandb = dict(wandb or {})
        self.sweep_fit = fit
        super().__init__(*args, **kwargs)

    @override
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        config = self.config.get(self.subcommand, self.config)
        loggers = config["trainer"].get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            class_path = str(getattr(logger, "class_path", ""))
            if init_args is None:
                continue
            if class_path.endswith("CSVLogger") and self.sweep_run_dir is not None:
                # The run folder runs/<study>/trial_<n> as CSVLogger's save_dir/name/version;
                # absolute, because the W&B run goes into the same folder and wandb's service
                # resolves relative folders against its own working directory, which is
                # where the process first started a W&B run.
                init_args["save_dir"] = str(self.sweep_run_dir.parent.parent.resolve())
                init_args["name"] = self.sweep_run_dir.parent.name
                init_args["version"] = self.sweep_run_dir.name
            elif class_path.endswith("WandbLogger") and self.sweep_wandb:
                for key, value in self.sweep_wandb.items():
                    init_args[key] = value
                flat = flatten_config(config.clone().as_dict())
                init_args["config"] = {key: _jsonable(value) for key, value in flat.items()}

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        if self.sweep_fit:
            super()._run_subcommand(subcommand)


def trial_wandb(study: str, number: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """W&B settings of a trial: grouped by study, job type ``sweep``, parameters as tags."""
    return {
        "group": study,
        "job_type": JOB_TYPE,
        "tags": wandb_tags(params),
        "name": f"{study}/trial_{number}",
    }


def fit_trial(context: TrialContext) -> TrialResult:
    """Run the trial as ``convae fit`` and read its objective.

    The objective is the final value of ``<metric>_best`` when the run logged it, else the best
    per-epoch value seen (both within the final depth for stacked autoencoders); ``last``
    objectives take the final per-epoch value. Pruning (spec ``pruner``) reports the per-epoch
    metric to Optuna after every validation.

    Raises:
        optuna.TrialPruned: the pruner stopped the run early.
        ObjectiveMissingError: the run never logged the objective metric.
    """
    sweep, trial = context.sweep, context.trial
    spec = sweep.spec
    metric = spec.objective.metric
    trace = MetricTrace(metric)
    callbacks: list[Callback] = [trace]
    if spec.pruner.name != "none":
        from optuna_integration import PyTorchLightningPruningCallback

        callbacks.append(PyTorchLightningPruningCallback(trial, monitor=metric))
    args = fit_args(spec, context.params, sweep.extra_args)
    trial.set_user_attr("fit_args", args)
    with warnings.catch_warnings():
        # The sweep's own command line is not the trial's: LightningCLI's warning about both
        # being given does not apply.
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = TrialCLI(
            args=args,
            run_dir=context.run_dir,
            wandb=trial_wandb(sweep.study_name, trial.number, context.params),
            trainer_defaults={"callbacks": callbacks},
        )
    if not trace.values:
        raise ObjectiveMissingError(
            f"objective.metric {metric!r} was never logged; logged keys: {trace.logged}"
        )
    final = trace.values[-1]
    best = _logged(cli, best_key(metric))
    if best is None:
        best = trace.best(spec.objective.mode)
    value = best if spec.objective.value == "best" else final
    attrs = {"metric_final": final, "metric_best": best, "epochs": cli.trainer.current_epoch}
    return TrialResult(value=value, attrs=attrs)


def _jsonable(value: Any) -> Any:
    """Config values W&B can store: config file paths (jsonargparse ``Path``) as strings."""
    try:
        json.dumps(value)
    except TypeError:
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    return value


def _logged(cli: ConvaeCLI, key: str) -> float | None:
    value = cli.trainer.callback_metrics.get(key)
    if value is None:
        return None
    number = float(value)
    return number if not math.isnan(number) else None


def command_line(args: Sequence[str]) -> str:
    """A trial's command line as a user would type it (for logs and ``--dry-run``)."""
    return "convae " + shlex.join(args)
