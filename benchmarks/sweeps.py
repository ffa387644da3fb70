"""Sweep throughput (benchmark 4 of docs/benchmarks.md): trials per hour with one worker using
every core vs one worker per core, and a median pruner vs none on the same space and seed.

Runs ``sweeps/unpooling.yaml`` (12 conditions: regular / strong / weak x switch / blind x decoder
ReLUs) scaled down by the extra fit arguments after ``--`` (few epochs, few examples per class,
CSV logs), as ``python -m convae_lightning.sweeps`` (what ``convae sweep`` runs), each
configuration on a fresh study in a temporary folder holding copies of ``conf/``, ``callbacks/``
and the spec. Compute spent is the sum of the trials' epochs and of their wall times, read back
from the study's storage and the runs' ``metrics.csv``::

    python benchmarks/sweeps.py                    # ~15 minutes on an idle 2-core machine
    taskset -c 0,1 python benchmarks/sweeps.py     # 2 cores of a larger machine
    python benchmarks/sweeps.py --smoke true       # seconds a trial, for CI (no timing meaning)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import yaml
from benchlib import emit, machine, save, table
from jsonargparse import CLI
from optuna.trial import TrialState

from convae_lightning.allocator import tune_malloc
from convae_lightning.runs import RunRecord

REPO = Path(__file__).resolve().parents[1]
SPEC = "sweeps/unpooling.yaml"


@dataclass
class SweepRun:
    """One configuration's sweep, as its storage and runs recorded it."""

    name: str
    workers: int
    threads_per_worker: int
    pruner: str
    complete: int
    pruned: int
    failed: int
    wall_s: float
    trials_per_hour: float
    best_value: float
    epochs_trained: int
    trial_seconds: float


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _workdir(root: Path, pruner: dict | None, study: str) -> Path:
    """A folder holding ``conf/``, ``callbacks/`` and the spec with this study name and pruner."""
    for folder in ("conf", "callbacks"):
        if not (root / folder).exists():
            shutil.copytree(REPO / folder, root / folder)
    spec = yaml.safe_load((REPO / SPEC).read_text())
    spec["study_name"] = study
    spec["pruner"] = pruner or "none"
    path = root / "sweeps" / f"{study}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _sweep(
    root: Path,
    name: str,
    workers: int,
    fit_args: list[str],
    n_trials: int | None,
    pruner: dict | None = None,
) -> SweepRun:
    """Run one configuration to the end and read what it spent from its storage."""
    study = name.replace(" ", "_").replace(",", "")
    spec = _workdir(root, pruner, study)
    journal = root / "runs" / study / "journal.log"
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    threads = _cores() // workers
    if workers == 1:  # in-process trials: torch's threads are ours to set
        environment["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "convae_lightning.sweeps", str(spec), "--workers"]
    command += [str(workers), "--storage", str(journal)]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, "--", *fit_args], cwd=root, env=environment, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode not in (0, 1):  # 1: some condition did not complete (pruned)
        raise RuntimeError(f"{name}: sweep exited {result.returncode}\n{result.stdout[-3000:]}")
    trials = optuna.load_study(
        study_name=study,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        ),
    ).trials
    states = [t.state for t in trials]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    epochs = sum(
        RunRecord.load(root / t.user_attrs["run_dir"], read_checkpoints=False).epochs_trained
        for t in finished
    )
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished)
    values = [t.value for t in trials if t.state == TrialState.COMPLETE]
    complete = states.count(TrialState.COMPLETE)
    return SweepRun(
        name=name,
        workers=workers,
        threads_per_worker=threads,
        pruner=(pruner or {}).get("name", "none"),
        complete=complete,
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        wall_s=round(wall, 1),
        trials_per_hour=round(len(finished) / wall * 3600, 1),
        best_value=min(values) if values else float("nan"),
        epochs_trained=epochs,
        trial_seconds=round(seconds, 1),
    )


def main(
    epochs: int = 6,
    train_per_class: int = 10,
    eval_per_class: int = 5,
    n_trials: int | None = None,
    n_startup_trials: int = 4,
    n_warmup_steps: int = 1,
    smoke: bool = False,
    out: Path | None = None,
) -> list[dict]:
    """Print the sweep-throughput table.

    Args:
        epochs: Epochs per trial (every condition, stacks included).
        train_per_class: Training examples per class per epoch.
        eval_per_class: Evaluation examples per class and view.
        n_trials: Trials per configuration (default: the spec's 12 conditions).
        n_startup_trials: The median pruner's trials before it prunes.
        n_warmup_steps: The median pruner's epochs before it prunes within a trial.
        smoke: Two trials of one batch per configuration: checks the script works (no timing
            meaning).
        out: Write the results as JSON here (default ``$OUT/sweeps.json`` if ``$OUT`` is set).
    """
    fit_args = [
        "--trainer.max_epochs", str(epochs),
        "--data.train_per_class", str(train_per_class),
        "--data.eval_per_class", str(eval_per_class),
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                         "init_args": {"save_dir": "runs"}}]),
    ]  # fmt: skip
    if smoke:
        n_trials, n_startup_trials, n_warmup_steps = 2, 1, 0
        fit_args[1] = "2"  # epochs
        fit_args += ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
        fit_args += ["--trainer.num_sanity_val_steps", "0", "--data.batch_size", "8"]
    tune_malloc()  # as the console scripts do (the sweep's workers do it themselves)
    cores = _cores()
    pruner = {
        "name": "median",
        "n_startup_trials": n_startup_trials,
        "n_warmup_steps": n_warmup_steps,
    }
    emit(f"# Sweep throughput ({SPEC} scaled down)\n\n{machine()}; {cores} cores for the sweep")
    emit(f"fit arguments: {' '.join(fit_args)}\n")
    runs: list[SweepRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plans = [(f"1 worker x {cores} threads", 1, None)]
        if cores > 1:
            plans.append((f"{cores} workers x 1 thread", cores, None))
        plans.append((f"1 worker x {cores} threads, median pruner", 1, pruner))
        for name, workers, chosen in plans:
            runs.append(_sweep(root, name, workers, fit_args, n_trials, chosen))
            emit(f"done: {runs[-1]}")
            partial = {"machine": machine(), "fit_args": fit_args, "runs": _dicts(runs)}
            save(partial, out, "sweeps.json")  # a long run keeps what it measured
    base = runs[0]
    rows = [
        (
            r.name,
            r.complete,
            r.pruned,
            r.failed,
            r.wall_s,
            r.trials_per_hour,
            f"{r.trials_per_hour / base.trials_per_hour:.2f}x",
            f"{r.best_value:.4g}",
            r.epochs_trained,
            f"{base.epochs_trained / max(r.epochs_trained, 1):.2f}x",
            r.trial_seconds,
            f"{base.trial_seconds / max(r.trial_seconds, 1e-9):.2f}x",
        )
        for r in runs
    ]
    header = (
        "configuration", "complete", "pruned", "failed", "wall s", "trials/hour",
        "vs 1 worker", "best value", "epochs", "fewer epochs", "trial s", "less trial time",
    )  # fmt: skip
    emit(table(header, rows))
    results = _dicts(runs)
    save({"machine": machine(), "fit_args": fit_args, "runs": results}, out, "sweeps.json")
    return results


def _dicts(runs: list[SweepRun]) -> list[dict]:
    return [asdict(r) for r in runs]


if __name__ == "__main__":
    CLI(main, as_positional=False)
