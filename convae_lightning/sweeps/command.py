"""``convae sweep SPEC [--n-trials N] [--workers N] [--storage URL] [--study-name NAME]
[--dry-run] [-- EXTRA FIT ARGS]``: run (or resume, or join) the study a spec describes."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser
from optuna.trial import FrozenTrial, TrialState

from convae_lightning.sweeps.check import check_spec
from convae_lightning.sweeps.launcher import run_local_workers
from convae_lightning.sweeps.parse import load_spec
from convae_lightning.sweeps.runner import (
    Progress,
    StopSweep,
    Sweep,
    SweepMismatchError,
    TrialFunction,
    check_existing_study,
    prepare_study,
    progress,
    run_worker,
)
from convae_lightning.sweeps.space import (
    condition_id,
    count_runs,
    describe_reference,
    fit_args,
    probe_conditions,
)
from convae_lightning.sweeps.spec import SEED_KEY, SpecError, SweepSpec
from convae_lightning.sweeps.storage import (
    StorageError,
    default_storage,
    display_url,
    is_rdb,
    sqlite_path,
)
from convae_lightning.sweeps.trial import ObjectiveMissingError, command_line, fit_trial

__all__ = ["build_parser", "main", "resolve", "sweep"]

#: Errors that are the user's to fix: one line, exit code 2.
USER_ERRORS = (SpecError, StorageError, SweepMismatchError, ObjectiveMissingError)
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="convae sweep",
        description="Run an Optuna sweep of convae fit runs described by a spec (sweeps/*.yaml). "
        "Arguments after -- are appended to every trial's fit command line. "
        "Run the same command again to resume; on another machine, with the same "
        "--storage, to join.",
        exit_on_error=True,
    )
    parser.add_argument("spec", type=str, help="The sweep spec file (sweeps/unpooling.yaml).")
    parser.add_argument(
        "--n-trials", type=int, default=None, help="COMPLETE trials to reach (spec: n_trials)."
    )
    parser.add_argument("--workers", type=int, default=1, help="Local worker processes.")
    parser.add_argument(
        "--storage", type=str, default=None, help="RDB URL or journal file (spec: storage)."
    )
    parser.add_argument("--study-name", type=str, default=None, help="Spec: study_name.")
    parser.add_argument(
        "--dry-run", action="store_true", help="Print the conditions and run count; run nothing."
    )
    return parser


def resolve(
    spec: SweepSpec,
    extra: Sequence[str] = (),
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
) -> Sweep:
    """The spec with this command's options applied (options win over the spec's values).

    Raises:
        SpecError: ``n_trials`` beyond a grid's runs, or ``workers`` below 1.
        StorageError: several workers on a SQLite study.
    """
    if workers < 1:
        raise SpecError(spec.path, "", f"--workers must be at least 1, got {workers}")
    name = study_name or spec.study_name
    target = n_trials if n_trials is not None else spec.n_trials
    if spec.is_grid:
        runs = count_runs(spec)
        if target is not None and target > runs:
            raise SpecError(spec.path, "n_trials", f"{target} is more than the grid's {runs} runs")
        target = runs if target is None else target
    url = storage or spec.storage or default_storage(name, workers)
    if workers > 1 and sqlite_path(url) is not None:
        raise StorageError(
            f"storage {url}: SQLite is not safe for several worker processes; leave --storage "
            "out (a journal file) or give an RDB server URL"
        )
    return Sweep(spec, name, url, target, tuple(extra), spec.timeout)


def sweep(
    spec_path: str | os.PathLike,
    extra: Sequence[str] = (),
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    dry_run: bool = False,
    trial_function: TrialFunction = fit_trial,
) -> int:
    """Run the command; return its exit code (0 done, 1 unfinished, 130 interrupted).

    Raises:
        SpecError, StorageError, SweepMismatchError: before any trial runs.
    """
    spec = load_spec(spec_path)
    run = resolve(spec, extra, n_trials, workers, storage, study_name)
    if dry_run:
        check_spec(spec, run.extra_args)
        _print_plan(run)
        return 0
    # A server is checked before the conditions (seconds of work) and a study already there is
    # compared with this spec; a new local file is only made once the conditions passed.
    local = sqlite_path(run.storage_url) or (None if is_rdb(run.storage_url) else run.storage_url)
    storage_ = None
    if local is None or Path(local).exists():
        storage_ = run.open_storage()
        check_existing_study(run, storage_)
    checked = check_spec(spec, run.extra_args)
    storage_ = storage_ or run.open_storage()
    study = prepare_study(run, storage_)
    state = progress(study, run)
    _say(
        f"sweep {run.study_name}: {_target(run)}; {state.done} done, "
        f"{checked} condition(s) checked; storage {display_url(run.storage_url)}"
    )
    started = time.monotonic()
    try:
        if workers > 1:
            state = run_local_workers(run, workers, study, _print_trial, _print_worker_exit)
        else:
            state = run_worker(run, trial_function, _print_trial, study, storage_)
    except StopSweep as stop:
        _say(f"stopped ({stop}): {_summary(progress(study, run))}")
        _say("the same command resumes the study")
        return EXIT_INTERRUPTED
    _say(_summary(state))
    _say(f"browse: optuna-dashboard {_dashboard_url(run.storage_url)}")
    timed_out = run.timeout is not None and time.monotonic() - started >= run.timeout
    return 0 if state.finished or state.target is None or timed_out else 1


def _target(run: Sweep) -> str:
    if run.spec.is_grid:
        conditions = count_runs(run.spec) // len(run.spec.seeds)
        text = f"{conditions} conditions x {len(run.spec.seeds)} seed(s)"
        return f"{text}, {run.n_trials} runs to complete"
    budget = f"{run.n_trials} runs" if run.n_trials else "no run limit"
    timeout = f", timeout {run.timeout:g} s" if run.timeout else ""
    return f"{run.spec.sampler.name} sampling, {budget}{timeout}"


def _summary(state: Progress) -> str:
    target = f"/{state.target}" if state.target is not None else ""
    return (
        f"{state.done}{target} runs complete, {state.failed} failed, {state.pruned} pruned, "
        f"{state.running} running"
    )


def _print_plan(run: Sweep) -> None:
    spec = run.spec
    if spec.is_grid:
        conditions = probe_conditions(spec)
        for index, params in enumerate(conditions):
            _say(f"[{index}] {condition_id(params)}")
        seeds = ", ".join(map(str, spec.seeds))
        _say(
            f"{len(conditions)} conditions x {len(spec.seeds)} seed(s) ({seeds}) = "
            f"{count_runs(spec)} runs; this command completes {run.n_trials}"
        )
    else:
        for param in spec.space:
            _say(param.describe())
        _say(f"{_target(run)}; each sampled condition repeated for seeds {list(spec.seeds)}")
    example = {**probe_conditions(spec)[0], SEED_KEY: spec.seeds[0]}
    _say(f"study {run.study_name} in {display_url(run.storage_url)}; each run is, e.g.:")
    _say(f"  {command_line(fit_args(spec, example, run.extra_args, describe_reference))}")


def _print_trial(trial: FrozenTrial) -> None:
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        outcome = f"{attrs.get('objective_metric')} = {trial.value:.6g}"
    elif trial.state == TrialState.FAIL:
        outcome = attrs.get("fail_reason", "failed")
    else:
        outcome = attrs.get("pruned", "")
    wall = attrs.get("wall_time_s")
    wall_text = f" {wall:.1f} s" if isinstance(wall, (int, float)) and math.isfinite(wall) else ""
    _say(
        f"trial {trial.number} {trial.state.name} {outcome} | {attrs.get('condition')} "
        f"seed={attrs.get('seed')} |{wall_text} {attrs.get('run_dir', '')}"
    )


def _print_worker_exit(index: int, code: int, log_path: Path) -> None:
    tail = (
        log_path.read_text(errors="replace").strip().splitlines()[-5:] if log_path.exists() else []
    )
    _say(f"worker {index} exited with code {code}; log: {log_path}")
    for line in tail:
        _say(f"  {line}")


def _dashboard_url(url: str) -> str:
    return url if is_rdb(url) else str(Path(url))


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``convae sweep ...`` (also ``python -m convae_lightning.sweeps ...``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        split = args.index("--")
        args, extra = args[:split], args[split + 1 :]
    options = build_parser().parse_args(args)
    try:
        code = sweep(
            options.spec,
            extra,
            n_trials=options.n_trials,
            workers=options.workers,
            storage=options.storage,
            study_name=options.study_name,
            dry_run=options.dry_run,
        )
    except USER_ERRORS as error:
        if os.environ.get("CONVAE_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        code = 2
    if code:
        raise SystemExit(code)
