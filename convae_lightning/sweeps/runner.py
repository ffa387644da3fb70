"""The worker loop: claim a trial, run it, record it; until the study has its COMPLETE trials.

Grid sweeps enqueue every (condition, seed) up front, under a lock, and workers only claim
enqueued trials: the storage's WAITING -> RUNNING transition is atomic, so two workers never get
the same run (Optuna's ``GridSampler`` can hand one grid point to two workers). A run whose trial
failed, was pruned or was interrupted is enqueued again by the next command, so every condition
completes once per seed. TPE/random sweeps sample new trials until ``n_trials`` are COMPLETE;
a sampled condition is repeated for the spec's other seeds once its first seed completes.
"""

from __future__ import annotations

import logging
import math
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from convae_lightning.sweeps.liveness import (
    Heartbeat,
    RetryDeadTrial,
    WorkerIdentity,
    reap_dead_trials,
)
from convae_lightning.sweeps.space import Run, grid_runs, suggest
from convae_lightning.sweeps.spec import SEED_KEY, SweepSpec
from convae_lightning.sweeps.storage import RUNS_ROOT, open_storage, planning_lock

__all__ = [
    "Progress",
    "Sweep",
    "SweepMismatchError",
    "TrialContext",
    "TrialFunction",
    "TrialResult",
    "check_existing_study",
    "prepare_study",
    "progress",
    "run_worker",
]

log = logging.getLogger(__name__)

#: Seconds between looks at the study while other workers finish the last trials.
POLL_S = 1.0


class SweepMismatchError(ValueError):
    """The study exists with another spec or other fit arguments."""


class StopSweep(KeyboardInterrupt):
    """SIGINT/SIGTERM: stop after recording the running trial as interrupted."""


@dataclass(frozen=True)
class Sweep:
    """A spec resolved for one command: study, storage, budget and extra fit arguments."""

    spec: SweepSpec
    study_name: str
    storage_url: str
    n_trials: int | None
    extra_args: tuple[str, ...] = ()
    timeout: float | None = None

    @property
    def runs(self) -> list[Run]:
        """Every run of a grid sweep (empty for sampled sweeps)."""
        return grid_runs(self.spec) if self.spec.is_grid else []

    @property
    def folder(self) -> Path:
        return RUNS_ROOT / self.study_name

    def run_dir(self, number: int) -> Path:
        return self.folder / f"trial_{number}"

    def identity(self) -> dict[str, Any]:
        return {**self.spec.identity(), "fit_args": list(self.extra_args)}

    def open_storage(self) -> BaseStorage:
        heartbeat = self.spec.heartbeat if "://" in self.storage_url else None
        return open_storage(self.storage_url, heartbeat, RetryDeadTrial(self.spec.max_retries))

    def load_study(self, storage: BaseStorage) -> optuna.Study:
        seeds = {SEED_KEY: self.spec.seeds[0]} if not self.spec.is_grid else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.load_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.spec.sampler.build(fixed=seeds),
                pruner=self.spec.pruner.build(),
            )


# --------------------------------------------------------------------------------- results
@dataclass
class TrialContext:
    """What a trial function gets: the Optuna trial, its parameters and its run folder."""

    trial: optuna.Trial
    sweep: Sweep
    params: dict[str, Any]
    run_dir: Path


@dataclass
class TrialResult:
    """A finished trial's objective value and the user attributes to record with it."""

    value: float
    attrs: dict[str, Any] = field(default_factory=dict)


class TrialFunction(Protocol):
    def __call__(self, context: TrialContext) -> TrialResult: ...


@dataclass(frozen=True)
class Progress:
    """Counts of a study's trials; ``done`` counts each grid run once."""

    done: int
    running: int
    waiting: int
    failed: int
    pruned: int
    target: int | None

    @property
    def finished(self) -> bool:
        return self.target is not None and self.done >= self.target


def progress(study: optuna.Study, sweep: Sweep) -> Progress:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if sweep.spec.is_grid:
        planned = {run.key for run in sweep.runs}
        done = len({_run_key(t) for t in complete} & planned)
    else:
        done = len(complete)

    def count(state: TrialState) -> int:
        return sum(t.state == state for t in trials)

    return Progress(
        done=done,
        running=count(TrialState.RUNNING),
        waiting=count(TrialState.WAITING),
        failed=count(TrialState.FAIL),
        pruned=count(TrialState.PRUNED),
        target=sweep.n_trials,
    )


def _run_key(trial: FrozenTrial) -> tuple[str | None, int | None]:
    return trial.user_attrs.get("condition"), trial.user_attrs.get("seed")


# ----------------------------------------------------------------------------- preparation
def check_identity(study: optuna.Study, sweep: Sweep) -> None:
    """Refuse a study made by another spec or with other fit arguments (one line).

    Raises:
        SweepMismatchError: naming the first part that differs.
    """
    stored = study.user_attrs.get("identity")
    if stored is None:
        return
    mine = sweep.identity()
    for key, value in mine.items():
        if stored.get(key) != value:
            raise SweepMismatchError(
                f"study {sweep.study_name!r} in {sweep.storage_url} was made with a different "
                f"{key.replace('_', ' ')} (stored {_short(stored.get(key))}, now {_short(value)});"
                " use --study-name NEW for a new study"
            )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_existing_study(sweep: Sweep, storage: BaseStorage) -> None:
    """Refuse early (before the checks that build every condition) a study of another spec.

    Raises:
        SweepMismatchError: see :func:`check_identity`.
    """
    try:
        study = sweep.load_study(storage)
    except KeyError:  # no such study yet
        return
    check_identity(study, sweep)


def prepare_study(sweep: Sweep, storage: BaseStorage) -> optuna.Study:
    """Create or load the study, check it is this sweep's, fail dead workers' trials, plan.

    Runs under :func:`~convae_lightning.sweeps.storage.planning_lock`, so processes that start
    together plan once.
    """
    with planning_lock(sweep.storage_url, sweep.study_name):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.create_study(
                    study_name=sweep.study_name,
                    storage=storage,
                    direction=sweep.spec.objective.direction,
                )
            created = True
        except DuplicatedStudyError:
            created = False
        study = sweep.load_study(storage)
        if created:
            study.set_user_attr("identity", sweep.identity())
            study.set_user_attr("spec", sweep.spec.to_dict())
            study.set_user_attr("spec_path", str(sweep.spec.path))
            study.set_user_attr("fit_args", list(sweep.extra_args))
        else:
            check_identity(study, sweep)
        retry = RetryDeadTrial(sweep.spec.max_retries)
        reap_dead_trials(study, storage, retry, WorkerIdentity.current())
        if sweep.spec.is_grid:
            plan_grid(study, sweep)
    return study


def plan_grid(study: optuna.Study, sweep: Sweep) -> list[Run]:
    """Enqueue every grid run that has no COMPLETE, RUNNING or WAITING trial."""
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    covered = {_run_key(t) for t in study.get_trials(deepcopy=False, states=live)}
    missing = [run for run in sweep.runs if run.key not in covered]
    for run in missing:
        study.enqueue_trial(
            run.trial_params, user_attrs={"condition": run.condition, "seed": run.seed}
        )
    return missing


# ---------------------------------------------------------------------------------- worker
def claim(study: optuna.Study, storage: BaseStorage, sweep: Sweep) -> optuna.Trial | None:
    """Take an enqueued trial (atomically), or sample a new one (TPE/random); ``None``: none."""
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING):
                return optuna.Trial(study, waiting._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    if sweep.spec.is_grid:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
        return study.ask()


def run_worker(
    sweep: Sweep,
    trial_function: TrialFunction,
    on_trial: Callable[[FrozenTrial], None] = lambda trial: None,
    study: optuna.Study | None = None,
    storage: BaseStorage | None = None,
) -> Progress:
    """Run trials of the study until it is finished, out of work, or stopped by a signal.

    Raises:
        StopSweep: on SIGINT/SIGTERM, after the running trial was recorded as interrupted.
    """
    storage = storage or sweep.open_storage()
    study = study or sweep.load_study(storage)
    me = WorkerIdentity.current()
    retry = RetryDeadTrial(sweep.spec.max_retries)
    deadline = time.monotonic() + sweep.timeout if sweep.timeout else math.inf
    with _stop_on_signals() as stop:
        while True:
            reap_dead_trials(study, storage, retry, me)
            state = progress(study, sweep)
            if state.finished or time.monotonic() > deadline:
                return state
            busy = state.target is not None and state.done + state.running >= state.target
            trial = None if busy else claim(study, storage, sweep)
            if trial is None:
                if state.running == 0:
                    return state  # nothing left to claim and nobody whose trial may fail
                time.sleep(POLL_S)  # wait: a running trial of another worker may still fail
                continue
            frozen = _execute(study, storage, trial, sweep, trial_function, me, stop)
            on_trial(frozen)


def _execute(
    study: optuna.Study,
    storage: BaseStorage,
    trial: optuna.Trial,
    sweep: Sweep,
    trial_function: TrialFunction,
    me: WorkerIdentity,
    stop: _SignalFlag,
) -> FrozenTrial:
    """Run one claimed trial and tell the study how it ended."""
    number = trial.number
    for key, value in me.attrs().items():
        trial.set_user_attr(key, value)
    state, value, attrs = TrialState.FAIL, None, {}
    started = time.monotonic()
    interrupted: BaseException | None = None
    with Heartbeat(storage, trial._trial_id):
        try:
            params = suggest(trial, sweep.spec)
            run = Run({k: v for k, v in params.items() if k != SEED_KEY}, params[SEED_KEY])
            run_dir = sweep.run_dir(number)
            for key, val in {
                "condition": run.condition,
                "seed": run.seed,
                "run_dir": str(run_dir),
                "run_dir_abs": str(run_dir.resolve()),
                "objective_metric": sweep.spec.objective.metric,
            }.items():
                trial.set_user_attr(key, val)
            result = trial_function(TrialContext(trial, sweep, params, run_dir))
            value, attrs = result.value, result.attrs
            state = TrialState.COMPLETE
            if not math.isfinite(value):
                state, attrs["fail_reason"] = TrialState.FAIL, f"objective value is {value}"
        except optuna.TrialPruned as pruned:
            state, attrs = TrialState.PRUNED, {"pruned": str(pruned) or "pruned"}
        except (KeyboardInterrupt, SystemExit) as error:
            if stop.signal is None and not isinstance(error, KeyboardInterrupt):
                attrs["fail_reason"] = f"exited with code {error.code}"  # type: ignore[union-attr]
            else:
                name = signal.Signals(stop.signal).name if stop.signal else "SIGINT"
                attrs["fail_reason"] = f"interrupted by {name}"
                interrupted = error
        except Exception as error:  # any failure of the run: recorded, and the sweep goes on
            attrs["fail_reason"] = _one_line(error)
            log.error("trial %d failed:\n%s", number, traceback.format_exc())
        finally:
            stop.restore()
    attrs["wall_time_s"] = round(time.monotonic() - started, 3)
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
        if not sweep.spec.is_grid:
            _repeat_for_other_seeds(study, trial, sweep)
    else:
        study.tell(trial, state=state)
    if interrupted is not None:
        raise StopSweep(attrs["fail_reason"]) from interrupted
    return storage.get_trial(trial._trial_id)


def _repeat_for_other_seeds(study: optuna.Study, trial: optuna.Trial, sweep: Sweep) -> None:
    """A sampled condition that completed its first seed is enqueued for the others."""
    params = dict(trial.params)
    if params.get(SEED_KEY) != sweep.spec.seeds[0] or "retry_of" in trial.user_attrs:
        return
    for seed in sweep.spec.seeds[1:]:
        attrs = {
            "condition": trial.user_attrs["condition"],
            "seed": seed,
            "repeat_of": trial.number,
        }
        study.enqueue_trial({**params, SEED_KEY: seed}, user_attrs=attrs)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text}"[:500]


# --------------------------------------------------------------------------------- signals
class _SignalFlag:
    """Which stop signal arrived; re-installs the handler that Lightning replaces on Ctrl-C."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def handler(self, signum: int, frame: Any) -> None:
        self.signal = signum
        raise KeyboardInterrupt

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self.handler)

    def restore(self) -> None:
        # Lightning ignores SIGINT after catching one (sys.exit(1) follows); a further Ctrl-C
        # must still stop the sweep.
        self.install()

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


@contextmanager
def _stop_on_signals() -> Iterator[_SignalFlag]:
    flag = _SignalFlag()
    flag.install()
    try:
        yield flag
    except KeyboardInterrupt as error:
        if isinstance(error, StopSweep):
            raise
        name = signal.Signals(flag.signal).name if flag.signal else "SIGINT"
        raise StopSweep(f"interrupted by {name}") from error
    finally:
        flag.uninstall()
