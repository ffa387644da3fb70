"""Helpers of the sweep tests: spec files, a cheap objective, worker processes, storage reads.

The cheap objective stands in for a fit where the storage and worker machinery is under test
(claims, retries, locks, signals): it computes a value from the parameters, may sleep, and may
fail on request. ``python tests/sweep_helpers.py SPEC STORAGE [N_TRIALS]`` runs one worker with
it; ``CHEAP_TRIAL`` (JSON: ``sleep``, ``fail_on``, ``nan_on``, ``fail_once_dir``) steers it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
HELPERS = Path(__file__).resolve()

#: Overrides that make a regular autoencoder trial a seconds-long fit.
TINY_OVERRIDES: dict[str, Any] = {
    "model.init_args.num_units": 1,
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.enable_model_summary": False,
    "trainer.callbacks": [],
    "data.train_per_class": 4,
    "data.eval_per_class": 2,
}


def write_spec(folder: Path, name: str = "study", **fields: Any) -> Path:
    """A spec file ``folder/<name>.yaml``: regular_ae, tiny overrides, unless ``fields`` say."""
    spec: dict[str, Any] = {
        "config": str(CONF / "regular_ae.yaml"),
        "overrides": dict(TINY_OVERRIDES),
        "space": {"model.init_args.unpool": ["switch", "blind"]},
        "objective": {"metric": "val/euclid_balanced", "direction": "minimize"},
    }
    if "config" in (fields.get("space") or {}) and "config" not in fields:
        del spec["config"]  # the space chooses the base config
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cheap_value(params: Mapping[str, Any]) -> float:
    """A deterministic stand-in objective of the parameters."""
    return float(sum(len(str(k)) * (1 + len(str(v))) for k, v in params.items()) % 97)


def cheap_trial(options: Mapping[str, Any] | None = None) -> Callable:
    """A trial function: sleeps, may fail or return NaN for conditions containing a substring."""
    from convae_lightning.sweeps.runner import TrialContext, TrialResult

    options = dict(options or {})

    def run(context: TrialContext) -> TrialResult:
        condition = context.trial.user_attrs["condition"]
        context.run_dir.mkdir(parents=True, exist_ok=True)
        (context.run_dir / "ran").write_text(f"{os.getpid()}\n")
        time.sleep(options.get("sleep", 0.0))
        marker = options.get("fail_once_dir")
        failed_before = marker is not None and (Path(marker) / condition).exists()
        if options.get("fail_on") and options["fail_on"] in condition and not failed_before:
            if marker is not None:
                Path(marker).mkdir(parents=True, exist_ok=True)
                (Path(marker) / condition).write_text("failed once")
            raise RuntimeError(f"cheap trial fails on {condition}")
        if options.get("nan_on") and options["nan_on"] in condition:
            return TrialResult(math.nan)
        return TrialResult(cheap_value(context.params), {"metric_final": 1.0})

    return run


def start_worker(
    spec: Path, storage: str, cwd: Path, n_trials: int | None = None, **options: Any
) -> subprocess.Popen:
    """One cheap worker process on the study, in its own session (``options``: CHEAP_TRIAL)."""
    args = [sys.executable, str(HELPERS), str(spec), storage]
    args += [str(n_trials)] if n_trials is not None else []
    env = {**os.environ, "CHEAP_TRIAL": json.dumps(options)}
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


#: Six conditions that every model accepts (checks run them through the CLI's parser).
SPACE: dict[str, list] = {
    "model.init_args.unpool": ["switch", "blind"],
    "data.batch_size": [8, 16, 32],
}


def two_workers_share_a_grid(folder: Path, storage: str, name: str = "study") -> optuna.Study:
    """Two cheap worker processes that plan at the same moment (racing for the planning lock)
    and claim concurrently; checks that the grid is complete, once, and both did work."""
    from convae_lightning.sweeps.parse import load_spec
    from convae_lightning.sweeps.space import grid_runs

    path = write_spec(folder, name, space=SPACE, seeds=[0, 1])
    options = {"sleep": 0.3, "barrier": str(folder / "barrier"), "parties": 2}
    workers = [start_worker(path, storage, folder, **options) for _ in range(2)]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output
    study = load(storage, name)
    assert complete_keys(study) == sorted(run.key for run in grid_runs(load_spec(path)))
    assert len(study.trials) == 12  # one trial per run: none enqueued twice, none extra
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both did work
    return study


def silent_remote_trial_is_retried(folder: Path, storage: str | None, name: str = "study") -> None:
    """A worker on another host claims a run, beats once and goes away: the heartbeat (1 s,
    grace 2 s) fails its trial and a local worker retries it with the same parameters."""
    from convae_lightning.sweeps.command import resolve
    from convae_lightning.sweeps.parse import load_spec
    from convae_lightning.sweeps.runner import prepare_study, run_worker

    path = write_spec(folder, name, space={"data.batch_size": [8, 16]},
                      heartbeat={"interval": 1, "grace_period": 2})  # fmt: skip
    sweep = resolve(load_spec(path), storage=storage)
    backend = sweep.open_storage()
    study = prepare_study(sweep, backend)
    remote = study.trials[0]
    assert backend.set_trial_state_values(remote._trial_id, TrialState.RUNNING)
    backend.set_trial_user_attr(remote._trial_id, "worker", "4242@another-machine")
    backend.record_heartbeat(remote._trial_id)
    state = run_worker(sweep, cheap_trial(), study=study, storage=backend)
    assert state.finished and state.done == 2
    study = load(sweep.storage_url, name)
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.system_attrs["fixed_params"]  # the dead one never suggested
    assert retry.user_attrs["condition"] == dead.user_attrs["condition"]


def load(storage: str, study_name: str) -> optuna.Study:
    from convae_lightning.sweeps.storage import open_storage

    return optuna.load_study(study_name=study_name, storage=open_storage(storage))


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running_trial(storage: str, study_name: str, cwd: Path, marker: str) -> FrozenTrial | None:
    """A RUNNING trial whose run folder holds ``marker`` (its worker has written everything it
    writes before the run: a kill then interrupts the run, not a storage write)."""
    try:
        study = load(storage, study_name)
    except KeyError:
        return None
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        run_dir = trial.user_attrs.get("run_dir")
        if run_dir and (cwd / run_dir / marker).exists():
            return trial
    return None


def complete_keys(study: optuna.Study) -> list[tuple[str, int]]:
    """(condition, seed) of every COMPLETE trial, repeats included (to catch duplicates)."""
    return sorted(
        (t.user_attrs["condition"], t.user_attrs["seed"])
        for t in study.get_trials(states=(TrialState.COMPLETE,))
    )


def _worker_main(argv: list[str]) -> int:
    from convae_lightning.sweeps.command import resolve
    from convae_lightning.sweeps.parse import load_spec
    from convae_lightning.sweeps.runner import StopSweep, prepare_study, run_worker

    spec_path, storage = argv[0], argv[1]
    n_trials = int(argv[2]) if len(argv) > 2 else None
    options = json.loads(os.environ.get("CHEAP_TRIAL", "{}"))
    if "barrier" in options:  # start planning together, to race for the planning lock
        barrier = Path(options["barrier"])
        barrier.mkdir(parents=True, exist_ok=True)
        (barrier / str(os.getpid())).touch()
        wait_for(lambda: len(list(barrier.iterdir())) >= options["parties"], what="workers")
    sweep = resolve(load_spec(spec_path), n_trials=n_trials, storage=storage)
    backend = sweep.open_storage()
    study = prepare_study(sweep, backend)
    try:
        run_worker(sweep, cheap_trial(options), study=study, storage=backend)
    except StopSweep:
        return 130
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(_worker_main(sys.argv[1:]))
