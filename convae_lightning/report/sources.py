"""What a report reads: an Optuna study's trials and the run folders they point at.

Everything comes from the runs' own files (through :class:`~convae_lightning.runs.RunRecord`) and
the study's storage, never from the W&B API, so reports work offline and on runs logged without
W&B. A run's state in the report combines its trial's state and its ``status.json``:
``finished`` runs count in the statistics; ``running``, ``pruned``, ``failed``, ``interrupted``
and ``missing`` ones are listed as such.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convae_lightning.runs import RunRecord, find_runs

__all__ = [
    "STUDY_FILES",
    "RunEntry",
    "StudyInfo",
    "TrialInfo",
    "collect",
    "load_study",
    "study_storage_in",
]

#: Storage files a study folder ``runs/<study>/`` may hold, in the order they are looked for:
#: SQLite (one worker), then journal files (``convae sweep --workers N`` writes ``journal.log``).
STUDY_FILES: tuple[str, ...] = ("study.db", "journal.log", "study.journal")
#: States counted in a condition's statistics.
COUNTED = "finished"


@dataclass(frozen=True)
class TrialInfo:
    """The parts of an Optuna trial a report shows (see the sweeps' user-attribute contract)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    user_attrs: dict[str, Any]
    value: float | None
    duration_s: float | None

    @property
    def seed(self) -> Any:
        return self.user_attrs.get("seed", self.params.get("seed_everything"))


@dataclass
class StudyInfo:
    """A loaded study: its name, where it is stored, and its trials."""

    name: str
    storage: str  # URL or journal file, for display
    study: Any  # optuna.Study
    folder: Path | None  # runs/<study>/ when known
    trials: list[TrialInfo] = field(default_factory=list)
    #: Studies reported beside this one (``convae report runs/a runs/b``): their runs are in the
    #: table, while this, the first, names the report and gives its objective.
    companions: list[StudyInfo] = field(default_factory=list)

    @property
    def objective_metric(self) -> str | None:
        for trial in self.trials:
            if trial.user_attrs.get("objective_metric"):
                return str(trial.user_attrs["objective_metric"])
        objective = (self.study.user_attrs.get("spec") or {}).get("objective")
        if isinstance(objective, dict) and objective.get("metric"):
            return str(objective["metric"])
        return None

    @property
    def directions(self) -> list[str]:
        return [d.name.lower() for d in self.study.directions]

    def param_order(self) -> dict[str, list[Any]]:
        """Each parameter's choices in the order the search space lists them (categoricals)."""
        import optuna

        order: dict[str, list[Any]] = {}
        for study in (self, *self.companions):
            for trial in study.study.get_trials(deepcopy=False):
                for key, dist in trial.distributions.items():
                    if isinstance(dist, optuna.distributions.CategoricalDistribution):
                        known = order.setdefault(key, [])
                        known += [c for c in dist.choices if c not in known]
        return order


@dataclass
class RunEntry:
    """One run in a report: its record, its trial (for sweeps) and, for per-depth views, a depth.

    ``path`` is where the run is (or was expected): a trial whose folder is gone keeps its path.
    """

    path: Path
    record: RunRecord
    trial: TrialInfo | None = None

    @property
    def status(self) -> str:
        """``finished``, ``running``, ``pruned``, ``failed``, ``interrupted`` or ``missing``."""
        return self.status_detail[0]

    @property
    def status_detail(self) -> tuple[str, str]:
        """The status and why (a trial's failure reason, the missing file, ...)."""
        record, trial = self.record, self.trial
        if not self.path.is_dir():
            return "missing", "no run folder"
        run_status = record.status
        if trial is not None:
            if trial.state in ("RUNNING", "WAITING"):
                if run_status == "interrupted":
                    return "interrupted", "its process is gone; the sweep will retry it"
                return "running", f"trial {trial.number} running"
            if trial.state == "FAIL":
                return "failed", str(trial.user_attrs.get("fail_reason", "trial failed"))
            if trial.state == "PRUNED":
                return "pruned", f"stopped by the pruner after {record.epochs_trained} epochs"
        if run_status in ("running", "failed", "interrupted"):
            reason = record.status_record.get("error") or record.status_record.get("reason") or ""
            return run_status, str(reason)
        if "metrics.csv missing" in record.problems:
            return "missing", "metrics.csv missing"
        return COUNTED, ""

    @property
    def counted(self) -> bool:
        """Whether this run's values enter its condition's statistics."""
        return self.status == COUNTED

    @property
    def seed(self) -> Any:
        if self.trial is not None and self.trial.seed is not None:
            return self.trial.seed
        return self.record.config.get("seed_everything")

    @property
    def wall_time_s(self) -> float | None:
        if self.record.wall_time_s is not None:
            return float(self.record.wall_time_s)
        if self.trial is not None:
            value = self.trial.user_attrs.get("wall_time_s", self.trial.duration_s)
            return None if value is None else float(value)
        return None


# ------------------------------------------------------------------------------- studies
def study_storage_in(folder: str | os.PathLike) -> Path | None:
    """The storage file of a study folder (see :data:`STUDY_FILES`), if any."""
    for name in STUDY_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _storage_for(url_or_path: str) -> Any:
    import optuna

    if "://" not in url_or_path:  # not a URL: a journal file
        backend = optuna.storages.journal.JournalFileBackend(url_or_path)
        return optuna.storages.JournalStorage(backend)
    return url_or_path


def load_study(
    storage: str, study_name: str | None = None, folder: Path | None = None
) -> StudyInfo:
    """Load a study from a storage URL (or a journal file); the name may be left out when the
    storage holds one study, or when a study is named after its folder.

    Raises:
        ValueError: for an unreachable storage or an unknown study name, listing the names there.
    """
    import optuna

    file = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else storage
    if "://" not in file and not Path(file).is_file():  # Optuna would create an empty one
        raise ValueError(f"storage {storage!r}: no such file {file!r}")
    try:
        backend = _storage_for(storage)
        names = optuna.get_all_study_names(storage=backend)
    except Exception as error:  # sqlalchemy, driver and file errors alike: the user's to fix
        raise ValueError(
            f"storage {storage!r}: cannot be read ({type(error).__name__}: {error})"
        ) from None
    if study_name is None:
        if folder is not None and folder.name in names:
            study_name = folder.name
        elif len(names) == 1:
            study_name = names[0]
        else:
            raise ValueError(
                f"storage {storage!r} holds {len(names)} studies {names}; choose one with "
                "--study_name"
            )
    if study_name not in names:
        raise ValueError(f"study {study_name!r} is not in {storage!r}; studies there: {names}")
    study = optuna.load_study(study_name=study_name, storage=backend)
    if folder is None:
        folder = _folder_of(storage, study_name)
    trials = []
    for trial in study.get_trials(deepcopy=False):
        duration = None
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
        value = trial.values[0] if trial.values else None
        info = TrialInfo(
            trial.number,
            trial.state.name,
            dict(trial.params),
            dict(trial.user_attrs),
            value,
            duration,
        )
        trials.append(info)
    return StudyInfo(study_name, storage, study, folder, trials)


def _folder_of(storage: str, study_name: str) -> Path | None:
    """``runs/<study>/`` for a storage file kept there (the sweeps' default), else ``None``."""
    path = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else storage
    if "://" in path:
        return None
    folder = Path(path).parent
    return folder if folder.name == study_name else None


def _trial_run_dir(trial: TrialInfo, study: StudyInfo) -> Path | None:
    """Where a trial's run is: in the study folder being reported, else ``run_dir`` from here,
    else ``run_dir_abs``.

    The study folder comes first: a copy of a study (``docs/results/<study>/``, say) reports its
    own runs even while the folder it was copied from still exists.
    """
    attrs = trial.user_attrs
    candidates = []
    named = attrs.get("run_dir") or attrs.get("run_dir_abs")
    if named and study.folder is not None:
        candidates.append(study.folder / Path(named).name)
    if attrs.get("run_dir"):
        candidates.append(Path(attrs["run_dir"]))
    if attrs.get("run_dir_abs"):
        candidates.append(Path(attrs["run_dir_abs"]))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0] if candidates else None


# ------------------------------------------------------------------------------- collect
def collect(
    paths: Sequence[str | os.PathLike] = (),
    storage: str | None = None,
    study_name: str | None = None,
) -> tuple[StudyInfo | None, list[RunEntry]]:
    """The study (if any) and every run of a report.

    ``paths`` are run folders, globs, folders of runs, or study folders ``runs/<study>/`` (whose
    storage file is found there); ``storage``/``study_name`` name a study directly. Several
    study folders are reported together (one study split in two specs, e.g. Table 5 and its
    literal reading): the first is the report's study, the others its ``companions``.

    Raises:
        ValueError: for a path that matches nothing, a study folder beside ``storage``, or a
            study that cannot be read.
    """
    study_folders, run_patterns = [], []
    for path in paths:
        if Path(path).is_dir() and study_storage_in(path) is not None:
            study_folders.append(Path(path))
        else:
            run_patterns.append(path)
    if study_folders and storage:
        raise ValueError(f"give study folders or --storage, not both; got {study_folders[0]}")
    if study_name and len(study_folders) > 1:
        raise ValueError("--study_name names the study of one folder; got several folders")
    studies = []
    if storage:
        studies.append(load_study(storage, study_name))
    elif study_name and not study_folders:
        raise ValueError("--study_name needs --storage URL or a study folder (runs/<study>/)")
    for folder in study_folders:
        file = study_storage_in(folder)
        assert file is not None
        url = f"sqlite:///{file}" if file.suffix == ".db" else str(file)
        studies.append(load_study(url, study_name, folder=folder))
    study = studies[0] if studies else None
    if study is not None:
        study.companions = studies[1:]

    entries: dict[Path, RunEntry] = {}
    folders = []
    for each in studies:
        for trial in each.trials:
            run_dir = _trial_run_dir(trial, each)
            if run_dir is None:
                continue  # a trial that never got a run folder (e.g. waiting): nothing to show
            key = run_dir.resolve()
            entries[key] = RunEntry(run_dir, RunRecord.load(run_dir), trial)
        if each.folder is not None:  # run folders of the study that no trial names
            folders.append(each.folder)
    run_patterns += folders
    for pattern in run_patterns:
        found = find_runs([pattern])
        if not found and pattern not in folders:
            raise ValueError(f"{os.fspath(pattern)!r}: no run folders there (nor matching it)")
        for run_dir in found:
            entries.setdefault(run_dir, RunEntry(run_dir, RunRecord.load(run_dir)))
    if not entries and study is None:
        raise ValueError("nothing to report: give run folders, globs or a study")
    return study, sorted(entries.values(), key=_entry_order)


def _entry_order(entry: RunEntry) -> tuple:
    number = entry.trial.number if entry.trial is not None else -1
    return (str(entry.path.parent), number, _natural(entry.path.name))


def _natural(name: str) -> tuple:
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, -1)
