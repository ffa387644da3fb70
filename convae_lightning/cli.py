"""Console entry points.

``lightning fit --config conf/weak_stack.yaml`` and ``convae fit --config ...`` run the same
:class:`ConvaeCLI` (``convae`` is the clash-free spelling: the ``lightning-sdk`` package installs a
``lightning`` command too); ``convae data {stats,prepare,synth}`` are the corpus tools and
``convae reconstruct`` applies a trained autoencoder to a signal.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import CLI, Namespace
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from convae_lightning.allocator import tune_malloc
from convae_lightning.callbacks import StackGrowth
from convae_lightning.checkpointing import AtomicCheckpointIO, check_writable
from convae_lightning.console import QuietModelSummary, RunProgressBar, quiet_known_noise
from convae_lightning.data import TimitDataModule
from convae_lightning.data.timit import CorpusError
from convae_lightning.loggers import RunMetricsWriter, attach_metrics_writer
from convae_lightning.models import ConvaeModule
from convae_lightning.parse_errors import explain
from convae_lightning.placement import (
    RunPlacement,
    accepts,
    place_run,
    resolve_last_checkpoint,
)
from convae_lightning.predict import PredictionWriter
from convae_lightning.run_tracking import BestMetricLogger, ResumeState, RunStatusWriter
from convae_lightning.synth import FestivalNotFoundError

#: Every run logs to CSV (for offline reports) and to W&B, offline unless configured otherwise.
DEFAULT_LOGGERS: list[dict[str, Any]] = [
    {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
    {"class_path": "convae_lightning.loggers.OfflineWandbLogger", "init_args": {"offline": True}},
]

#: Errors that are the user's to fix: shown as one line (``CONVAE_DEBUG=1`` shows tracebacks).
#: ``FloatingPointError`` covers the models' ``NonFiniteLossError`` (a NaN/inf loss).
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    FloatingPointError,
    CorpusError,
    FestivalNotFoundError,
    MisconfigurationException,
)


class ConvaeArgumentParser(LightningArgumentParser):
    """The CLI's parser: errors about a value start with the key and the allowed values."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(explain(message), ex)


class ConvaeCLI(LightningCLI):
    """LightningCLI for this package: any :class:`ConvaeModule` with the TIMIT DataModule.

    Links the DataModule's ``input_shape`` (and ``num_classes``, into models that take it) into
    the model, seeds from the config's ``seed_everything``, and puts everything of one run in one
    folder (``runs/<config name>/version_N/``; see :mod:`convae_lightning.placement`): CSV
    metrics, checkpoints, the resolved config, ``status.json`` and the offline W&B run.
    ``--ckpt_path last`` resumes the newest run of the config in its own folder, any checkpoint
    inside a run folder continues or evaluates in that folder, ``--run_dir DIR`` names the folder.

    Used in-process (a sweep runner): ``ConvaeCLI(args=[...], trainer_defaults={"callbacks":
    [...]}, wandb_init={"group": ..., "tags": [...], "job_type": ...})`` runs the subcommand and
    keeps ``cli.trainer`` (read ``cli.trainer.callback_metrics``) and ``cli.run_dir``.
    ``run=False`` (LightningCLI's own switch; ``args`` without the subcommand) only builds the
    model, DataModule and Trainer of a ``fit``, and leaves no run folder behind: a check that a
    command line makes a run.

    Args:
        *args: Passed to ``LightningCLI``.
        wandb_init: Extra ``wandb.init`` settings for every W&B logger of the run (recorded in
            its ``config.yaml``).
        **kwargs: Passed to ``LightningCLI``.
    """

    def __init__(self, *args: Any, wandb_init: Mapping[str, Any] | None = None, **kwargs: Any):
        self.wandb_init = dict(wandb_init or {})
        self.placement: RunPlacement | None = None
        builds_only = self._builds_only = kwargs.get("run", True) is False
        kwargs.setdefault("model_class", ConvaeModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("datamodule_class", TimitDataModule)
        kwargs.setdefault("save_config_callback", None)  # written by _prepare_run, see there
        kwargs.setdefault("parser_class", ConvaeArgumentParser)
        kwargs.setdefault("auto_configure_optimizers", False)
        quiet_known_noise()
        try:
            super().__init__(*args, **kwargs)
            if builds_only and self.placement is not None:
                self.placement.discard_if_unused()
        except BaseException:
            if self.placement is not None:
                self.placement.discard_if_unused()
            raise
        finally:
            if self.placement is not None:
                self.placement.release()

    @property
    def run_dir(self) -> Path | None:
        """The folder of this command's run (``None`` before it is placed)."""
        return self.placement.run_dir if self.placement is not None else None

    # ------------------------------------------------------------------------------ parser
    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        with warnings.catch_warnings():
            # In-process use (a sweep runner) passes args while sys.argv holds its own command.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Run folder (default: runs/<config name>/version_N; sweeps give "
            "runs/<study>/trial_<n>). With --ckpt_path last: the run to resume.",
        )
        # num_classes is linked in before_instantiate_classes, into models that take it.
        parser.link_arguments(
            "data.input_shape", "model.init_args.input_shape", apply_on="instantiate"
        )
        # Always-on callbacks, configured under their own keys (`checkpoint.monitor: ...`): the
        # best checkpoint by the monitored metric, and `last.ckpt` rewritten every epoch (in
        # Lightning 2.6 `save_last` only follows the top-k saves, so it lags when the metric
        # stops improving, e.g. right after a stacked autoencoder grows).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss_balanced",
                "checkpoint.save_top_k": 1,
                "last_checkpoint.filename": "last",
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(RunProgressBar, "progress_bar")
        parser.set_defaults({"trainer.logger": DEFAULT_LOGGERS})

    @override
    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # `prediction.*` exists for predict only
            parser.add_lightning_class_args(PredictionWriter, "prediction")
        return parser

    # ------------------------------------------------------------------------ instantiation
    @override
    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last``, then build the model with the checkpoint's arguments,
        as Lightning does (leaving out a ``num_classes`` that older checkpoints of models that
        do not take it carry)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        resolve_last_checkpoint(config)
        path = config.get("ckpt_path")
        if not path or not Path(path).is_file():
            return
        hparams = torch.load(path, weights_only=True, map_location="cpu").get("hyper_parameters")
        hparams = dict(hparams or {})
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            class_path = hparams.pop("_class_path")
            if not accepts(class_path, "num_classes"):
                hparams.pop("num_classes", None)
            hparams = {"class_path": class_path, "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._link_num_classes(config)
        self.placement = place_run(
            config, self.subcommand or "fit", self.wandb_init, create=not self._builds_only
        )

    def _link_num_classes(self, config: Namespace) -> None:
        """Link ``data.num_classes`` only into a model that takes it: linked into every model,
        it landed in autoencoder checkpoints' hyper-parameters and broke loading them."""
        model = config.get("model")
        if model is not None and accepts(str(model.get("class_path")), "num_classes"):
            self._parser(self.subcommand).link_arguments(
                "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
            )

    @override
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Any:
        assert self.placement is not None
        config = dict(config)
        own = config.get("callbacks") or []
        own = own if isinstance(own, list) else [own]
        user_bar = any(isinstance(c, ProgressBar) for c in own)
        if config.get("enable_progress_bar") is False or user_bar:
            callbacks = [c for c in callbacks if not isinstance(c, RunProgressBar)]
        if config.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in own
        ):
            callbacks.append(QuietModelSummary())
        if any(isinstance(c, StackGrowth) for c in own):
            # A stacked run's best checkpoints are StackGrowth's unit{k}.ckpt, the best epoch
            # within each depth; a best across depths would compare different networks' errors.
            for callback in callbacks:
                if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
                    callback.save_top_k = 0
        callbacks += self._run_callbacks(callbacks)
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        if config.get("logger") is True:  # "the default loggers"
            config["logger"] = self.placement.default_loggers()
        if self.subcommand == "predict" or not config.get("logger"):
            config["logger"] = False  # predict logs nothing
            config["default_root_dir"] = str(self.placement.run_dir)
        try:
            return super()._instantiate_trainer(config, callbacks)
        except RuntimeError as error:  # Lightning's check for two callbacks sharing a state key
            if "stateful callback" in str(error):
                first_sentence = str(error).split(". ")[0]
                raise ValueError(
                    f"trainer.callbacks: {first_sentence} with the same settings (e.g. a preset "
                    "that repeats a callback the config already has)"
                ) from None
            raise

    def _run_callbacks(self, callbacks: list[Callback]) -> list[Callback]:
        """The callbacks every run of this CLI gets besides the configured ones."""
        assert self.placement is not None
        placement = self.placement
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.realpath(placement.checkpoint_dir)
        extra: list[Callback] = []
        if self.subcommand == "fit" or not placement.existed:
            extra.append(RunStatusWriter(placement.run_dir, resumed_from=placement.checkpoint))
        if self.subcommand == "fit":
            best = self._get(self.config_init, "checkpoint")
            if best is not None and best.monitor:
                extra.append(BestMetricLogger(best.monitor, best.mode))
            extra.append(ResumeState())
        return extra

    # --------------------------------------------------------------------------- the run
    def _prepare_run(self) -> None:
        """Check callbacks, data and folders, then lay out the run folder.

        Runs before the trainer: a callback that cannot work with the model, an empty split or
        a folder that cannot be written fails here, before anything is written.
        """
        assert self.placement is not None
        for callback in self.trainer.callbacks:
            check = getattr(callback, "check_module", None)
            if check is not None:
                check(self.model)
        if self.datamodule is not None:
            self.datamodule.trainer = self.trainer
            self.datamodule.setup(self.subcommand)
        if not self.trainer.is_global_zero:
            return  # other DDP ranks write nothing; rank 0 placed the run
        placement = self.placement
        check_writable(placement.run_dir, "run folder")
        for callback in self.trainer.callbacks if self.subcommand == "fit" else ():
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                check_writable(callback.dirpath, "checkpoint folder")
        placement.write_config(self._parser(self.subcommand))
        writer = None
        for logger in self.trainer.loggers:
            if isinstance(logger, CSVLogger):
                writer = self._metrics_writer(logger.log_dir)
                attach_metrics_writer(logger, writer)
            if isinstance(logger, WandbLogger) and hasattr(logger, "set_save_dir"):
                logger.set_save_dir(placement.run_dir)
        for callback in self.trainer.callbacks:
            if isinstance(callback, ResumeState):
                callback.writer = writer
            if isinstance(callback, PredictionWriter):
                callback.output_dir = callback.output_dir or str(placement.run_dir)
                callback.checkpoint = placement.checkpoint

    def _metrics_writer(self, log_dir: str) -> RunMetricsWriter:
        assert self.placement is not None
        if self.subcommand == "fit":
            return RunMetricsWriter(log_dir)
        checkpoint = Path(self.placement.checkpoint).name if self.placement.checkpoint else ""
        return RunMetricsWriter(
            log_dir,
            metrics_file=f"{self.subcommand}_metrics.csv",
            hparams_file=None,  # the fit's hparams.yaml stays as it was
            constants={"checkpoint": checkpoint},
        )

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        with warnings.catch_warnings():
            if subcommand != "fit":
                # Evaluating a checkpoint needs none of the training callbacks' states.
                warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
            super()._run_subcommand(subcommand)

    def before_fit(self) -> None:
        self._prepare_run()

    def before_validate(self) -> None:
        self._prepare_run()

    def before_test(self) -> None:
        self._prepare_run()

    def before_predict(self) -> None:
        self._prepare_run()


# ------------------------------------------------------------------------------ entry points
def _data_commands() -> dict[str, Callable]:
    from convae_lightning.data import commands
    from convae_lightning.data.stft_quality_command import stft_quality
    from convae_lightning.synth import synthesize_corpus

    return {
        "stats": commands.stats,
        "prepare": commands.prepare,
        "synth": synthesize_corpus,
        "stft-quality": stft_quality,
    }


#: ``convae data`` commands whose first argument may be the corpus ROOT.
_ROOT_FIRST = ("stats", "prepare", "stft-quality")


def data_main(argv: Sequence[str] | None = None) -> None:
    """``convae data {stats,prepare,synth,stft-quality}``; all but ``synth`` take ROOT first."""
    tune_malloc()
    args = list(sys.argv[1:] if argv is None else argv)
    # jsonargparse has no optional positionals: `convae data stats ROOT` means `--root ROOT`.
    if len(args) >= 2 and args[0] in _ROOT_FIRST and not args[1].startswith("-"):
        args[1:2] = ["--root", args[1]]
    _user_errors_as_messages(lambda: CLI(_data_commands(), args=args, prog="convae data"))


def lightning_main(argv: Sequence[str] | None = None) -> None:
    """``lightning {fit,validate,test,predict} --config conf/X.yaml``."""
    tune_malloc()
    # args=None lets LightningCLI read sys.argv itself (passing both makes it warn).
    args = list(argv) if argv is not None else None
    _user_errors_as_messages(lambda: ConvaeCLI(args=args))


def reconstruct_main(argv: Sequence[str]) -> None:
    """``convae reconstruct CKPT --input ...`` (:mod:`convae_lightning.reconstruct`)."""
    try:
        module = importlib.import_module("convae_lightning.reconstruct")
    except ModuleNotFoundError as error:
        if error.name != "convae_lightning.reconstruct":
            raise
        print("error: convae reconstruct is not part of this version", file=sys.stderr)
        raise SystemExit(2) from None
    _user_errors_as_messages(lambda: module.main(list(argv)))


def main(argv: Sequence[str] | None = None) -> None:
    """``convae data ...`` for corpus tools, ``convae reconstruct ...``, ``convae sweep ...``,
    ``convae report ...``, and ``convae fit|validate|test|predict ...`` for runs.

    Every entry point first tunes glibc's allocator for training (``allocator.tune_malloc``).
    """
    tune_malloc()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "data":
        data_main(args[1:])
    elif args and args[0] == "reconstruct":
        reconstruct_main(args[1:])
    elif args and args[0] == "sweep":
        from convae_lightning.sweeps import main as sweep_main

        sweep_main(args[1:])
    elif args and args[0] == "report":
        from convae_lightning.report import main as report_main

        report_main(args[1:])
    else:
        lightning_main(argv)


#: errno values of a write that the user can fix (a read-only or full folder).
_WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def user_error_message(error: BaseException) -> str | None:
    """The one line shown for a user's error, or ``None`` for a bug (shown as a traceback)."""
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS and error.filename:
        return f"cannot write {str(error.filename)!r}: {error.strerror}"
    if isinstance(error, USER_ERRORS):
        return str(error).strip() or type(error).__name__
    return None


def _user_errors_as_messages(run: Callable[[], Any]) -> None:
    try:
        run()
    except Exception as error:
        message = user_error_message(error)
        if message is None or os.environ.get("CONVAE_DEBUG"):
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
