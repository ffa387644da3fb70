"""Who runs a trial, and what happens to its trial when it dies.

Every claimed trial records its worker (``worker`` = ``pid@host``, ``worker_started`` = the
process's start time, so a recycled pid is not mistaken for the worker). Between trials each
worker fails the RUNNING trials of dead workers on its own host and re-enqueues them
(:class:`RetryDeadTrial`): the journal file has no heartbeat, and for RDB storages this is faster
than waiting for one. Trials of other hosts are left to Optuna's heartbeat (RDB only):
:class:`Heartbeat` beats while a trial runs, and ``optuna.storages.fail_stale_trials`` fails the
silent ones and calls the same :class:`RetryDeadTrial`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from convae_lightning.runs import pid_alive

__all__ = ["Heartbeat", "RetryDeadTrial", "WorkerIdentity", "reap_dead_trials"]

log = logging.getLogger(__name__)

#: A RUNNING trial with no worker recorded this long after its start was orphaned by a worker
#: that died between claiming it and writing its identity (milliseconds apart).
ORPHAN_AFTER_S = 120.0
#: Linux's /proc gives process states and start times; elsewhere only "does the pid exist".
_HAS_PROC = Path("/proc/self/stat").exists()


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux); ``None`` where the process
    is gone, a zombie (dead, not yet reaped by its parent), or ``/proc`` is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class WorkerIdentity:
    """A worker process: pid, host and start time (pid reuse is not the same worker)."""

    pid: int
    host: str
    started: int | None

    @classmethod
    def current(cls) -> WorkerIdentity:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), process_start_ticks(pid))

    @property
    def label(self) -> str:
        return f"{self.pid}@{self.host}"

    def attrs(self) -> dict[str, Any]:
        return {"worker": self.label, "worker_started": self.started}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> WorkerIdentity | None:
        pid, _, host = str(attrs.get("worker", "")).partition("@")
        if not pid.isdigit() or not host:
            return None
        return cls(int(pid), host, attrs.get("worker_started"))

    def is_dead(self) -> bool | None:
        """``True``/``False`` for a worker of this host; ``None`` (unknown) for other hosts."""
        if self.host != socket.gethostname():
            return None
        if not _HAS_PROC:
            return not pid_alive(self.pid)
        started = process_start_ticks(self.pid)
        if started is None:
            return True  # gone, or a zombie
        return self.started is not None and started != self.started  # a reused pid


class RetryDeadTrial:
    """Re-enqueue a trial whose worker died, with the same parameters, up to ``max_retries``.

    Like ``optuna.storages.RetryHeartbeatStaleTrialCallback``, but the retry starts with fresh
    user attributes (only its condition, seed and retry history): the copy that callback makes
    would carry the dead trial's ``run_dir`` and ``worker`` into a trial that never ran there.

    Args:
        max_retries: Retries per original trial; 0 never retries.
    """

    def __init__(self, max_retries: int = 2) -> None:
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.user_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retries:
            log.warning(
                "trial %d: worker died; retried %d times already", trial.number, len(history) - 1
            )
            return
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        keep = {k: trial.user_attrs[k] for k in ("condition", "seed") if k in trial.user_attrs}
        study.enqueue_trial(
            params, user_attrs={**keep, "retry_of": trial.number, "retry_history": history}
        )


def reap_dead_trials(
    study: optuna.Study, storage: BaseStorage, retry: RetryDeadTrial, me: WorkerIdentity
) -> list[FrozenTrial]:
    """Fail and retry the RUNNING trials of dead workers; the heartbeat's stale ones too.

    Safe to run in every worker at once: only the process whose FAIL transition succeeds (the
    storage refuses to finish a trial twice) records the reason and enqueues the retry.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB with heartbeat only; a no-op otherwise
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _death(trial, me)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker got there first (or the trial just finished)
        reaped.append(trial)
        log.warning("trial %d: %s; retrying", trial.number, reason)
        retry(study, storage.get_trial(trial._trial_id))
    return reaped


def _death(trial: FrozenTrial, me: WorkerIdentity) -> str | None:
    worker = WorkerIdentity.from_attrs(trial.user_attrs)
    if worker is None:
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        if time.time() - started > ORPHAN_AFTER_S:
            return "orphaned: no worker recorded it"
        return None
    if worker.pid == me.pid and worker.host == me.host:
        return None
    if worker.is_dead():
        return f"worker {worker.label} died"
    return None


class Heartbeat:
    """Beat for a trial every ``interval`` s in a thread, while the ``with`` block runs.

    Optuna's own heartbeat lives inside ``Study.optimize``; the runner claims trials itself (to
    run each grid condition once), so it beats with the storage's public ``record_heartbeat``.
    """

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.interval: int | None = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.interval is not None:
            self.storage.record_heartbeat(self.trial_id)  # type: ignore[attr-defined]
            self._thread = threading.Thread(target=self._beat, name="sweep-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)  # type: ignore[attr-defined]
            except Exception as error:  # a network blip must not kill the trial; next beat retries
                log.warning("heartbeat of trial id %d failed: %s", self.trial_id, error)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
