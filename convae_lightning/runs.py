"""What a run leaves behind: the one definition the CLI, sweeps and reports share.

A run is a folder ``runs/<name>/version_<N>/`` (``<name>`` = the config's file stem; a sweep's
trials are ``runs/<study>/trial_<n>/``) holding::

    config.yaml        the resolved LightningCLI config (what `convae fit --config` can rerun)
    hparams.yaml       the model's hyper-parameters (CSVLogger)
    metrics.csv        every logged metric, one row per logging step (CSVLogger)
    status.json        running / finished / failed / interrupted, start time and wall time
    checkpoints/       last.ckpt, the best checkpoint, unit{k}.ckpt for stacked runs
    reconstructions/   ReconstructionLogger images (PNG) and audio (WAV)
    {stage}_metrics.csv  `convae validate|test` from one of the run's checkpoints (appended)
    {stage}_config.yaml  the resolved config of that `convae validate|test|predict`
    predictions.npz    `convae predict`
    wandb/             the offline W&B run

Metric keys are ``{stage}/{name}`` for training and ``{stage}/{name}_{view}`` for evaluation,
``view`` being one of :data:`EVAL_VIEWS`; the best value so far of a monitored key ``K`` is logged
as ``K_best``, and a stacked autoencoder's per-depth results as ``{stage}_unit{k}/...``.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "EVAL_VIEWS",
    "STAGES",
    "STATUS_FILE",
    "CheckpointInfo",
    "RunRecord",
    "RunStatus",
    "best_key",
    "checkpoint_run_dir",
    "claim_version_dir",
    "find_runs",
    "flatten_config",
    "latest_checkpoint",
    "latest_run",
    "metric_key",
    "next_version_dir",
    "parse_metric_key",
    "pid_alive",
    "read_status",
    "unit_stage",
    "write_status",
]

#: Stages of a run that log metrics.
STAGES: tuple[str, ...] = ("train", "val", "test")
#: Evaluation views, in the order of the DataModule's val/test loaders (thesis 3.1: stratified
#: ``balanced`` sampling; ``natural`` = every phone once, the literature's usual figure).
EVAL_VIEWS: tuple[str, ...] = ("balanced", "natural")
#: File recording a run's state (written by the CLI, read by sweeps and reports).
STATUS_FILE = "status.json"
#: Stages that evaluate a checkpoint into its run folder, each in its own ``{stage}_metrics.csv``.
EVAL_STAGES: tuple[str, ...] = ("validate", "test")

RunStatus = Literal["running", "finished", "failed", "interrupted", "unknown"]

_KEY = re.compile(r"^(?P<stage>[a-z]+(?:_unit\d+)?)/(?P<rest>.+)$")


def metric_key(stage: str, name: str, view: str | None = None) -> str:
    """``train/loss``, ``val/euclid_balanced``: the one spelling of a logged metric."""
    return f"{stage}/{name}" if view is None else f"{stage}/{name}_{view}"


def best_key(key: str) -> str:
    """Key of the best-so-far value of a monitored metric (``val/euclid_balanced_best``)."""
    return f"{key}_best"


def unit_stage(stage: str, units: int) -> str:
    """Stage prefix of a stacked autoencoder's depth-``units`` results (``val_unit2``)."""
    return f"{stage}_unit{units}"


def parse_metric_key(key: str) -> tuple[str, str, str | None]:
    """``"val/euclid_balanced"`` -> ``("val", "euclid", "balanced")``; view ``None`` when absent.

    Raises:
        ValueError: for a key that is not ``stage/name``.
    """
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"metric key {key!r} is not of the form 'stage/name[_view]'")
    stage, rest = match["stage"], match["rest"]
    for suffix in ("_best", "_step", "_epoch"):  # Lightning's and ours; not part of the name
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
    for view in EVAL_VIEWS:
        if rest.endswith(f"_{view}"):
            return stage, rest[: -len(view) - 1], view
    return stage, rest, None


# ------------------------------------------------------------------------------- layout
def next_version_dir(root: str | os.PathLike, name: str, prefix: str = "version") -> Path:
    """``root/name/{prefix}_N`` with N one past the highest existing (not created)."""
    folder = Path(root) / name
    numbers = [_version_number(p.name, prefix) for p in folder.glob(f"{prefix}_*")]
    numbers = [n for n in numbers if n is not None]
    return folder / f"{prefix}_{max(numbers, default=-1) + 1}"


def latest_run(root: str | os.PathLike, name: str, prefix: str = "version") -> Path | None:
    """The highest-numbered ``root/name/{prefix}_N`` folder, or ``None``."""
    folder = Path(root) / name
    found = [(_version_number(p.name, prefix), p) for p in folder.glob(f"{prefix}_*")]
    found = [(n, p) for n, p in found if n is not None and p.is_dir()]
    return max(found)[1] if found else None


def claim_version_dir(root: str | os.PathLike, name: str, prefix: str = "version") -> Path:
    """Create and return the next free ``root/name/{prefix}_N``.

    ``mkdir`` fails when the folder exists, so two runs of one config started at once get two
    folders (each takes the next number when it loses the race).
    """
    while True:
        folder = next_version_dir(root, name, prefix)
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder


def checkpoint_run_dir(checkpoint: str | os.PathLike) -> Path | None:
    """The run folder holding ``checkpoint`` (``<run>/checkpoints/x.ckpt``), or ``None``."""
    path = Path(checkpoint)
    folder = path.parent.parent
    return folder if path.parent.name == "checkpoints" and _is_run_dir(folder) else None


def latest_checkpoint(
    root: str | os.PathLike, name: str, filename: str = "last.ckpt", prefix: str = "version"
) -> Path | None:
    """``checkpoints/<filename>`` of the highest-numbered ``root/name/{prefix}_N`` holding one."""
    folder = Path(root) / name
    found = []
    for run in folder.glob(f"{prefix}_*"):
        number = _version_number(run.name, prefix)
        if number is not None and (run / "checkpoints" / filename).is_file():
            found.append((number, run / "checkpoints" / filename))
    return max(found)[1] if found else None


def _version_number(folder_name: str, prefix: str) -> int | None:
    head, _, tail = folder_name.rpartition("_")
    return int(tail) if head == prefix and tail.isdigit() else None


def find_runs(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders matching paths or globs (``runs/weak_stack/version_*``), sorted, unique.

    A pattern naming a folder that holds run folders (``runs/weak_stack``, a study folder) gives
    every run below it: a run folder is one holding ``config.yaml``, ``metrics.csv`` or
    ``status.json``.
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(os.fspath(pattern))) or [os.fspath(pattern)]
        for match in map(Path, matches):
            if not match.is_dir():
                continue
            if _is_run_dir(match):
                found[match.resolve()] = None
            else:
                for child in sorted(match.iterdir()):
                    if child.is_dir() and _is_run_dir(child):
                        found[child.resolve()] = None
    return list(found)


def _is_run_dir(path: Path) -> bool:
    return any((path / f).exists() for f in ("config.yaml", "metrics.csv", STATUS_FILE))


# ------------------------------------------------------------------------------- status
def write_status(run_dir: str | os.PathLike, status: RunStatus, **fields: Any) -> None:
    """Record a run's state atomically, keeping fields written earlier (``started``, ...)."""
    path = Path(run_dir) / STATUS_FILE
    record = read_status(run_dir) or {}
    record.update(fields, status=status, updated=time.time())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``status.json`` as a dict, or ``None`` when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------- config
def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"init_args": {"unpool": "switch"}}}`` -> ``{"model.init_args.unpool": ...}``.

    Lists stay values (``trainer.callbacks`` is one entry), so keys are the CLI's own
    ``--model.init_args.unpool`` spellings.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


# ------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (read without building a model)."""

    path: Path
    epoch: int | None
    global_step: int | None
    meta: dict[str, Any]  # the model's checkpoint["convae"] self-description

    @property
    def kind(self) -> str | None:
        return self.meta.get("kind")

    @property
    def active_units(self) -> int | None:
        return self.meta.get("num_active_units")


@dataclass
class RunRecord:
    """A run folder read back: config, metrics, checkpoints and status.

    Build with :meth:`load`; missing files give empty fields (``problems`` says which), never an
    exception, so a report can show a broken or running run beside finished ones.
    """

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    #: ``validate``/``test`` rows from ``{stage}_metrics.csv``, each with its ``checkpoint``.
    evaluations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    status_record: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: str | os.PathLike, read_checkpoints: bool = True) -> RunRecord:
        """Read ``config.yaml``, ``metrics.csv`` (and ``{stage}_metrics.csv``), ``status.json``
        and the checkpoints' metadata."""
        path = Path(run_dir)
        record = cls(path=path)
        if not path.is_dir():
            record.problems.append(f"{path}: no such run folder")
            return record
        record.config = _read_yaml(path / "config.yaml", record.problems)
        record.rows = _read_metrics(path / "metrics.csv", record.problems)
        for stage in EVAL_STAGES:
            file = path / f"{stage}_metrics.csv"
            if file.is_file():
                rows = _read_metrics(file, record.problems, ("checkpoint",))
                record.evaluations[stage] = rows
        record.status_record = read_status(path) or {}
        if read_checkpoints:
            for ckpt in sorted((path / "checkpoints").glob("*.ckpt")):
                info = _checkpoint_info(ckpt, record.problems)
                if info is not None:
                    record.checkpoints[ckpt.stem] = info
        return record

    # -------------------------------------------------------------------- identity
    @property
    def name(self) -> str:
        """The run's group: config name or study (``runs/<name>/version_N``)."""
        return self.path.parent.name

    @property
    def version(self) -> str:
        """``version_N`` or ``trial_N``."""
        return self.path.name

    @property
    def status(self) -> RunStatus:
        """``finished``, ``running``, ``failed``, ``interrupted`` or ``unknown``.

        A ``running`` run whose process is gone (on this machine) reads as ``interrupted``.
        """
        status = self.status_record.get("status", "unknown")
        pid, host = self.status_record.get("pid"), self.status_record.get("host")
        if status == "running" and pid and host == os.uname().nodename and not pid_alive(int(pid)):
            return "interrupted"
        return status

    @property
    def wall_time_s(self) -> float | None:
        return self.status_record.get("wall_time_s")

    def flat_config(self) -> dict[str, Any]:
        return flatten_config(self.config)

    def config_value(self, dotted: str, default: Any = None) -> Any:
        """A config value by its CLI key, e.g. ``model.init_args.unpool``."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    # --------------------------------------------------------------------- metrics
    @property
    def metric_keys(self) -> list[str]:
        keys = {k for row in self.rows for k in row if k not in ("epoch", "step")}
        return sorted(keys)

    def series(self, key: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of every row that logged ``key`` (epoch-level keys: once each)."""
        out = []
        for row in self.rows:
            value = row.get(key)
            if value is not None and math.isfinite(value):
                out.append((int(row.get("epoch", -1)), value))
        return out

    def final(self, key: str) -> float | None:
        """The last logged value of ``key``."""
        values = self.series(key)
        return values[-1][1] if values else None

    def best(self, key: str, mode: Literal["min", "max"] = "min") -> float | None:
        """The best logged value of ``key`` (``min`` or ``max``)."""
        values = [v for _, v in self.series(key)]
        if not values:
            return None
        return min(values) if mode == "min" else max(values)

    def evaluation(self, stage: str = "test", checkpoint: str | None = None) -> dict[str, Any]:
        """The latest ``convae validate|test`` results of the run (of ``checkpoint``, by file
        name or stem, when given): ``{"test/acc48_balanced": ..., "checkpoint": "last.ckpt"}``;
        empty when there are none."""
        rows = self.evaluations.get(stage, [])
        if checkpoint is not None:
            rows = [r for r in rows if checkpoint in (r.get("checkpoint"), _stem(r))]
        return dict(rows[-1]) if rows else {}

    @property
    def epochs_trained(self) -> int:
        """Training epochs completed (from metrics.csv; 0 when none were logged)."""
        epochs = [int(row["epoch"]) for row in self.rows if "epoch" in row]
        return max(epochs) + 1 if epochs else 0

    def iter_images(self, folder: str = "reconstructions") -> Iterator[Path]:
        """Images the run wrote (reconstructions by default), oldest first."""
        yield from sorted((self.path / folder).glob("*.png"), key=lambda p: p.stat().st_mtime)


def _stem(row: Mapping[str, Any]) -> str | None:
    name = row.get("checkpoint")
    return Path(name).stem if isinstance(name, str) else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as alive; the sweeps'
    liveness checks tell those apart through ``/proc``)."""
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by another user
    return True


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        problems.append(f"{path.name} missing")
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        problems.append(f"{path.name} unreadable: {error}")
        return {}
    return data if isinstance(data, dict) else {}


def _read_metrics(
    path: Path, problems: list[str], text_columns: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Rows of a metrics CSV as floats (``text_columns`` kept as strings); blanks left out."""
    if not path.is_file():
        problems.append(f"{path.name} missing")
        return []
    rows: list[dict[str, Any]] = []
    try:
        with open(path, newline="") as fh:
            for raw in csv.DictReader(fh):
                row: dict[str, Any] = {}
                for key, text in raw.items():
                    if key is None or text in (None, ""):
                        continue
                    if key in text_columns:
                        row[key] = text
                        continue
                    try:
                        row[key] = float(text)
                    except ValueError:
                        continue
                rows.append(row)
    except (OSError, csv.Error) as error:
        problems.append(f"{path.name} unreadable: {error}")
    return rows


def _checkpoint_info(path: Path, problems: list[str]) -> CheckpointInfo | None:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # a truncated or foreign file: reported, not fatal
        problems.append(f"checkpoints/{path.name} unreadable: {type(error).__name__}")
        return None
    if not isinstance(ckpt, dict):
        problems.append(f"checkpoints/{path.name} is not a Lightning checkpoint")
        return None
    return CheckpointInfo(path, ckpt.get("epoch"), ckpt.get("global_step"), ckpt.get("convae", {}))
