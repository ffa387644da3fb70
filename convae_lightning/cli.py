"""Console entry points.

``lightning fit --config conf/weak_stack.yaml`` and ``convae fit --config ...`` run the same
:class:`ConvaeCLI` (``convae`` is the clash-free spelling: the ``lightning-sdk`` package installs a
``lightning`` command too); ``convae data {stats,prepare,synth}`` are the corpus tools.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import CLI
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from convae_lightning.data import TimitDataModule
from convae_lightning.data.timit import CorpusError
from convae_lightning.loggers import OfflineWandbLogger
from convae_lightning.models import ConvaeModule
from convae_lightning.synth import FestivalNotFoundError

#: Every run logs to CSV (for offline reports) and to W&B, offline unless configured otherwise.
DEFAULT_LOGGERS: list[dict[str, Any]] = [
    {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
    {"class_path": "convae_lightning.loggers.OfflineWandbLogger", "init_args": {"offline": True}},
]

#: Errors that are the user's to fix: shown as one line (``CONVAE_DEBUG=1`` shows tracebacks).
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    CorpusError,
    FestivalNotFoundError,
    MisconfigurationException,
)


class ConvaeCLI(LightningCLI):
    """LightningCLI for this package: any :class:`ConvaeModule` with the TIMIT DataModule.

    Links the DataModule's ``input_shape`` and ``num_classes`` into the model, seeds from the
    config's ``seed_everything``, saves the resolved config into the run directory, and puts the
    offline W&B run beside the CSV metrics and checkpoints of the same run
    (``runs/<name>/version_N/``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", ConvaeModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("datamodule_class", TimitDataModule)
        kwargs.setdefault("save_config_callback", SaveConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in ("input_shape", "num_classes"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
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
        parser.add_lightning_class_args(RichProgressBar, "progress_bar")
        parser.set_defaults({"trainer.logger": DEFAULT_LOGGERS})

    def before_instantiate_classes(self) -> None:
        # Name runs after their config file: runs/<config stem>/version_N/.
        config = self.config.get(self.subcommand, self.config)
        files = config.get("config") or []
        name = Path(str(files[0])).stem if files else "run"
        for logger in config["trainer"].get("logger") or []:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and init_args.get("name") in (None, "lightning_logs", "run"):
                init_args["name"] = name

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        try:
            return super().instantiate_trainer(**kwargs)
        except RuntimeError as error:  # Lightning's check for two callbacks sharing a state key
            if "stateful callback" in str(error):
                first_sentence = str(error).split(". ")[0]
                raise ValueError(
                    f"trainer.callbacks: {first_sentence} with the same settings (e.g. a preset "
                    "that repeats a callback the config already has)"
                ) from None
            raise

    def _prepare_run(self) -> None:
        """Check callbacks against the model, then lay out the run directory.

        Runs before anything is written: a callback that cannot work with the model fails here,
        leaving no new run folder behind.
        """
        for callback in self.trainer.callbacks:
            check = getattr(callback, "check_module", None)
            if check is not None:
                check(self.model)
        if not self.trainer.is_global_zero:
            return  # other DDP ranks log nothing; they must not create run folders either
        csv = next((lg for lg in self.trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv is None:
            return
        csv.experiment  # creates runs/<name>/version_N before W&B writes into it  # noqa: B018
        for logger in self.trainer.loggers:
            if isinstance(logger, OfflineWandbLogger):
                logger.set_save_dir(csv.log_dir)

    def before_fit(self) -> None:
        self._prepare_run()

    def before_validate(self) -> None:
        self._prepare_run()

    def before_test(self) -> None:
        self._prepare_run()

    def before_predict(self) -> None:
        self._prepare_run()


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
    args = list(sys.argv[1:] if argv is None else argv)
    # jsonargparse has no optional positionals: `convae data stats ROOT` means `--root ROOT`.
    if len(args) >= 2 and args[0] in _ROOT_FIRST and not args[1].startswith("-"):
        args[1:2] = ["--root", args[1]]
    _user_errors_as_messages(lambda: CLI(_data_commands(), args=args, prog="convae data"))


def lightning_main(argv: Sequence[str] | None = None) -> None:
    """``lightning {fit,validate,test,predict} --config conf/X.yaml``."""
    # args=None lets LightningCLI read sys.argv itself (passing both makes it warn).
    args = list(argv) if argv is not None else None
    _user_errors_as_messages(lambda: ConvaeCLI(args=args))


def main(argv: Sequence[str] | None = None) -> None:
    """``convae data ...`` for corpus tools, ``convae fit|validate|test|predict ...`` for runs."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "data":
        data_main(args[1:])
    else:
        lightning_main(argv)


def _user_errors_as_messages(run: Callable[[], Any]) -> None:
    try:
        run()
    except USER_ERRORS as error:
        if os.environ.get("CONVAE_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
