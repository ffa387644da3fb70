"""Trial references: a choice whose value is a file of another study's trial, found when the
trial that needs it starts (Table 5's classifiers take Table 4's autoencoder checkpoints).

The other study is read where its spec's command keeps it (its ``storage``, else
``runs/<study>/journal.log`` or ``runs/<study>/study.db``); the trial is the COMPLETE one whose
parameters include the reference's ``where`` values and whose seed is the running trial's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from convae_lightning.sweeps.spec import SEED_KEY, TrialReference
from convae_lightning.sweeps.storage import JOURNAL_NAME, RUNS_ROOT, SQLITE_NAME, open_storage

__all__ = ["ReferenceMissingError", "resolve", "storage_of"]


class ReferenceMissingError(LookupError):
    """The referred study, trial or file does not exist (yet): run the other sweep first."""


def storage_of(reference: TrialReference) -> str:
    """The other study's storage URL or journal path.

    Raises:
        ReferenceMissingError: no storage for it here.
    """
    if reference.storage:
        return reference.storage
    folder = RUNS_ROOT / reference.study
    if (folder / JOURNAL_NAME).exists():
        return str(folder / JOURNAL_NAME)
    if (folder / SQLITE_NAME).exists():
        return f"sqlite:///{folder / SQLITE_NAME}"
    raise ReferenceMissingError(
        f"study {reference.study!r} not found (no {folder / SQLITE_NAME} or "
        f"{folder / JOURNAL_NAME}); run `convae sweep {reference.spec}` first"
    )


def resolve(reference: TrialReference, seed: int) -> str:
    """The path of the referred file for a trial of seed ``seed``.

    Raises:
        ReferenceMissingError: naming the study, the condition and seed, or the missing file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study = optuna.load_study(
                study_name=reference.study, storage=open_storage(storage_of(reference))
            )
        except KeyError:
            raise ReferenceMissingError(
                f"study {reference.study!r} not found in {storage_of(reference)}; run "
                f"`convae sweep {reference.spec}` first"
            ) from None
    wanted = {**reference.where, SEED_KEY: seed}
    found = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(_same(trial.params.get(key), value) for key, value in wanted.items())
    ]
    if not found:
        raise ReferenceMissingError(
            f"{reference.describe(seed)}: study {reference.study!r} has no COMPLETE trial of "
            f"that condition and seed; run (or finish) `convae sweep {reference.spec}` first"
        )
    trial = found[-1]  # the latest, should a condition have completed twice
    run_dir = Path(trial.user_attrs.get("run_dir_abs") or trial.user_attrs.get("run_dir", ""))
    matches = sorted(run_dir.glob(reference.file))
    if len(matches) != 1:
        what = "no" if not matches else f"{len(matches)} files match, not one"
        raise ReferenceMissingError(
            f"{reference.describe(seed)}: trial {trial.number} ({run_dir}) has {what} "
            f"{reference.file}"
        )
    return str(matches[0])


def _same(stored: object, wanted: object) -> bool:
    """Equal and of the same type (``True`` is not the choice ``1``)."""
    return stored == wanted and type(stored) is type(wanted)
