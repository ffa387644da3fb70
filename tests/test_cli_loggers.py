"""Standard LightningCLI overrides of loggers and console, ``--run_dir``, and the in-process use
a sweep runner makes of ``ConvaeCLI`` (runs in-process: seconds each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from cli_helpers import CONF, read_metrics
from conftest import TINY
from lightning.pytorch.callbacks import Callback

from convae_lightning.cli import ConvaeCLI

#: Real (tiny) trainings in-process: seconds each alone, but many.
pytestmark = pytest.mark.slow

CSV = "{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}"
TENSORBOARD = (
    "{class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {save_dir: runs}}"
)
QUIET = ["--progress_bar.refresh_rate", "0", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def workdir(tmp_path, monkeypatch, cli_cache) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    return tmp_path


def fit(*args: str, config: str = "regular_ae") -> ConvaeCLI:
    return ConvaeCLI(args=["fit", "--config", str(CONF / f"{config}.yaml"), *TINY, *args])


def folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("runs/*/*"))


def test_one_csv_logger_given_on_the_command_line(workdir):
    """Replacing the default loggers by one logger (not a list) crashed the run naming."""
    cli = fit("--trainer.logger", CSV, *QUIET)
    assert folders(workdir) == ["runs/regular_ae/version_0"]
    run = workdir / "runs/regular_ae/version_0"
    assert Path(cli.trainer.log_dir).resolve() == run.resolve()
    assert read_metrics(run / "metrics.csv") and not (run / "wandb").exists()
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_tensorboard_beside_csv_is_one_run_folder(workdir):
    fit("--trainer.logger", f"[{CSV}, {TENSORBOARD}]", *QUIET)
    fit("--trainer.logger", f"[{TENSORBOARD}, {CSV}]", *QUIET)  # the order does not matter
    assert folders(workdir) == ["runs/regular_ae/version_0", "runs/regular_ae/version_1"]
    for version in ("version_0", "version_1"):
        run = workdir / "runs/regular_ae" / version
        assert list(run.glob("events.out.tfevents.*")), sorted(p.name for p in run.iterdir())
        assert (run / "metrics.csv").is_file() and (run / "checkpoints/last.ckpt").is_file()


def test_no_logger_still_makes_a_run_folder(workdir):
    fit("--trainer.logger", "false", *QUIET)
    run = workdir / "runs/regular_ae/version_0"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "status.json"]


def test_progress_bar_can_be_switched_off(workdir):
    """``--trainer.enable_progress_bar false`` conflicted with the always-on progress bar."""
    cli = fit("--trainer.logger", CSV, "--trainer.enable_progress_bar", "false")
    assert cli.trainer.progress_bar_callback is None


def test_progress_bar_shows_the_run_version(workdir):
    """With W&B beside CSV, ``v_num`` showed the end of the W&B run id."""
    fit(*QUIET)
    cli = fit(*QUIET)
    trainer = cli.trainer
    assert trainer.progress_bar_callback.get_metrics(trainer, cli.model)["v_num"] == "1"


def test_run_dir_places_the_run(workdir):
    cli = fit("--trainer.logger", CSV, *QUIET, "--run_dir", "runs/study/trial_3")
    assert cli.run_dir == Path("runs/study/trial_3")
    run = workdir / "runs/study/trial_3"
    assert Path(cli.trainer.log_dir).resolve() == run.resolve()
    assert (run / "metrics.csv").is_file() and (run / "checkpoints/last.ckpt").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["run_dir"] is None
    # The same folder again resumes it (the sweep runner's retry of a killed trial).
    fit("--trainer.logger", CSV, *QUIET, "--run_dir", "runs/study/trial_3",
        "--trainer.max_epochs", "2", "--ckpt_path", "last")  # fmt: skip
    assert {row["epoch"] for row in read_metrics(run / "metrics.csv")} == {"0", "1"}
    assert folders(workdir) == ["runs/study/trial_3"]


def test_a_checkpoint_inside_a_run_folder_continues_there(workdir):
    fit("--trainer.logger", CSV, *QUIET)
    checkpoint = "runs/regular_ae/version_0/checkpoints/last.ckpt"
    fit("--trainer.logger", CSV, *QUIET, "--trainer.max_epochs", "2", "--ckpt_path", checkpoint)
    assert folders(workdir) == ["runs/regular_ae/version_0"]


class Recorder(Callback):
    """A sweep runner's callback, passed in ``trainer_defaults``."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.epochs.append(trainer.current_epoch)


def test_in_process_use_by_a_sweep_runner(workdir):
    recorder = Recorder()
    cli = ConvaeCLI(
        args=["fit", "--config", str(CONF / "forward.yaml"), *TINY, *QUIET,
              "--run_dir", "runs/study/trial_0"],
        trainer_defaults={"callbacks": [recorder]},
        wandb_init={"group": "study", "tags": ["lr=0.01"], "job_type": "trial"},
    )  # fmt: skip
    assert recorder.epochs == [0]
    assert cli.run_dir == Path("runs/study/trial_0")
    assert "val/acc48_balanced_best" in cli.trainer.callback_metrics
    config = yaml.safe_load((workdir / "runs/study/trial_0/config.yaml").read_text())
    wandb = next(lg for lg in config["trainer"]["logger"] if "Wandb" in lg["class_path"])
    assert wandb["init_args"]["group"] == "study"
    assert wandb["init_args"]["tags"] == ["lr=0.01"]
    assert wandb["init_args"]["job_type"] == "trial"
    assert list((workdir / "runs/study/trial_0/wandb").glob("offline-run-*"))


def test_run_false_builds_a_fit_and_leaves_no_run_folder(workdir):
    """``run=False`` (a sweep checking its conditions) builds model, data and trainer of a fit
    without claiming a run folder; the W&B run would get the flattened resolved config."""
    cli = ConvaeCLI(
        args=[
            "--config",
            str(CONF / "regular_ae.yaml"),
            *TINY,
            "--model.init_args.unpool",
            "blind",
        ],
        run=False,
    )
    assert cli.model.hparams.unpool == "blind" and cli.trainer.max_epochs == 1
    assert cli.datamodule.hparams.train_per_class == 5
    assert not (workdir / "runs").exists()
    wandb = next(lg for lg in cli.config.trainer.logger if "Wandb" in lg.class_path)
    flat = wandb.init_args.config
    assert flat["model.init_args.unpool"] == "blind" and flat["data.train_per_class"] == 5
    assert flat["config"] == [str(CONF / "regular_ae.yaml")]


def test_run_false_writes_nothing_into_existing_runs(workdir):
    """Checking a sweep's conditions beside earlier runs neither claims nor touches a folder."""
    earlier = workdir / "runs" / "regular_ae" / "version_0"
    earlier.mkdir(parents=True)
    before = {p: p.stat().st_mtime_ns for p in (earlier.parent, earlier)}
    ConvaeCLI(args=["--config", str(CONF / "regular_ae.yaml"), *TINY], run=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert folders(workdir) == ["runs/regular_ae/version_0"]


def test_relative_run_folders_follow_the_working_directory(workdir, tmp_path_factory):
    """W&B's service process resolved the run's relative folder against its own working
    directory (the repository's when an earlier test started it there)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.chdir(elsewhere)
    fit(*QUIET)  # starts W&B's service here
    os.chdir(workdir)
    fit(*QUIET)
    assert list((workdir / "runs/regular_ae/version_0/wandb").glob("offline-run-*"))
    assert not (elsewhere / "runs/regular_ae/version_1").exists()
    assert len(list((elsewhere / "runs/regular_ae/version_0/wandb").glob("offline-run-*"))) == 1
