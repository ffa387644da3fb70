"""Sweeps of real runs: every trial a tiny ``convae fit`` through ConvaeCLI, in its run folder,
with its W&B run read back by wandb's own reader; pruning, NaN, local workers, SIGKILL, Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env
from optuna.trial import TrialState
from sweep_helpers import REPO, TINY_OVERRIDES, complete_keys, load, wait_for, write_spec

from convae_lightning.runs import RunRecord
from convae_lightning.sweeps import sweep as sweep_command

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SQLITE = "sqlite:///runs/study/study.db"


@pytest.fixture
def env(cli_cache):
    return {**cli_env(cli_cache), "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}


def sweep_process(spec: Path, cwd: Path, env: dict, *args: str) -> subprocess.Popen:
    """``convae sweep SPEC ARGS``, the console script users run."""
    return subprocess.Popen(
        [str(BIN / "convae"), "sweep", str(spec), *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wandb_records(run_dir: Path) -> list[dict]:
    """The offline W&B run's records, decoded by wandb's own reader (``wandb leet inspect``)."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    result = subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", "--json", str(log)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_trials_are_real_runs_in_their_folders_with_wandb_grouped_by_study(tmp_path, env):
    spec = write_spec(tmp_path, overrides={**TINY_OVERRIDES, "trainer.max_epochs": 2})
    process = sweep_process(spec, tmp_path, env)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "2/2 runs complete, 0 failed, 0 pruned" in output
    study = load(f"sqlite:///{tmp_path}/runs/study/study.db", "study")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        unpool = trial.params["model.init_args.unpool"]
        run_dir = tmp_path / trial.user_attrs["run_dir"]
        assert trial.user_attrs["run_dir"] == f"runs/study/trial_{trial.number}"
        record = RunRecord.load(run_dir, read_checkpoints=False)
        assert record.config_value("model.init_args.unpool") == unpool
        assert record.config_value("seed_everything") == 0
        assert record.epochs_trained == 2 == trial.user_attrs["epochs"]
        best = record.best("val/euclid_balanced", "min")
        assert trial.value == pytest.approx(best) == pytest.approx(trial.user_attrs["metric_best"])
        final = record.final("val/euclid_balanced")
        assert trial.user_attrs["metric_final"] == pytest.approx(final)
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        records = wandb_records(run_dir)
        run = next(r["run"] for r in records if r["type"] == "run")
        assert run["run_group"] == "study" and run["job_type"] == "sweep"
        assert run["tags"] == [f"model.init_args.unpool={unpool}", "seed_everything=0"]
        config = run["config"]["update"]
        assert config["model.init_args.unpool"] == unpool
        assert config["data.train_per_class"] == 4 and config["seed_everything"] == 0
    assert not (REPO / "runs" / "study").exists()


def test_a_pruned_trial_stops_early_and_a_nan_trial_fails_while_the_sweep_goes_on(
    tmp_path, monkeypatch, cli_cache
):
    """lr 0.05 learns (3 epochs); lr 1e-9 learns nothing, so the median rule stops it as soon as
    it is behind the first trial at the same epoch; lr 1e10 blows the weights up: a non-finite
    loss."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    overrides = {
        **TINY_OVERRIDES,
        "trainer.max_epochs": 3,
        "model.init_args.optimizer": {
            "class_path": "torch.optim.Adagrad",
            "init_args": {"lr": 0.01},
        },
    }
    spec = write_spec(
        tmp_path,
        overrides=overrides,
        space={"model.init_args.optimizer.init_args.lr": [0.05, 1.0e-9, 1.0e10]},
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    assert sweep_command(spec) == 1  # not every condition completed
    study = load(SQLITE, "study")
    done, pruned, nan = study.trials
    assert done.state == TrialState.COMPLETE and done.user_attrs["epochs"] == 3
    assert pruned.state == TrialState.PRUNED, pruned.user_attrs
    stopped = int(
        re.fullmatch(r"Trial was pruned at epoch (\d+)\.", pruned.user_attrs["pruned"])[1]
    )
    assert stopped < 2
    assert RunRecord.load(done.user_attrs["run_dir"], read_checkpoints=False).epochs_trained == 3
    record = RunRecord.load(pruned.user_attrs["run_dir"], read_checkpoints=False)
    assert record.epochs_trained == stopped + 1  # fewer epochs in its metrics.csv
    assert nan.state == TrialState.FAIL
    assert "loss is" in nan.user_attrs["fail_reason"], nan.user_attrs
    # In-process trials keep their W&B runs in their own run folders, whatever ran before.
    for trial in study.trials:
        assert list((tmp_path / trial.user_attrs["run_dir"]).glob("wandb/offline-run-*"))
    assert not (REPO / "runs" / "study").exists()


def test_two_local_workers_finish_the_grid_when_one_is_sigkilled(tmp_path, env):
    space = {"model.init_args.unpool": ["switch", "blind"],
             "model.init_args.decoder_relu": [True, False]}  # fmt: skip
    spec = write_spec(tmp_path, space=space, overrides={**TINY_OVERRIDES, "trainer.max_epochs": 2})
    env = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}  # the launcher's own split
    process = sweep_process(spec, tmp_path, env, "--workers", "2")
    journal = str(tmp_path / "runs/study/journal.log")

    def fitting():
        try:
            trials = load(journal, "study").get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            return None
        started = [
            t
            for t in trials
            if (tmp_path / t.user_attrs.get("run_dir", "-") / "config.yaml").exists()
        ]
        return started[0] if started else None

    victim = wait_for(fitting, timeout=300, what="a trial fitting")
    # The worker with its W&B service (a worker leads its own process group).
    os.killpg(int(victim.user_attrs["worker"].split("@")[0]), signal.SIGKILL)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "exited with code -9" in output
    study = load(journal, "study")
    assert len(complete_keys(study)) == 4 and len(set(complete_keys(study))) == 4
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].endswith("died")
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    logs = sorted(p.name for p in (tmp_path / "runs/study").glob("worker_*.log"))
    assert logs == ["worker_0.log", "worker_1.log"]
    # The two workers split the cores instead of each starting a thread per core.
    threads = {t.user_attrs["threads"] for t in study.trials if t.state == TrialState.COMPLETE}
    assert threads == {max(1, len(os.sched_getaffinity(0)) // 2)}


def test_ctrl_c_stops_a_sweep_cleanly_and_the_same_command_resumes(tmp_path, env):
    spec = write_spec(tmp_path, overrides={**TINY_OVERRIDES, "trainer.max_epochs": 3})
    process = sweep_process(spec, tmp_path, env)
    wait_for(lambda: (tmp_path / "runs/study/trial_0/config.yaml").exists(), timeout=300,
             what="the first trial fitting")  # fmt: skip
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output
    assert "the same command resumes the study" in output
    study = load(f"sqlite:///{tmp_path}/runs/study/study.db", "study")
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["fail_reason"] == "interrupted by SIGINT"
    process = sweep_process(spec, tmp_path, env)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    study = load(f"sqlite:///{tmp_path}/runs/study/study.db", "study")
    assert sorted(c for c, _ in complete_keys(study)) == [
        "model.init_args.unpool=blind",
        "model.init_args.unpool=switch",
    ]


def test_a_stacked_trials_best_is_taken_at_its_final_depth(tmp_path, monkeypatch, cli_cache):
    """A weak stack of 2 units grows after epoch 0: the objective is epoch 1's error (the only
    epoch at depth 2), whatever the 1-unit error was."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    growth = {"class_path": "convae_lightning.callbacks.StackGrowth",
              "init_args": {"max_epochs_per_unit": 1}}  # fmt: skip
    overrides = {**TINY_OVERRIDES, "model.init_args.num_units": 2, "trainer.max_epochs": 2,
                 "trainer.callbacks": [growth]}  # fmt: skip
    spec = write_spec(tmp_path, config=str(REPO / "conf/weak_stack.yaml"), overrides=overrides,
                      space={"model.init_args.unpool": ["switch"]})  # fmt: skip
    assert sweep_command(spec) == 0
    (trial,) = load(SQLITE, "study").trials
    record = RunRecord.load(trial.user_attrs["run_dir"], read_checkpoints=False)
    series = record.series("val/euclid_balanced")
    assert [epoch for epoch, _ in series] == [0, 1]
    assert series[0][1] < series[1][1]  # the minimum over all epochs would be the 1-unit error
    assert (
        trial.value == pytest.approx(series[1][1]) == pytest.approx(trial.user_attrs["metric_best"])
    )
