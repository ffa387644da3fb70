"""Where a run's files go: one folder per run, decided before anything is built.

A new run gets ``<save_dir>/<config name>/version_N`` (created at once, so two runs started
together get two folders); ``--run_dir DIR`` names the folder; ``--ckpt_path last`` resumes the
newest run of the config that has ``checkpoints/last.ckpt``; any checkpoint inside a run folder
continues (``fit``) or is evaluated (``validate``/``test``/``predict``) in that folder. Every file
logger (CSV, TensorBoard) writes into the folder itself and W&B into its ``wandb/`` (resuming the
run's W&B id), so one run is one folder and one version number.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from convae_lightning.checkpointing import UnwritableFolderError
from convae_lightning.loggers import wandb_run_id
from convae_lightning.runs import (
    checkpoint_run_dir,
    claim_version_dir,
    flatten_config,
    latest_checkpoint,
    next_version_dir,
    read_status,
)

__all__ = ["RUN_DIR_ENV", "RunPlacement", "accepts", "place_run", "resolve_last_checkpoint"]

#: Rank 0's run folder, for the processes a DDP launch starts (they parse the command again).
RUN_DIR_ENV = "CONVAE_RUN_DIR"
#: Logger names that mean "not chosen": the run is named after its config instead.
_DEFAULT_NAMES = (None, "", "lightning_logs", "run")


@dataclass
class RunPlacement:
    """A run's folder and what the CLI must know about it.

    Attributes:
        run_dir: The run folder.
        stage: ``fit``, ``validate``, ``test`` or ``predict``.
        existed: The folder held a run before this command (resuming or evaluating it).
        checkpoint: The checkpoint the command starts from, if any.
        config: The config to save: as given, without ``ckpt_path`` and ``run_dir`` (so that
            ``convae fit --config <run>/config.yaml`` starts a new run).
    """

    run_dir: Path
    stage: str
    existed: bool
    checkpoint: str | None
    config: Namespace
    created: list[Path] = field(default_factory=list)
    exported: bool = False

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def config_file(self) -> Path:
        """``config.yaml`` for a fit or a new folder; ``{stage}_config.yaml`` when evaluating a
        run that exists (its ``config.yaml`` stays the fit's)."""
        new = self.stage == "fit" or not self.existed
        return self.run_dir / ("config.yaml" if new else f"{self.stage}_config.yaml")

    def write_config(self, parser: ArgumentParser) -> None:
        """Save :attr:`config` atomically (a resumed fit replaces the file: it then describes
        the run as it continues, e.g. with a raised ``max_epochs``)."""
        text = parser.dump(self.config, skip_unset=False)
        tmp = self.config_file.with_name(f".{self.config_file.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_file)

    def default_loggers(self) -> list[Any]:
        """CSV and offline W&B loggers of the run folder (``trainer.logger: true``)."""
        from convae_lightning.loggers import OfflineWandbLogger

        folder = self.run_dir
        csv = CSVLogger(str(folder.parent.parent), name=folder.parent.name, version=folder.name)
        return [csv, OfflineWandbLogger(save_dir=os.path.abspath(folder), name=folder.parent.name)]

    def discard_if_unused(self) -> None:
        """Remove the folders this command created, if it failed before writing a file."""
        for folder in reversed(self.created):
            for sub, _, _ in sorted(os.walk(folder), reverse=True):  # empty subfolders first
                with contextlib.suppress(OSError):
                    os.rmdir(sub)
            if folder.exists():
                return

    def release(self) -> None:
        """Forget the folder for DDP launches (a later run in this process places its own)."""
        if self.exported:
            os.environ.pop(RUN_DIR_ENV, None)
            self.exported = False


def accepts(class_path: str, name: str) -> bool:
    """Whether ``class_path``'s constructor takes ``name`` (following ``**kwargs`` to bases)."""
    try:
        klass = _import(class_path)
    except (ImportError, AttributeError, ValueError):
        return False
    for base in getattr(klass, "__mro__", ()):
        if "__init__" not in vars(base):
            continue
        parameters = inspect.signature(base.__init__).parameters
        if name in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def resolve_last_checkpoint(config: Namespace) -> bool:
    """Replace ``ckpt_path: last`` by the newest ``checkpoints/last.ckpt`` of the config's runs
    (of ``--run_dir`` when given). Returns whether it did.

    Raises:
        FileNotFoundError: when there is none (a resume never silently starts afresh).
    """
    if config.get("ckpt_path") != "last":
        return False
    if config.get("run_dir"):
        where = Path(config.run_dir)
        found: Path | None = where / "checkpoints" / "last.ckpt"
    else:
        root, name = _run_group(config, _loggers(config))
        where = Path(root) / name
        found = latest_checkpoint(root, name)
    if found is None or not found.is_file():
        raise FileNotFoundError(
            f"--ckpt_path last: no {where}/version_*/checkpoints/last.ckpt to resume; "
            "start the run without --ckpt_path first"
            if not config.get("run_dir")
            else f"--ckpt_path last: {where}/checkpoints/last.ckpt does not exist"
        )
    config.ckpt_path = str(found)
    return True


def place_run(
    config: Namespace, stage: str, wandb_init: dict[str, Any], create: bool = True
) -> RunPlacement:
    """Choose (and on rank 0 create) the run folder, and point the configured loggers at it.

    ``create=False`` (a build without a run: ``ConvaeCLI(run=False)``) only chooses the folder:
    nothing is written, not even into an existing ``runs/<name>/``.

    Raises:
        FileNotFoundError: for a ``ckpt_path`` that does not exist.
        FileExistsError: for a ``fit`` into a ``--run_dir`` that holds a run, without
            ``--ckpt_path`` (resume it, or choose another folder).
        UnwritableFolderError: when the folder cannot be created.
    """
    loggers = _loggers(config)
    _name_loggers(config, loggers)
    for logger in loggers:
        if _is(logger, WandbLogger):
            for key, value in wandb_init.items():
                logger.init_args[key] = value
    checkpoint = config.get("ckpt_path")
    if checkpoint and _is_path(checkpoint) and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"ckpt_path {checkpoint!r} does not exist")
    saved = config.clone()
    saved.ckpt_path = None
    saved.run_dir = None
    _record_config_in_wandb(loggers, saved)

    created: list[Path] = []
    inherited = os.environ.get(RUN_DIR_ENV) if rank_zero_only.rank > 0 else None
    if inherited:
        run_dir, existed = Path(inherited), True
    elif config.get("run_dir"):
        run_dir = Path(config.run_dir)
        existed = _holds_run(run_dir)
        if existed and stage == "fit" and not checkpoint:
            raise FileExistsError(
                f"--run_dir {config.run_dir!r} already holds a run: resume it with "
                "--ckpt_path last, or choose another folder"
            )
        if rank_zero_only.rank == 0 and create:
            created = _make_dirs(run_dir)
    elif checkpoint and checkpoint_run_dir(checkpoint) is not None:
        run_dir, existed = checkpoint_run_dir(checkpoint), True  # type: ignore[assignment]
    else:
        root, name = _run_group(config, loggers)
        existed = False
        if not create:
            run_dir = next_version_dir(root, name)
        elif rank_zero_only.rank == 0:
            created = _missing_parents(Path(root) / name)
            try:
                run_dir = claim_version_dir(root, name)
            except OSError as error:
                raise UnwritableFolderError(
                    f"cannot create a run folder in {str(Path(root) / name)!r}: {error.strerror}"
                ) from None
            created.append(run_dir)
        else:  # DDP without the launcher's environment: rank 0 writes, this rank only follows
            run_dir = Path(root) / name / "version_0"
    _point_loggers(loggers, run_dir, existed)
    placement = RunPlacement(run_dir, stage, existed, checkpoint, saved, created)
    if rank_zero_only.rank == 0 and create:
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
        placement.exported = True
    return placement


def _loggers(config: Namespace) -> list[Namespace]:
    """The configured loggers as a list (a single logger becomes a list of one)."""
    trainer = config.get("trainer")
    value = trainer.get("logger") if trainer is not None else None
    if isinstance(value, Namespace):
        trainer.logger = value = [value]
    return [lg for lg in value if isinstance(lg, Namespace)] if isinstance(value, list) else []


def _config_name(config: Namespace) -> str:
    """The stem of the first ``--config`` file (``run`` without one)."""
    files = config.get("config") or []
    return Path(str(files[0])).stem if files else "run"


def _name_loggers(config: Namespace, loggers: list[Namespace]) -> None:
    """Name runs after their first config file: ``runs/<config stem>/``."""
    name = _config_name(config)
    for logger in loggers:
        init_args = logger.get("init_args")
        if init_args is not None and "name" in init_args and init_args.name in _DEFAULT_NAMES:
            init_args.name = name


def _run_group(config: Namespace, loggers: list[Namespace]) -> tuple[str, str]:
    """``(save_dir, name)`` of the run's group: the first file logger's, else ``runs/<config>``."""
    for logger in loggers:
        if _is(logger, CSVLogger, TensorBoardLogger):
            args = logger.init_args
            name = args.get("name")
            return str(args.get("save_dir") or "runs"), (
                _config_name(config) if name in _DEFAULT_NAMES else str(name)
            )
    return "runs", _config_name(config)


def _point_loggers(loggers: list[Namespace], run_dir: Path, existed: bool) -> None:
    for logger in loggers:
        args = logger.init_args
        if _is(logger, CSVLogger, TensorBoardLogger):
            # save_dir/name/version_str is exactly the run folder, whatever its name.
            args.save_dir = str(run_dir.parent.parent)
            args.name = run_dir.parent.name
            args.version = run_dir.name
        elif _is(logger, WandbLogger):
            args.save_dir = os.path.abspath(run_dir)  # W&B's service has its own cwd
            run_id = wandb_run_id(run_dir) if existed else None
            if run_id and not args.get("id"):
                args.id, args.resume = run_id, "allow"


def _record_config_in_wandb(loggers: list[Namespace], config: Namespace) -> None:
    """Give each W&B run the flattened resolved config (``model.init_args.unpool``, ...) as its
    config, unless one was configured: runs then compare by any setting in the W&B UI. Set after
    ``config`` was copied for ``config.yaml``, which it would only repeat."""
    flat = {key: _jsonable(value) for key, value in flatten_config(config.as_dict()).items()}
    for logger in loggers:
        if _is(logger, WandbLogger) and not logger.init_args.get("config"):
            logger.init_args["config"] = flat


def _jsonable(value: Any) -> Any:
    """A config value W&B can store: paths (jsonargparse ``Path``) and the like as strings."""
    try:
        json.dumps(value)
    except TypeError:
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    return value


def _is(logger: Namespace, *classes: type) -> bool:
    try:
        klass = _import(str(logger.get("class_path")))
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(klass, type) and issubclass(klass, classes)


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    if not module:
        raise ValueError(f"not a class path: {class_path!r}")
    return getattr(importlib.import_module(module), name)


def _is_path(checkpoint: str) -> bool:
    """Lightning's keywords (``best``, ``hpc``, ...) and URLs are not local files to check."""
    return checkpoint not in ("best", "last", "hpc", "registry") and "://" not in checkpoint


def _holds_run(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    status = read_status(folder)
    return status is not None or any(
        (folder / name).exists() for name in ("config.yaml", "metrics.csv", "checkpoints")
    )


def _missing_parents(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return list(reversed(missing))


def _make_dirs(folder: Path) -> list[Path]:
    created = _missing_parents(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UnwritableFolderError(
            f"cannot create the run folder {str(folder)!r}: {error.strerror}"
        ) from None
    return created
