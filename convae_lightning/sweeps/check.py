"""Check every condition of a sweep through the CLI's own parser before any trial runs.

Each condition's ``fit`` command line is parsed and its model, DataModule and Trainer are built
(no fitting), so an unknown key, a value the model rejects or a broken base config stops the
sweep with one line naming the spec key at fault. Sampled sweeps are checked at every choice and
both bounds of every range. A trial reference (another study's checkpoint) is checked with the
real file where that trial has run, else with a stand-in: the referred condition's model,
untrained, saved as a checkpoint, so an encoder that does not fit is found before either runs.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from convae_lightning.cli import ConvaeCLI
from convae_lightning.models.base import CHECKPOINT_META_KEY
from convae_lightning.parse_errors import not_allowed
from convae_lightning.runs import flatten_config
from convae_lightning.sweeps.reference import ReferenceMissingError, resolve
from convae_lightning.sweeps.space import fit_arg_parts, matching_conditions, probe_conditions
from convae_lightning.sweeps.spec import (
    CONFIG_KEY,
    SEED_KEY,
    SpecError,
    SweepSpec,
    TrialReference,
    format_value,
)

__all__ = ["check_spec", "condense_error"]

_PARSER_KEY = re.compile(r'Parser key "([^"]+)":')
_LITERAL = re.compile(r"Expected a typing\.Literal\[(.*)\]")
#: Lines of jsonargparse's union-type reports that carry no information for the user.
_NOISE = (
    "Parser key",
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
    "Problem with given class_path",
)


def check_spec(spec: SweepSpec, extra: Sequence[str] = ()) -> int:
    """Build (without fitting) every condition the sweep can run; return how many were checked.

    Raises:
        SpecError: naming the spec key (or the arguments after ``--``) that the CLI rejects.
    """
    conditions = probe_conditions(spec)
    with tempfile.TemporaryDirectory(prefix="convae-sweep-check-") as folder:
        stand_ins = _StandIns(spec, Path(folder))
        for params in conditions:
            parts = fit_arg_parts(spec, {**params, SEED_KEY: spec.seeds[0]}, extra, stand_ins)
            if _problem(parts) is not None:
                raise _blame(spec, params, parts)
    return len(conditions)


class _StandIns:
    """Resolver for checks: the referred file if its trial ran, else a stand-in checkpoint."""

    def __init__(self, spec: SweepSpec, folder: Path) -> None:
        self.spec, self.folder = spec, folder
        self.made: dict[str, str] = {}

    def __call__(self, reference: TrialReference, seed: int) -> str:
        try:
            return resolve(reference, seed)
        except ReferenceMissingError:
            pass
        key = reference.describe()
        if key not in self.made:
            self.made[key] = self.make(reference, self.folder / f"stand_in_{len(self.made)}.ckpt")
        return self.made[key]

    def make(self, reference: TrialReference, path: Path) -> str:
        """The referred condition's model, built by the CLI as its sweep would, untrained."""
        from convae_lightning.sweeps.parse import load_spec  # parse imports this package

        other = load_spec(reference.spec)
        (params,) = matching_conditions(other, reference.where)
        parts = fit_arg_parts(other, {**params, SEED_KEY: other.seeds[0]})
        args = [arg for _, part in parts for arg in part]
        try:
            with _quiet():
                cli = ConvaeCLI(args=args, run=False, parser_kwargs={"exit_on_error": False})
        except (Exception, SystemExit) as error:
            why = condense_error(error) if isinstance(error, Exception) else f"exit {error}"
            raise SpecError(
                self.spec.path, "", f"cannot build the stand-in for {reference.describe()}: {why}"
            ) from None
        model = cli.model
        checkpoint: dict[str, Any] = {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
        }
        model.on_save_checkpoint(checkpoint)
        # The stand-in has every unit trained, as the referred run will have at its end.
        checkpoint[CHECKPOINT_META_KEY].pop("num_active_units", None)
        torch.save(checkpoint, path)
        return str(path)


def _problem(parts: Sequence[tuple[str, list[str]]]) -> str | None:
    """Why the CLI cannot build a run from these arguments (``None``: it can)."""
    args = [arg for _, part in parts for arg in part]  # a fit's arguments, without "fit"
    try:
        with _quiet():
            cli = ConvaeCLI(args=args, run=False, parser_kwargs={"exit_on_error": False})
    except SystemExit as error:
        return f"the CLI exited ({error.code})"
    except Exception as error:  # parser and constructor errors alike are the user's to fix
        return condense_error(error)
    known = flatten_config(cli.config.clone().as_dict())
    for label, part in parts:
        if not label.startswith(("overrides.", "space.")) or label == f"space.{CONFIG_KEY}":
            continue
        key = part[0].removeprefix("--")
        if key not in cli.config and not any(k.startswith(f"{key}.") for k in known):
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"unknown config key {key!r}{hint}"
    return None


def _blame(
    spec: SweepSpec, params: Mapping[str, Any], parts: Sequence[tuple[str, list]]
) -> SpecError:
    """The first spec key whose arguments make the run unbuildable, with the reason.

    Bisects over prefixes of the labelled arguments (a few builds, not one per key).
    """
    good, bad = 0, len(parts)
    problem = _problem(parts)
    while bad - good > 1:
        middle = (good + bad) // 2
        found = _problem(parts[:middle])
        if found is None:
            good = middle
        else:
            bad, problem = middle, found
    label = parts[bad - 1][0]
    problem = _strip_inner_key(problem or "rejected by the CLI", label)
    if label.startswith("space.") and not _unknown_key(problem):
        value = format_value(params[label.removeprefix("space.")])
        return SpecError(spec.path, label, f"value {value} rejected: {problem}")
    if label == "arguments after --":
        return SpecError(spec.path, "", f"arguments after --: {problem}")
    return SpecError(spec.path, label, problem)


def _strip_inner_key(problem: str, label: str) -> str:
    """``model: ...`` or ``unpool: ...`` add nothing after ``space.model.init_args.unpool``."""
    inner, sep, rest = problem.partition(": ")
    key = label.partition(".")[2]
    if sep and " " not in inner and (key.endswith(inner) or key.startswith(f"{inner}.")):
        return rest
    return problem


def _unknown_key(problem: str) -> bool:
    return problem.startswith("unknown config key") or "is not accepted" in problem


def condense_error(error: BaseException) -> str:
    """jsonargparse's nested union report -> the lines that say what is wrong, on one line.

    A value outside a fixed set of choices reads as the CLI says it (:func:`not_allowed`);
    otherwise the innermost ``Parser key "..."`` names the argument and the other structure
    lines go.
    """
    allowed = not_allowed(str(error))
    if allowed is not None:
        return allowed
    lines, key = [], None
    for raw in str(error).splitlines():
        line = raw.strip().removeprefix("- ").strip()
        named = _PARSER_KEY.match(line)
        if named:
            key = named[1]
        line = _LITERAL.sub(r"expected one of [\1]", line)
        if "is not accepted" in line:
            line = f"unknown config key: {line}"
        if line and not line.startswith(_NOISE) and line not in lines:
            lines.append(line)
    text = "; ".join(lines) or type(error).__name__
    if key and key not in text:
        text = f"{key}: {text}"
    return text if len(text) <= 400 else text[:397] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the seed/accelerator info lines and warnings of building runs that never fit."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
