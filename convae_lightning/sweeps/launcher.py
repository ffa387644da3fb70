"""``--workers N``: N local worker processes on one study, each the same command with one worker.

A worker is ``python -m convae_lightning.sweeps SPEC --storage URL --study-name NAME --workers 1
[-- EXTRA]``: exactly what a user starts on another machine to join the study. Workers run in
their own sessions, with their output in ``runs/<study>/worker_<k>.log``; this process reports
finished trials as they land in the storage, forwards Ctrl-C to the workers once (they record the
running trials as interrupted and exit) and kills them on a second Ctrl-C.

The workers share the machine's cores: each gets ``cores // workers`` intra-op threads
(``OMP_NUM_THREADS``, which torch reads at start-up) unless the user set ``OMP_NUM_THREADS``.
Without the split, N workers each start as many threads as there are cores and oversubscribe them
(benchmarks/sweeps.py measures the difference).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from convae_lightning.sweeps.runner import Progress, StopSweep, Sweep, progress

__all__ = ["run_local_workers", "worker_command", "worker_environment"]

#: Seconds between looks at the storage for finished trials.
REPORT_EVERY_S = 2.0


def worker_command(sweep: Sweep) -> list[str]:
    """The command line of one local worker."""
    command = [sys.executable, "-m", "convae_lightning.sweeps", str(sweep.spec.path)]
    command += ["--storage", sweep.storage_url, "--study-name", sweep.study_name, "--workers", "1"]
    if sweep.n_trials is not None:
        command += ["--n-trials", str(sweep.n_trials)]
    return [*command, "--", *sweep.extra_args] if sweep.extra_args else command


def worker_environment(workers: int) -> dict[str, str]:
    """The workers' environment: this one, with the cores split between the workers."""
    environment = dict(os.environ)
    if "OMP_NUM_THREADS" not in environment:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        environment["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // workers))
    return environment


def run_local_workers(
    sweep: Sweep,
    workers: int,
    study: optuna.Study,
    on_trial: Callable[[FrozenTrial], None],
    on_exit: Callable[[int, int, Path], None],
) -> Progress:
    """Start ``workers`` worker processes, report trials until they all exit.

    Args:
        on_trial: Called once for every trial that finishes while the workers run.
        on_exit: Called with (worker index, exit code, log file) for each worker that failed.

    Raises:
        StopSweep: after Ctrl-C, once the workers have stopped.
    """
    command, environment = worker_command(sweep), worker_environment(workers)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    processes: list[tuple[subprocess.Popen, Path]] = []
    for index in range(workers):
        log_path = sweep.folder / f"worker_{index}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,  # Ctrl-C reaches them through us, once
            )
        processes.append((process, log_path))

    def report() -> None:
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in seen:
                seen.add(trial.number)
                on_trial(trial)

    try:
        # poll() every worker (it also reaps a dead one: a zombie's pid still looks alive)
        while [process.poll() for process, _ in processes].count(None):
            report()
            time.sleep(REPORT_EVERY_S)
    except KeyboardInterrupt:
        _stop(processes)
        report()
        raise StopSweep("interrupted by SIGINT") from None
    report()
    for index, (process, log_path) in enumerate(processes):
        if process.returncode not in (0, None):
            on_exit(index, process.returncode, log_path)
    return progress(study, sweep)


def _stop(processes: list[tuple[subprocess.Popen, Path]]) -> None:
    """SIGINT to every worker; wait for them; a second Ctrl-C kills them."""
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    try:
        for process, _ in processes:
            process.wait()
    except KeyboardInterrupt:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()  # their RUNNING trials are failed and retried by the next command
        for process, _ in processes:
            process.wait()
