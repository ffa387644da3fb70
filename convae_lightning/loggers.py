"""Loggers: W&B offline by default, and a CSV writer that survives resumes and kills."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from typing_extensions import override

__all__ = ["OfflineWandbLogger", "RunMetricsWriter", "attach_metrics_writer", "wandb_run_id"]

_RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)$")


class OfflineWandbLogger(WandbLogger):
    """A ``WandbLogger`` that runs offline unless told otherwise, and leaves the process clean.

    Lightning's ``WandbLogger(offline=True)`` sets ``WANDB_MODE`` for the whole process, so a
    later run in the same process (a sweep's next trial) silently inherits it. This logger passes
    the mode to ``wandb.init`` instead and finishes its run in ``finalize``, so every run starts
    fresh. Offline runs land in ``<save_dir>/wandb/offline-run-*``, print one line saying where
    (instead of W&B's 30-line summary), and can be uploaded later with ``wandb sync``.

    Args:
        offline: ``True`` (default) keeps everything local; ``False`` logs online (needs
            ``wandb login``). ``None`` follows ``$WANDB_MODE`` (``online`` switches it on).
        save_dir: Folder of the W&B files (the CLI sets it to the run directory).
        project: W&B project.
        name: Run name (default: W&B's).
        **kwargs: Passed to ``WandbLogger`` / ``wandb.init`` (``group``, ``tags``, ``job_type``,
            ``id`` with ``resume="allow"``, ...).
    """

    def __init__(
        self,
        offline: bool | None = True,
        save_dir: str = "runs",
        project: str = "convae-lightning",
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") not in ("online", "run")
        # jsonargparse fills every wandb.init keyword with None; None must not override our mode
        # (and wandb >= 0.22 warns about a mere `anonymous=None`).
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        kwargs.setdefault("mode", "offline" if offline else "online")
        super().__init__(save_dir=save_dir, project=project, name=name, offline=False, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        if offline and "settings" not in kwargs:
            import wandb

            # Offline, W&B's banner and 30-line summary say nothing the run folder does not.
            self._wandb_init["settings"] = wandb.Settings(silent=True)
        self.is_offline = offline

    def set_save_dir(self, save_dir: str | os.PathLike) -> None:
        """Move the run's files (before the run starts). Made absolute: W&B's service process
        resolves relative folders against its own working directory, not the caller's."""
        self._save_dir = os.path.abspath(save_dir)
        self._wandb_init["dir"] = self._save_dir

    def resume(self, run_id: str) -> None:
        """Continue the W&B run ``run_id`` (before the run starts), e.g. when training resumes."""
        self._wandb_init.update(id=run_id, resume="allow")

    @property
    @override
    def experiment(self) -> Any:
        if self._experiment is None and self._save_dir:
            os.makedirs(self._save_dir, exist_ok=True)  # wandb falls back to /tmp otherwise
        return super().experiment

    @override
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:
            run_dir = getattr(self._experiment.settings, "sync_dir", None)
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None
            if self.is_offline and run_dir:
                _print_sync_hint(run_dir)


@rank_zero_only
def _print_sync_hint(run_dir: str) -> None:
    shown = os.path.relpath(run_dir) if not os.path.relpath(run_dir).startswith("..") else run_dir
    print(f"W&B offline run saved; upload it with: wandb sync {shown}")


def wandb_run_id(run_dir: str | os.PathLike) -> str | None:
    """Id of the newest W&B run stored in ``run_dir/wandb/`` (to resume it), or ``None``."""
    folders = sorted(p.name for p in (Path(run_dir) / "wandb").glob("*run-*") if p.is_dir())
    ids = [m["id"] for m in map(_RUN_FOLDER.match, folders) if m]
    return ids[-1] if ids else None


class RunMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, made safe for runs that resume and processes that get killed.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts (a resumed run would
    lose its history) and rewrites the file in place when a new column appears (a kill then
    leaves it truncated). This one appends to what is there, writes every flush atomically
    (temporary file, ``fsync``, ``os.replace``) and counts the rows on disk, so a resumed run can
    drop the rows logged after its checkpoint (:meth:`truncate`).

    Args:
        log_dir: The run folder.
        metrics_file: CSV file name (``metrics.csv``; ``test_metrics.csv`` for ``convae test``).
        hparams_file: YAML file for the hyper-parameters, or ``None`` to write none.
        constants: Columns with one value for every row (e.g. ``{"checkpoint": "last.ckpt"}``).
    """

    def __init__(
        self,
        log_dir: str,
        metrics_file: str = "metrics.csv",
        hparams_file: str | None = "hparams.yaml",
        constants: Mapping[str, str] | None = None,
    ) -> None:
        self.NAME_METRICS_FILE = metrics_file
        self.hparams_file = hparams_file
        self.constants = dict(constants or {})
        super().__init__(log_dir)
        header, rows = self._read()
        self.metrics_keys = sorted(header)
        self.rows_written = len(rows)

    @override
    def _check_log_dir_exists(self) -> None:
        """Keep what the folder holds (Lightning deletes ``metrics.csv`` here)."""

    @override
    def log_hparams(self, params: dict[str, Any]) -> None:
        if self.hparams_file is not None:
            self.NAME_HPARAMS_FILE = self.hparams_file
            super().log_hparams(params)

    @override
    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics_dict, step)
        self.metrics[-1].update(self.constants)

    @override
    def save(self) -> None:
        if not self.metrics:
            return
        header = self._header()
        self._record_new_keys()
        if header and set(self.metrics_keys) <= set(header):
            # Same columns: append (Lightning saves after every log call; rewriting the whole
            # file each time would be quadratic). A SIGKILL cannot tear one small write.
            with open(self.metrics_file_path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=header).writerows(self.metrics)
        else:
            _, rows = self._read()
            self.metrics_keys = sorted(set(self.metrics_keys) | set(header))
            self._write(self.metrics_keys, rows + self.metrics)
        self.rows_written += len(self.metrics)
        self.metrics = []

    def truncate(self, num_rows: int, extra_rows: Sequence[Mapping[str, Any]] = ()) -> None:
        """Keep the first ``num_rows`` rows on disk, then ``extra_rows``; drop unsaved rows."""
        self.metrics = []
        header, rows = self._read()
        rows = rows[:num_rows] + [{**row, **self.constants} for row in extra_rows]
        keys = sorted(set(header).union(*rows))
        self._write(keys, rows)
        self.metrics_keys = keys
        self.rows_written = len(rows)

    def _header(self) -> list[str]:
        try:
            with open(self.metrics_file_path, newline="") as handle:
                return next(csv.reader(handle), [])
        except FileNotFoundError:
            return []

    def _read(self) -> tuple[list[str], list[dict[str, Any]]]:
        try:
            with open(self.metrics_file_path, newline="") as handle:
                reader = csv.DictReader(handle)
                rows = [{k: v for k, v in row.items() if v != ""} for row in reader]
                return list(reader.fieldnames or []), rows
        except FileNotFoundError:
            return [], []

    def _write(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        path = Path(self.metrics_file_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def attach_metrics_writer(logger: CSVLogger, writer: RunMetricsWriter) -> None:
    """Make ``logger`` write through ``writer`` (before it logs anything).

    ``CSVLogger`` creates its writer lazily and offers no way to choose its class, so the writer
    is set in its place; ``logger.log_dir`` must be the writer's folder.
    """
    if os.path.normpath(logger.log_dir) != os.path.normpath(writer.log_dir):
        raise ValueError(f"CSV writer folder {writer.log_dir} is not {logger.log_dir}")
    logger._experiment = writer
