"""From a spec to runs: conditions, their stable ids, and each trial's ``fit`` command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from convae_lightning.sweeps.spec import (
    CONFIG_KEY,
    SEED_KEY,
    SweepSpec,
    TrialReference,
    format_value,
)

__all__ = [
    "Resolver",
    "Run",
    "cli_text",
    "condition_id",
    "count_runs",
    "fit_arg_parts",
    "fit_args",
    "grid_conditions",
    "grid_runs",
    "matching_conditions",
    "probe_conditions",
    "suggest",
    "wandb_tags",
]

#: W&B refuses longer tags.
_MAX_TAG = 64

#: Turns a trial reference into the path a trial of a seed gets (``reference.resolve``).
Resolver = Callable[[TrialReference, int], str]


def resolve_in_storage(reference: TrialReference, seed: int) -> str:
    """The default :data:`Resolver`: the referred trial's file, looked up now."""
    from convae_lightning.sweeps.reference import resolve  # reads other studies' storages

    return resolve(reference, seed)


def describe_reference(reference: TrialReference, seed: int) -> str:
    """A :data:`Resolver` for plans and messages: what would be looked up."""
    return f"<{reference.describe(seed)}>"


@dataclass(frozen=True)
class Run:
    """One planned run: a condition (the non-seed parameters) and a seed."""

    params: Mapping[str, Any]
    seed: int

    @property
    def condition(self) -> str:
        return condition_id(self.params)

    @property
    def trial_params(self) -> dict[str, Any]:
        """Optuna parameters of the trial: the condition's and ``seed_everything``."""
        return {**self.params, SEED_KEY: self.seed}

    @property
    def key(self) -> tuple[str, int]:
        return self.condition, self.seed


def condition_id(params: Mapping[str, Any]) -> str:
    """``config=regular,model.init_args.unpool=switch``: the non-seed parameters, in order."""
    return ",".join(f"{k}={format_value(v)}" for k, v in params.items() if k != SEED_KEY)


def grid_conditions(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the space's values, skipping parameters whose ``when`` fails."""
    conditions: list[dict[str, Any]] = [{}]
    for param in spec.space:
        grown = []
        for params in conditions:
            if not param.active(params):
                grown.append(params)
                continue
            grown.extend({**params, param.key: value} for value in param.grid_values())
        conditions = grown
    return conditions


def matching_conditions(spec: SweepSpec, where: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid conditions whose parameters include every ``where`` value (a reference's)."""
    return [c for c in grid_conditions(spec) if all(c.get(k) == v for k, v in where.items())]


def grid_runs(spec: SweepSpec) -> list[Run]:
    """Every (condition, seed) of a grid, seeds outermost: a partial sweep has whole passes."""
    conditions = grid_conditions(spec)
    return [Run(params, seed) for seed in spec.seeds for params in conditions]


def probe_conditions(spec: SweepSpec) -> list[dict[str, Any]]:
    """Conditions that together try every value a sampled sweep can reach at its extremes.

    A grid sweep is checked run by run; a TPE/random sweep is checked with the first value of
    every parameter, then each parameter's every choice (or both bounds) in turn.
    """
    if spec.is_grid:
        return grid_conditions(spec)
    base = _first_values(spec, {})
    probes = [base]
    for param in spec.space:
        for value in param.extremes():
            probe = _first_values(spec, {param.key: value})
            if param.key in probe and probe not in probes:
                probes.append(probe)
    return probes


def _first_values(spec: SweepSpec, forced: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for param in spec.space:
        if param.active(params):
            params[param.key] = forced.get(param.key, param.extremes()[0])
    return params


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Ask for the trial's parameters in space order (``when`` sees the earlier ones).

    Enqueued trials (grid runs, repeats, retries) get their fixed values back from Optuna.
    """
    params: dict[str, Any] = {}
    for param in spec.space:
        if param.active(params):
            params[param.key] = param.suggest(trial)
    params[SEED_KEY] = trial.suggest_categorical(SEED_KEY, spec.seeds)
    return params


def cli_text(value: Any) -> str:
    """A value as the CLI reads it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def fit_args(
    spec: SweepSpec,
    params: Mapping[str, Any],
    extra: Sequence[str] = (),
    resolver: Resolver = resolve_in_storage,
) -> list[str]:
    """The ``convae fit`` arguments of a trial (without its run folder).

    Raises:
        ReferenceMissingError: a trial reference of the parameters cannot be resolved.
    """
    parts = fit_arg_parts(spec, params, extra, resolver)
    return ["fit", *(arg for _, part in parts for arg in part)]


def fit_arg_parts(
    spec: SweepSpec,
    params: Mapping[str, Any],
    extra: Sequence[str] = (),
    resolver: Resolver = resolve_in_storage,
) -> list[tuple[str, list[str]]]:
    """:func:`fit_args` in labelled pieces (spec key -> its arguments), for error messages.

    Order: the condition's config files, the spec's fixed overrides, the trial's parameters
    (a trial reference becomes the path ``resolver`` gives for the trial's seed), the objective
    as the checkpoint's monitor (so the CLI logs its ``_best`` and keeps the best checkpoint by
    it), then the extra arguments given after ``--``, which win.
    """
    configs = [arg for file in spec.configs_for(params) for arg in ("--config", file)]
    parts = [("space.config" if CONFIG_KEY in params else "config", configs)]
    for key, value in spec.overrides.items():
        parts.append((f"overrides.{key}", [f"--{key}", cli_text(value)]))
    for key, value in params.items():
        if key == SEED_KEY:
            parts.append(("seeds", [f"--{key}", str(value)]))
        elif key != CONFIG_KEY:
            value = spec.param(key).cli_value(value)
            if isinstance(value, TrialReference):
                value = resolver(value, params.get(SEED_KEY, spec.seeds[0]))
            parts.append((f"space.{key}", [f"--{key}", cli_text(value)]))
    monitor = ["--checkpoint.monitor", spec.objective.metric]
    parts.append(("objective", [*monitor, "--checkpoint.mode", spec.objective.mode]))
    if extra:
        parts.append(("arguments after --", list(extra)))
    return parts


def wandb_tags(params: Mapping[str, Any]) -> list[str]:
    """``key=value`` per parameter; keys shortened to their last part where W&B would refuse."""
    return list(_tags(params))


def _tags(params: Mapping[str, Any]) -> Iterator[str]:
    for key, value in params.items():
        tag = f"{key}={format_value(value)}"
        if len(tag) > _MAX_TAG:
            tag = f"{key.rsplit('.', 1)[-1]}={format_value(value)}"
        yield tag[:_MAX_TAG]


def count_runs(spec: SweepSpec) -> int:
    """Runs a grid sweep makes: conditions x seeds."""
    return len(grid_conditions(spec)) * len(spec.seeds)
