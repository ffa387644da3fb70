"""The sweep machinery on real Optuna storages (SQLite, journal file) with a cheap objective:
each run once, failures recorded, dead workers' trials retried, Ctrl-C, resuming, TPE repeats.

Real fits are in ``test_sweeps_run.py``; PostgreSQL in ``test_sweeps_postgres.py``.
"""

from __future__ import annotations

import os
import signal
import socket

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    SPACE,
    cheap_trial,
    complete_keys,
    load,
    running_trial,
    silent_remote_trial_is_retried,
    start_worker,
    two_workers_share_a_grid,
    wait_for,
    write_spec,
)

from convae_lightning.sweeps import sweep as sweep_command
from convae_lightning.sweeps.command import resolve
from convae_lightning.sweeps.parse import load_spec
from convae_lightning.sweeps.runner import SweepMismatchError, prepare_study, run_worker
from convae_lightning.sweeps.space import grid_runs

JOURNAL = "runs/study/journal.log"


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch, cli_cache):
    """Each test in a fresh working directory (runs/ lands there), sharing the feature cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    return tmp_path


def test_sqlite_grid_runs_each_condition_once_with_the_contract_attrs(workdir, capsys):
    path = write_spec(workdir, space=SPACE, seeds=[0, 1])
    assert sweep_command(path, trial_function=cheap_trial()) == 0
    study = load("sqlite:///runs/study/study.db", "study")
    spec = load_spec(path)
    assert complete_keys(study) == sorted(run.key for run in grid_runs(spec))
    assert len(study.trials) == 12  # nothing but the grid
    trial = study.trials[0]
    assert trial.params == {"model.init_args.unpool": "switch", "data.batch_size": 8,
                            "seed_everything": 0}  # fmt: skip
    attrs = trial.user_attrs
    assert attrs["condition"] == "model.init_args.unpool=switch,data.batch_size=8"
    assert attrs["seed"] == 0 and attrs["objective_metric"] == "val/euclid_balanced"
    assert attrs["run_dir"] == "runs/study/trial_0"
    assert attrs["run_dir_abs"] == str(workdir / "runs/study/trial_0")
    assert (workdir / attrs["run_dir"] / "ran").is_file()
    assert attrs["worker"] == f"{os.getpid()}@{socket.gethostname()}"
    assert attrs["wall_time_s"] >= 0 and "fail_reason" not in attrs
    assert study.user_attrs["spec_path"] == str(path)
    assert study.user_attrs["spec"]["objective"]["metric"] == "val/euclid_balanced"
    out = capsys.readouterr().out
    assert "6 conditions x 2 seed(s), 12 runs to complete" in out
    assert "12/12 runs complete, 0 failed" in out
    assert "optuna-dashboard sqlite:///runs/study/study.db" in out
    # Done is done: the same command again runs nothing.
    assert sweep_command(path, trial_function=cheap_trial()) == 0
    assert len(load("sqlite:///runs/study/study.db", "study").trials) == 12


def test_failed_and_nan_trials_are_recorded_the_sweep_goes_on_and_resume_completes(workdir):
    path = write_spec(workdir, space={"data.batch_size": [8, 16, 32]})
    failing = cheap_trial({"fail_on": "batch_size=16", "nan_on": "batch_size=32"})
    assert sweep_command(path, trial_function=failing) == 1
    study = load("sqlite:///runs/study/study.db", "study")
    states = {t.user_attrs["condition"]: t for t in study.trials}
    assert states["data.batch_size=8"].state == TrialState.COMPLETE
    fail = states["data.batch_size=16"]
    assert fail.state == TrialState.FAIL
    assert fail.user_attrs["fail_reason"] == (
        "RuntimeError: cheap trial fails on data.batch_size=16"
    )
    nan = states["data.batch_size=32"]
    assert (
        nan.state == TrialState.FAIL and nan.user_attrs["fail_reason"] == "objective value is nan"
    )
    # The same command resumes: only the two failed conditions run again.
    assert sweep_command(path, trial_function=cheap_trial()) == 0
    study = load("sqlite:///runs/study/study.db", "study")
    assert complete_keys(study) == [(f"data.batch_size={b}", 0) for b in (16, 32, 8)]
    assert [t.state for t in study.trials[3:]] == [TrialState.COMPLETE] * 2


def test_two_journal_workers_share_one_grid_without_losing_or_repeating_runs(workdir):
    two_workers_share_a_grid(workdir, JOURNAL)
    runs = [p for p in (workdir / "runs/study").iterdir() if p.name.startswith("trial_")]
    assert len(runs) == 12


def test_sigkilled_worker_trial_is_failed_and_retried(workdir):
    path = write_spec(workdir, space={"data.batch_size": [8, 16]})
    worker = start_worker(path, JOURNAL, workdir, sleep=60)
    victim = wait_for(lambda: running_trial(JOURNAL, "study", workdir, "ran"), what="a run")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    # The next command (here: a worker of this process) notices, fails it and retries it.
    sweep = resolve(load_spec(path), storage=JOURNAL)
    storage = sweep.open_storage()
    state = run_worker(sweep, cheap_trial(), study=prepare_study(sweep, storage), storage=storage)
    assert state.finished and state.done == 2
    study = load(JOURNAL, "study")
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"] == f"worker {victim.user_attrs['worker']} died"
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.user_attrs["run_dir"] != dead.user_attrs["run_dir"]
    assert sorted(k for k, _ in complete_keys(study)) == ["data.batch_size=16", "data.batch_size=8"]


def test_stale_heartbeat_of_a_worker_on_another_machine_is_failed_and_retried(workdir):
    silent_remote_trial_is_retried(workdir, None)  # the default storage: SQLite


def test_ctrl_c_records_the_trial_as_interrupted_and_the_same_command_resumes(workdir):
    path = write_spec(workdir, space={"data.batch_size": [8, 16]})
    worker = start_worker(path, JOURNAL, workdir, sleep=60)
    victim = wait_for(lambda: running_trial(JOURNAL, "study", workdir, "ran"), what="a run")
    os.kill(worker.pid, signal.SIGINT)
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 130, output
    study = load(JOURNAL, "study")
    assert study.trials[victim.number].state == TrialState.FAIL
    assert study.trials[victim.number].user_attrs["fail_reason"] == "interrupted by SIGINT"
    assert sweep_command(path, storage=JOURNAL, trial_function=cheap_trial()) == 0
    study = load(JOURNAL, "study")
    assert len(complete_keys(study)) == 2


def test_tpe_repeats_each_sampled_condition_for_every_seed(workdir):
    path = write_spec(
        workdir,
        space={"data.batch_size": {"type": "int", "low": 8, "high": 64, "log": True},
               "model.init_args.unpool": ["switch", "blind"]},
        sampler={"name": "tpe", "seed": 0, "n_startup_trials": 2},
        seeds=[0, 1],
        n_trials=6,
    )  # fmt: skip
    assert sweep_command(path, trial_function=cheap_trial()) == 0
    study = load("sqlite:///runs/study/study.db", "study")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    by_condition: dict[str, list[int]] = {}
    for trial in complete:
        by_condition.setdefault(trial.user_attrs["condition"], []).append(
            trial.params["seed_everything"]
        )
    assert all(sorted(seeds) == [0, 1] for seeds in by_condition.values()), by_condition
    repeats = [t for t in complete if "repeat_of" in t.user_attrs]
    assert len(repeats) == 3 and all(t.params["seed_everything"] == 1 for t in repeats)


def test_an_existing_study_with_another_space_or_fit_args_is_refused(workdir):
    path = write_spec(workdir, space={"data.batch_size": [8, 16]})
    assert sweep_command(path, n_trials=1, trial_function=cheap_trial()) == 0
    changed = write_spec(workdir, space={"data.batch_size": [8, 32]})
    with pytest.raises(SweepMismatchError, match=r"study 'study' in sqlite:///runs/study/study.db "
                       r"was made with a different space .* use --study-name NEW"):  # fmt: skip
        sweep_command(changed, trial_function=cheap_trial())
    write_spec(workdir, space={"data.batch_size": [8, 16]})
    with pytest.raises(SweepMismatchError, match=r"different fit args"):
        sweep_command(path, ["--trainer.max_epochs", "3"], trial_function=cheap_trial())
    assert len(load("sqlite:///runs/study/study.db", "study").trials) == 2  # nothing ran


def test_storage_url_in_a_study_folder_is_what_optuna_reads(workdir):
    """The study is a plain Optuna study: optuna-dashboard and optuna's own API read it."""
    path = write_spec(workdir)
    assert sweep_command(path, trial_function=cheap_trial()) == 0
    summaries = optuna.get_all_study_summaries("sqlite:///runs/study/study.db")
    assert [s.study_name for s in summaries] == ["study"] and summaries[0].n_trials == 2


def test_worker_liveness_sees_dead_zombie_reused_and_foreign_pids():
    import subprocess
    import sys

    from convae_lightning.sweeps.liveness import WorkerIdentity, process_start_ticks

    me = WorkerIdentity.current()
    assert me.is_dead() is False
    assert WorkerIdentity(me.pid, me.host, (me.started or 0) + 1).is_dead() is True  # pid reused
    assert WorkerIdentity(me.pid, "another-machine", me.started).is_dead() is None
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    started = process_start_ticks(child.pid)
    worker = WorkerIdentity.from_attrs(
        {"worker": f"{child.pid}@{me.host}", "worker_started": started}
    )
    assert worker.is_dead() is False
    wait_for(lambda: worker.is_dead(), timeout=60, what="the exited child to read as dead")
    assert child.poll() is not None  # dead while still a zombie, and after being reaped
    assert worker.is_dead() is True
    assert WorkerIdentity.from_attrs({"worker": "not-a-worker"}) is None
