"""Sweep specs: the typed dataclasses a ``sweeps/*.yaml`` file is parsed into
(:func:`~convae_lightning.sweeps.parse.load_spec`).

A spec names what every trial runs (base config files, fixed overrides), what varies (the search
space over any CLI config key, repeated per seed), what is optimised, and how (sampler, pruner,
budget, storage). The search space lives in the spec only. Every mistake is a :class:`SpecError`
of one line naming the file and the key::

    sweeps/unpooling.yaml: space.model.init_args.unpool: 'choices' must be a non-empty list
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

__all__ = [
    "CONFIG_KEY",
    "SEED_KEY",
    "HeartbeatSpec",
    "Objective",
    "Param",
    "PrunerSpec",
    "SamplerSpec",
    "SpecError",
    "SweepSpec",
    "TrialReference",
]

#: Space key that chooses the base config file(s) of a condition.
CONFIG_KEY = "config"
#: Trial parameter holding the run's seed (the CLI's own key).
SEED_KEY = "seed_everything"


class SpecError(ValueError):
    """A spec mistake, as one line: ``FILE: KEY: what is wrong (what is allowed)``."""

    def __init__(self, path: str | os.PathLike, key: str, message: str) -> None:
        self.path, self.key = str(path), key
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


# ------------------------------------------------------------------------------------ params
@dataclass(frozen=True)
class Param:
    """One dimension of the search space, keyed by the CLI config key it sets.

    Categorical values are stored in Optuna as themselves when they are plain scalars, otherwise
    as a label: the mapping key of labelled choices (``{narrow: [8, 16], wide: [16, 32]}``) or
    the compact JSON text of an unlabelled list or mapping. :meth:`cli_value` maps back.
    """

    key: str
    kind: Literal["categorical", "int", "float"]
    choices: tuple[Any, ...] = ()
    #: Optuna value -> the value the CLI receives (only where they differ).
    values: Mapping[Any, Any] = field(default_factory=dict)
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    #: Active only when every named (earlier) parameter has one of the listed values.
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.log, step=self.step
        )

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask Optuna for this parameter (a fixed value when the trial was enqueued)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        """Every value of a categorical or stepped parameter, in order."""
        if self.kind == "categorical":
            return list(self.choices)
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def extremes(self) -> list[Any]:
        """Values that exercise the whole range: every choice, or the two bounds."""
        if self.kind == "categorical":
            return list(self.choices)
        return (
            [int(v) for v in (self.low, self.high)] if self.kind == "int" else [self.low, self.high]
        )

    def cli_value(self, value: Any) -> Any:
        return self.values.get(value, value) if self.kind == "categorical" else value

    def active(self, params: Mapping[str, Any]) -> bool:
        return all(params.get(key) in allowed for key, allowed in self.when.items())

    def describe(self) -> str:
        if self.kind == "categorical":
            text = "{" + ", ".join(map(format_value, self.choices)) + "}"
        else:
            text = f"{self.kind} [{self.low}, {self.high}]"
            text += " log" if self.log else ""
            text += f" step {self.step}" if self.step else ""
        if self.when:
            cond = ", ".join(f"{k} in {list(v)}" for k, v in self.when.items())
            text += f" (only when {cond})"
        return f"{self.key}: {text}"


def format_value(value: Any) -> str:
    """``switch``, ``true``, ``0.01``: how parameter values read in ids, tags and messages."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class TrialReference:
    """A choice whose value is a file of another sweep's trial (a checkpoint, typically).

    Spelled in a spec as a labelled choice ``{trial_of: SPEC, where: {KEY: VALUE}, file: PATH}``:
    the trial of ``SPEC``'s study whose parameters include ``where`` and whose seed is the
    running trial's seed. It is looked up when the trial starts (the other study may still be
    running when this one is planned); :func:`~convae_lightning.sweeps.reference.resolve`.
    """

    #: The other sweep's spec file (relative to the working directory, like ``config``).
    spec: str
    #: Its study (the spec's ``study_name`` unless the reference names another).
    study: str
    #: Its storage URL or journal path (``None``: the spec's, else ``runs/<study>/``).
    storage: str | None
    #: Stored parameter values that identify one condition of the other sweep.
    where: Mapping[str, Any]
    #: The file in the trial's run folder; a glob must match exactly one file.
    file: str = "checkpoints/last.ckpt"
    #: The other sweep's seeds (a trial takes the run of its own seed).
    seeds: tuple[int, ...] = ()

    def describe(self, seed: int | None = None) -> str:
        """``checkpoints/unit4.ckpt of thesis_table4 trial config=weak,...,seed=0``."""
        where = ",".join(f"{k}={format_value(v)}" for k, v in self.where.items())
        where += f",seed={seed}" if seed is not None else ""
        return f"{self.file} of {self.study} trial {where}"


def _param_dict(param: Param) -> dict[str, Any]:
    """A parameter as JSON-simple data; ``values`` as pairs (labels may be non-strings)."""
    data = asdict(param)  # also turns TrialReference values into dicts
    data["values"] = [[k, v] for k, v in data["values"].items()]
    return data


# -------------------------------------------------------------------------- the other parts
@dataclass(frozen=True)
class Objective:
    """What a trial returns: ``metric`` (a logged key), its direction, best epoch or last."""

    metric: str = "val/loss_balanced"
    direction: Literal["minimize", "maximize"] = "minimize"
    value: Literal["best", "last"] = "best"

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min" if self.direction == "minimize" else "max"


@dataclass(frozen=True)
class SamplerSpec:
    name: Literal["grid", "tpe", "random"] = "grid"
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, fixed: Mapping[str, Any] | None = None) -> optuna.samplers.BaseSampler:
        """The Optuna sampler (grid sweeps enqueue every run, so they never sample)."""
        if self.name == "tpe":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(**self.options)
        else:
            sampler = optuna.samplers.RandomSampler(**self.options)
        if fixed:
            sampler = optuna.samplers.PartialFixedSampler(dict(fixed), sampler)
        return sampler


@dataclass(frozen=True)
class PrunerSpec:
    name: Literal["none", "median", "hyperband"] = "none"
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> optuna.pruners.BasePruner:
        if self.name == "median":
            return optuna.pruners.MedianPruner(**self.options)
        if self.name == "hyperband":
            return optuna.pruners.HyperbandPruner(**self.options)
        return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class HeartbeatSpec:
    """RDB storages only: a trial whose worker stops beating for ``grace_period`` s is failed."""

    interval: int = 30
    grace_period: int = 120


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see ``docs/sweeps.md`` for the file format)."""

    path: Path
    study_name: str
    config: tuple[str, ...]
    overrides: Mapping[str, Any]
    space: tuple[Param, ...]
    seeds: tuple[int, ...] = (0,)
    objective: Objective = Objective()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: int | None = None
    timeout: float | None = None
    storage: str | None = None
    max_retries: int = 2
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    #: label -> config files of a ``config`` choice (also plain paths -> themselves).
    config_choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_grid(self) -> bool:
        return self.sampler.name == "grid"

    def param(self, key: str) -> Param:
        return next(p for p in self.space if p.key == key)

    def configs_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The ``--config`` files of a trial: the condition's choice or the spec's ``config``."""
        if CONFIG_KEY in params:
            return self.config_choices[params[CONFIG_KEY]]
        return self.config

    def to_dict(self) -> dict[str, Any]:
        """JSON-simple form, stored with the study (``spec`` study user attribute)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["space"] = [_param_dict(p) for p in self.space]
        return json.loads(json.dumps(data, default=list))

    def identity(self) -> dict[str, Any]:
        """What must match for two commands to share a study: what trials run and optimise."""
        data = self.to_dict()
        keys = ("config", "overrides", "space", "seeds", "objective", "sampler", "config_choices")
        return {key: data[key] for key in keys}
