"""A tiny finished study for the report tests: real `convae fit` runs and a real Optuna storage.

Four runs (unpool switch / blind x seeds 0 / 1 of a 1-unit ``regular_ae``) are made by the
console script in a sweep's trial folders (``convae fit --run_dir runs/<study>/trial_<n>``) and
recorded in a SQLite study with the sweeps' user attributes (the run contract, written here
through Optuna's API so each state is exact). Two more trials show the states a
report must not count: one still running (its ``status.json`` says so, written through the run
contract, with this live process's pid) and one whose ``metrics.csv`` is gone. Built once per
test session under pytest's base temp folder (every module using it shares it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
from conftest import TINY, cli_env

from convae_lightning.runs import RunRecord, write_status

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STUDY = "tinyunpool"
UNPOOL_KEY = "model.init_args.unpool"
SEED_KEY = "seed_everything"
OBJECTIVE = "val/euclid_balanced"
#: (unpool, seed) of the finished trials 0-3.
FINISHED = (("switch", 0), ("switch", 1), ("blind", 0), ("blind", 1))
#: Three epochs, a reconstruction image at the last, no audio: seconds per run. CSV logging only:
#: the report reads the runs' own files, and an offline W&B run triples a tiny fit's CPU time.
FIT_ARGS = [
    "fit", "--config", str(REPO / "conf" / "regular_ae.yaml"), *TINY,
    "--trainer.max_epochs", "3",
    "--model.init_args.num_units", "1",
    "--trainer.callbacks+=convae_lightning.callbacks.ReconstructionLogger",
    "--trainer.callbacks.init_args.every_n_epochs", "3",
    "--trainer.callbacks.init_args.audio", "false",
    "--trainer.logger",
    "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]",
]  # fmt: skip


def convae(
    args: list[str], cwd: Path, cache: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the ``convae`` console script as a user would."""
    return subprocess.run(
        [str(BIN / "convae"), *args], cwd=cwd, env=cli_env(cache), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


#: A weakly stacked 2-unit autoencoder, one epoch per unit: results at depths 1 and 2.
STACK_FIT_ARGS = [
    "fit", "--config", str(REPO / "conf" / "weak_stack.yaml"), *TINY,
    "--trainer.max_epochs", "2",
    "--model.init_args.num_units", "2",
    "--trainer.callbacks",
    "[{class_path: convae_lightning.callbacks.StackGrowth, init_args: {max_epochs_per_unit: 1}},"
    " {class_path: convae_lightning.callbacks.TiedTransposeSync}]",
    "--trainer.logger",
    "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]",
]  # fmt: skip


def _checkout_env(cache: Path, **env: str) -> dict[str, str]:
    """The CLI tests' environment plus ``env``, importing this checkout's package."""
    environment = {**cli_env(cache), **env}
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return environment


def python(argv: list[str], cwd: Path, cache: Path, **env: str) -> subprocess.CompletedProcess:
    """This interpreter in a subprocess, seeing this checkout's package, without W&B settings."""
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=_checkout_env(cache, **env), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def report_cli(args: list[str], cwd: Path, cache: Path, **env: str) -> subprocess.CompletedProcess:
    """``convae report ...``: the console script, as a user runs it."""
    return subprocess.run(
        [str(BIN / "convae"), "report", *args], cwd=cwd, env=_checkout_env(cache, **env),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def fit_run(cwd: Path, cache: Path, run_dir: Path, extra: list[str]) -> float:
    """One tiny ``convae fit`` into ``run_dir`` (as a sweep's trial); returns its wall time."""
    start = time.monotonic()
    proc = convae([*FIT_ARGS, "--run_dir", str(run_dir), *extra], cwd, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.monotonic() - start


def _add_trial(
    study: optuna.Study, number: int, unpool: str, seed: int, root: Path
) -> optuna.Trial:
    study.enqueue_trial({UNPOOL_KEY: unpool, SEED_KEY: seed})
    trial = study.ask()
    assert trial.number == number
    trial.suggest_categorical(UNPOOL_KEY, ["switch", "blind"])
    trial.suggest_categorical(SEED_KEY, [0, 1, 2])
    run_dir = Path("runs") / STUDY / f"trial_{number}"
    for key, value in {
        "run_dir": str(run_dir),
        "run_dir_abs": str((root / run_dir).resolve()),
        "seed": seed,
        "condition": f"{UNPOOL_KEY}={unpool}",
        "objective_metric": OBJECTIVE,
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }.items():
        trial.set_user_attr(key, value)
    return trial


def build_tiny_study(root: Path, cache: Path) -> Path:
    """Make (once) the study under ``root``; returns the study folder ``root/runs/<study>``."""
    folder = root / "runs" / STUDY
    if (root / "done").exists():
        return folder
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    study.set_user_attr("spec", {"objective": {"metric": OBJECTIVE, "direction": "minimize"}})
    study.set_user_attr("spec_path", "sweeps/tinyunpool.yaml")
    trials = [_add_trial(study, n, unpool, seed, root) for n, (unpool, seed) in enumerate(FINISHED)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # 2 cores; each fit in its own folder
        walls = pool.map(
            lambda n: fit_run(
                root, cache, folder / f"trial_{n}",
                [f"--{UNPOOL_KEY}", FINISHED[n][0], f"--{SEED_KEY}", str(FINISHED[n][1])],
            ),
            range(len(FINISHED)),
        )  # fmt: skip
        for trial, wall in zip(trials, list(walls), strict=True):
            trial.set_user_attr("wall_time_s", round(wall, 3))
            study.tell(trial, RunRecord.load(folder / f"trial_{trial.number}").best(OBJECTIVE))
    # Trial 4: still running (a copy of trial 0's files; its status says running, live pid).
    _add_trial(study, 4, "switch", 2, root)
    shutil.copytree(folder / "trial_0", folder / "trial_4")
    write_status(folder / "trial_4", "running", pid=os.getpid(), host=os.uname().nodename)
    # Trial 5: finished, but its metrics.csv was lost.
    trial = _add_trial(study, 5, "blind", 2, root)
    shutil.copytree(folder / "trial_2", folder / "trial_5")
    (folder / "trial_5" / "metrics.csv").unlink()
    study.tell(trial, RunRecord.load(folder / "trial_2").best(OBJECTIVE))
    (root / "done").touch()
    return folder


REFERENCE_MD = """# Published values (test)

Keyed like `--rows model.init_args.unpool`.

| model.init_args.unpool | val/euclid_balanced:best | epochs | note |
|---|---|---|---|
| switch | 0.73 | 50 | test value |
| blind | 3.24 | 19† | |
"""
