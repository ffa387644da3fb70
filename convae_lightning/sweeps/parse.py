"""Reading a sweep spec file into :class:`~convae_lightning.sweeps.spec.SweepSpec`: every key
checked, every mistake one :class:`SpecError` line naming the file and the key."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from convae_lightning.sweeps.space import matching_conditions
from convae_lightning.sweeps.spec import (
    CONFIG_KEY,
    SEED_KEY,
    HeartbeatSpec,
    Objective,
    Param,
    PrunerSpec,
    SamplerSpec,
    SpecError,
    SweepSpec,
    TrialReference,
)

__all__ = ["load_spec"]

TOP_LEVEL_KEYS = (
    "study_name",
    "config",
    "overrides",
    "space",
    "seeds",
    "objective",
    "sampler",
    "pruner",
    "n_trials",
    "timeout",
    "storage",
    "max_retries",
    "heartbeat",
)
REFERENCE_KEYS = ("trial_of", "where", "file", "study")
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "hyperband")
_SCALARS = (str, int, float, bool, type(None))


def load_spec(path: str | os.PathLike, _referring: tuple[Path, ...] = ()) -> SweepSpec:
    """Read and validate a spec file (and the specs its trial references name).

    Raises:
        SpecError: one line naming the file and key, for any mistake in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(path, "", "no such sweep spec file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(path, "", f"{where}not valid YAML ({problem})") from None
    if not isinstance(data, Mapping):
        raise SpecError(path, "", "must be a YAML mapping of spec keys")
    return _Parser(path, _referring).parse(data)


class _Parser:
    def __init__(self, path: Path, referring: tuple[Path, ...] = ()) -> None:
        self.path = path
        self.referring = referring

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(self.path, key, message)

    def parse(self, data: Mapping[str, Any]) -> SweepSpec:
        unknown = [k for k in data if k not in TOP_LEVEL_KEYS]
        if unknown:
            raise self.fail(str(unknown[0]), f"unknown spec key; allowed: {list(TOP_LEVEL_KEYS)}")
        space, choices = self.space(data.get("space"))
        config = self.config_files("config", data.get("config"), required=False)
        if config and choices:
            raise self.fail("config", "give the base config here or as space.config, not both")
        if not config and not choices:
            raise self.fail("config", "missing: name the base config file(s) (conf/*.yaml)")
        sampler = self.sampler(data.get("sampler", "grid"))
        pruner = self.pruner(data.get("pruner", "none"))
        seeds = self.seeds(data.get("seeds", [0]))
        spec = SweepSpec(
            path=self.path,
            study_name=self.study_name(data.get("study_name", self.path.stem)),
            config=config,
            overrides=self.overrides(data.get("overrides") or {}),
            space=space,
            seeds=seeds,
            objective=self.objective(data.get("objective")),
            sampler=sampler,
            pruner=pruner,
            n_trials=self.optional_int("n_trials", data.get("n_trials"), minimum=1),
            timeout=self.optional_number("timeout", data.get("timeout")),
            storage=self.storage(data.get("storage")),
            max_retries=self.optional_int("max_retries", data.get("max_retries", 2), minimum=0),
            heartbeat=self.heartbeat(data.get("heartbeat") or {}),
            config_choices=choices,
        )
        self.check_budget(spec)
        self.check_reference_seeds(spec)
        return spec

    # ------------------------------------------------------------------------ sections
    def study_name(self, value: Any) -> str:
        if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
            raise self.fail("study_name", f"must be a folder-safe name, got {value!r}")
        return value

    def config_files(self, key: str, value: Any, required: bool = True) -> tuple[str, ...]:
        if value is None and not required:
            return ()
        files = [value] if isinstance(value, str) else value
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise self.fail(key, f"must be a config file or a list of them, got {value!r}")
        for file in files:
            if not Path(file).is_file():
                raise self.fail(
                    key, f"config file {file!r} not found (relative to the working directory)"
                )
        return tuple(files)

    def overrides(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail("overrides", "must be a mapping of CLI keys to values")
        for key in value:
            self.check_cli_key(f"overrides.{key}", key)
        return dict(value)

    def check_cli_key(self, where: str, key: Any) -> None:
        if not isinstance(key, str) or not key or key.startswith("-") or " " in key:
            raise self.fail(where, "keys are CLI config keys such as model.init_args.unpool")
        if key == SEED_KEY:
            raise self.fail(where, f"set seeds with the spec's 'seeds' list, not {SEED_KEY}")
        if key == CONFIG_KEY:
            raise self.fail(where, "choose config files with space.config")

    def space(self, value: Any) -> tuple[tuple[Param, ...], dict[str, tuple[str, ...]]]:
        if value is None or (isinstance(value, Mapping) and not value):
            raise self.fail("space", "empty: name at least one CLI key to vary")
        if not isinstance(value, Mapping):
            raise self.fail("space", "must be a mapping of CLI keys to their values or ranges")
        params: list[Param] = []
        choices: dict[str, tuple[str, ...]] = {}
        for key, entry in value.items():
            where = f"space.{key}"
            if key == CONFIG_KEY:
                param, choices = self.config_param(where, entry)
            else:
                self.check_cli_key(where, key)
                param = self.param(where, key, entry)
            params.append(self.with_when(where, param, entry, params))
        return tuple(params), choices

    def config_param(self, where: str, entry: Any) -> tuple[Param, dict[str, tuple[str, ...]]]:
        raw = entry.get("choices") if isinstance(entry, Mapping) else entry
        if isinstance(raw, Mapping):
            labelled = {
                str(k): self.config_files(f"{where}.choices.{k}", v) for k, v in raw.items()
            }
        elif isinstance(raw, list):
            labelled = {}
            for i, item in enumerate(raw):
                files = self.config_files(f"{where}.choices[{i}]", item)
                labelled["+".join(files)] = files
        else:
            raise self.fail(where, "choices: a list of config files or a mapping label -> file(s)")
        if not labelled:
            raise self.fail(where, "choices must not be empty")
        param = Param(key=CONFIG_KEY, kind="categorical", choices=tuple(labelled))
        return param, labelled

    def param(self, where: str, key: str, entry: Any) -> Param:
        if isinstance(entry, list):
            entry = {"choices": entry}
        if not isinstance(entry, Mapping):
            raise self.fail(where, "give a list of values, {choices: [...]} or {type, low, high}")
        allowed = {"choices", "type", "low", "high", "step", "log", "when"}
        unknown = [k for k in entry if k not in allowed]
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", f"unknown; allowed: {sorted(allowed)}")
        if "choices" in entry:
            return self.categorical(where, key, entry["choices"])
        kind = entry.get("type")
        if kind not in ("int", "float"):
            raise self.fail(
                f"{where}.type", f"must be 'int' or 'float' (or give choices), got {kind!r}"
            )
        low, high = entry.get("low"), entry.get("high")
        step, log = entry.get("step"), entry.get("log", False)
        for name, number in (("low", low), ("high", high)):
            if not _is_number(number) or (kind == "int" and int(number) != number):
                raise self.fail(
                    f"{where}.{name}",
                    f"must be a{'n int' if kind == 'int' else ' number'}, got {number!r}",
                )
        if not low < high:
            raise self.fail(where, f"low ({low}) must be below high ({high})")
        if not isinstance(log, bool):
            raise self.fail(f"{where}.log", f"must be true or false, got {log!r}")
        if step is not None and (not _is_number(step) or step <= 0):
            raise self.fail(f"{where}.step", f"must be a positive number, got {step!r}")
        if log and step is not None:
            raise self.fail(where, "a log range cannot have a step")
        if log and low <= 0:
            raise self.fail(f"{where}.low", f"must be positive on a log range, got {low!r}")
        return Param(key=key, kind=kind, low=low, high=high, step=step, log=log)

    def categorical(self, where: str, key: str, raw: Any) -> Param:
        if isinstance(raw, Mapping) and raw:
            labels = tuple(str(k) for k in raw)
            values = {
                label: self.reference(f"{where}.choices.{label}", value)
                if isinstance(value, Mapping) and "trial_of" in value
                else value
                for label, value in zip(labels, raw.values(), strict=True)
            }
            return Param(key, "categorical", labels, values)
        if not isinstance(raw, list) or not raw:
            raise self.fail(
                f"{where}.choices", "must be a non-empty list (or label: value mapping)"
            )
        stored, values = [], {}
        for item in raw:
            if isinstance(item, Mapping) and "trial_of" in item:
                raise self.fail(f"{where}.choices", "give each trial_of reference a label")
            text = item if isinstance(item, _SCALARS) else json.dumps(item, separators=(",", ":"))
            if not isinstance(item, _SCALARS):
                values[text] = item
            stored.append(text)
        if len(set(map(repr, stored))) != len(stored):
            raise self.fail(f"{where}.choices", f"repeated value in {raw!r}")
        return Param(key, "categorical", tuple(stored), values)

    def with_when(self, where: str, param: Param, entry: Any, earlier: list[Param]) -> Param:
        when = entry.get("when") if isinstance(entry, Mapping) else None
        if when is None:
            return param
        if not isinstance(when, Mapping) or not when:
            raise self.fail(f"{where}.when", "must map an earlier space key to value(s)")
        resolved: dict[str, tuple[Any, ...]] = {}
        for other, allowed in when.items():
            previous = next((p for p in earlier if p.key == other), None)
            if previous is None or previous.kind != "categorical":
                keys = [p.key for p in earlier if p.kind == "categorical"]
                raise self.fail(
                    f"{where}.when.{other}",
                    f"must name a categorical space key listed before this one; have {keys}",
                )
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            stored = [self.stored_choice(previous, v) for v in values]
            if any(v is _MISSING for v in stored):
                raise self.fail(
                    f"{where}.when.{other}", f"{allowed!r} is not among {list(previous.choices)}"
                )
            resolved[other] = tuple(stored)
        return replace(param, when=resolved)

    def reference(self, where: str, value: Mapping[str, Any]) -> TrialReference:
        """``{trial_of: SPEC, where: {...}, file: PATH, study: NAME}``: checked against the other
        spec, whose grid must have exactly one condition with the ``where`` values."""
        unknown = [k for k in value if k not in REFERENCE_KEYS]
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", f"unknown; allowed: {list(REFERENCE_KEYS)}")
        target = value["trial_of"]
        if not isinstance(target, str) or not Path(target).is_file():
            raise self.fail(
                f"{where}.trial_of",
                f"sweep spec {target!r} not found (relative to the working directory)",
            )
        if Path(target).resolve() in (*self.referring, self.path.resolve()):
            raise self.fail(f"{where}.trial_of", f"{target} refers back to this spec")
        try:
            other = load_spec(target, (*self.referring, self.path.resolve()))
        except SpecError as error:
            raise self.fail(f"{where}.trial_of", f"in the referred spec: {error}") from None
        if not other.is_grid:
            raise self.fail(f"{where}.trial_of", f"{target} must be a grid sweep")
        file = value.get("file", "checkpoints/last.ckpt")
        study = value.get("study", other.study_name)
        for name, text in (("file", file), ("study", study)):
            if not isinstance(text, str) or not text or text.startswith(("/", "..")):
                raise self.fail(f"{where}.{name}", f"must be a relative name, got {text!r}")
        conditions = value.get("where") or {}
        if not isinstance(conditions, Mapping):
            raise self.fail(f"{where}.where", "must map keys of the referred space to values")
        stored: dict[str, Any] = {}
        for key, wanted in conditions.items():
            param = next((p for p in other.space if p.key == key), None)
            choice = _MISSING if param is None else self.stored_choice(param, wanted)
            if choice is _MISSING:
                keys = {p.key: list(p.choices) for p in other.space}
                raise self.fail(f"{where}.where.{key}", f"{wanted!r} is not in {target}'s {keys}")
            stored[key] = choice
        matches = matching_conditions(other, stored)
        if len(matches) != 1:
            raise self.fail(
                f"{where}.where",
                f"must pick exactly one condition of {target}, picks {len(matches)}",
            )
        return TrialReference(target, study, other.storage, stored, file, tuple(other.seeds))

    def check_reference_seeds(self, spec: SweepSpec) -> None:
        for param in spec.space:
            for label, value in param.values.items():
                missing = (
                    sorted(set(spec.seeds) - set(value.seeds))
                    if isinstance(value, TrialReference)
                    else []
                )
                if missing:
                    raise self.fail(
                        f"space.{param.key}.choices.{label}",
                        f"{value.spec} has no runs with seeds {missing} (it has "
                        f"{list(value.seeds)}); a reference takes the trial of the same seed",
                    )

    @staticmethod
    def stored_choice(param: Param, value: Any) -> Any:
        for choice in param.choices:
            if choice == value and type(choice) is type(value):
                return choice
            if param.values.get(choice) == value:
                return choice
        return _MISSING

    def seeds(self, value: Any) -> tuple[int, ...]:
        ok = isinstance(value, list) and value and all(_is_int(v) for v in value)
        if not ok or len(set(value)) != len(value):
            raise self.fail("seeds", f"must be a non-empty list of distinct ints, got {value!r}")
        return tuple(value)

    def objective(self, value: Any) -> Objective:
        if not isinstance(value, Mapping) or "metric" not in value:
            raise self.fail("objective", "needs {metric: val/..., direction, value: best|last}")
        unknown = [k for k in value if k not in ("metric", "direction", "value")]
        if unknown:
            raise self.fail(f"objective.{unknown[0]}", "unknown; allowed: metric, direction, value")
        metric = value["metric"]
        if not isinstance(metric, str) or "/" not in metric:
            raise self.fail(
                "objective.metric", f"must be a logged key like val/euclid_balanced, got {metric!r}"
            )
        direction = {"min": "minimize", "max": "maximize"}.get(
            value.get("direction"), value.get("direction", "minimize")
        )
        if direction not in ("minimize", "maximize"):
            raise self.fail(
                "objective.direction", f"must be minimize or maximize, got {direction!r}"
            )
        use = value.get("value", "best")
        if use not in ("best", "last"):
            raise self.fail("objective.value", f"must be best or last, got {use!r}")
        return Objective(metric=metric, direction=direction, value=use)

    def named_options(
        self, key: str, value: Any, names: Sequence[str]
    ) -> tuple[str, dict[str, Any]]:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping) or value.get("name") not in names:
            got = value.get("name") if isinstance(value, Mapping) else value
            raise self.fail(
                key, f"must be one of {list(names)} (or {{name: ..., options}}), got {got!r}"
            )
        return value["name"], {k: v for k, v in value.items() if k != "name"}

    def sampler(self, value: Any) -> SamplerSpec:
        name, options = self.named_options("sampler", value, SAMPLERS)
        if name == "grid" and options:
            raise self.fail("sampler", f"grid takes no options, got {sorted(options)}")
        spec = SamplerSpec(name, options)
        self.try_build("sampler", spec.build)
        return spec

    def pruner(self, value: Any) -> PrunerSpec:
        name, options = self.named_options("pruner", value, PRUNERS)
        spec = PrunerSpec(name, options)
        self.try_build("pruner", spec.build)
        return spec

    def try_build(self, key: str, build: Any) -> None:
        try:
            build()
        except (TypeError, ValueError) as error:
            raise self.fail(key, str(error).splitlines()[0]) from None

    def storage(self, value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(
                "storage", f"must be a storage URL or a journal file path, got {value!r}"
            )
        return value

    def heartbeat(self, value: Any) -> HeartbeatSpec:
        if not isinstance(value, Mapping):
            raise self.fail("heartbeat", "must be {interval: s, grace_period: s}")
        unknown = [k for k in value if k not in ("interval", "grace_period")]
        if unknown:
            raise self.fail(f"heartbeat.{unknown[0]}", "unknown; allowed: interval, grace_period")
        beat = HeartbeatSpec(**value)
        for name in ("interval", "grace_period"):
            if not _is_int(getattr(beat, name)) or getattr(beat, name) < 1:
                raise self.fail(f"heartbeat.{name}", "must be a positive int (seconds)")
        if beat.grace_period <= beat.interval:
            raise self.fail("heartbeat.grace_period", "must be longer than the interval")
        return beat

    def optional_int(self, key: str, value: Any, minimum: int) -> int | None:
        if value is not None and (not _is_int(value) or value < minimum):
            raise self.fail(key, f"must be an int >= {minimum} or null, got {value!r}")
        return value

    def optional_number(self, key: str, value: Any) -> float | None:
        if value is not None and (not _is_number(value) or value <= 0):
            raise self.fail(key, f"must be a positive number of seconds or null, got {value!r}")
        return value

    def check_budget(self, spec: SweepSpec) -> None:
        if spec.is_grid:
            for param in spec.space:
                if param.kind != "categorical" and param.step is None:
                    raise self.fail(
                        f"space.{param.key}", "grid sweeps need choices or a step for ranges"
                    )
        elif spec.n_trials is None and spec.timeout is None:
            raise self.fail("n_trials", f"{spec.sampler.name} sweeps need n_trials or timeout")
        if spec.pruner.name != "none" and not spec.objective.metric:
            raise self.fail("pruner", "pruning needs an objective metric")


_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
