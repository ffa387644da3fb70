"""Optuna sweeps over run configs: ``convae sweep sweeps/unpooling.yaml``.

A spec (``sweeps/*.yaml``, :mod:`~convae_lightning.sweeps.spec`) names base configs, fixed
overrides, the search space and the objective; each trial is a real ``convae fit`` run in
``runs/<study>/trial_<n>/`` (:mod:`~convae_lightning.sweeps.trial`); the study lives in SQLite,
a journal file (local workers) or any RDB server (several machines). See ``docs/sweeps.md``.
"""

from convae_lightning.sweeps.command import main, sweep
from convae_lightning.sweeps.parse import load_spec
from convae_lightning.sweeps.runner import Sweep, TrialContext, TrialResult, run_worker
from convae_lightning.sweeps.spec import SpecError, SweepSpec

__all__ = [
    "SpecError",
    "Sweep",
    "SweepSpec",
    "TrialContext",
    "TrialResult",
    "load_spec",
    "main",
    "run_worker",
    "sweep",
]
