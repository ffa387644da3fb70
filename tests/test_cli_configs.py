"""``lightning fit --config conf/<name>.yaml`` (and ``convae fit``) as real subprocesses.

Every run config of ``conf/`` is fitted for one or two tiny epochs on the embedded corpus in a
fresh working directory, with ``WANDB_MODE`` absent: the run must land in
``runs/<config stem>/version_0/`` with its checkpoint, resolved config, CSV metrics, status and
an *offline* W&B run. Then each config's run is resumed (``fit --ckpt_path last``), validated,
tested and predicted from its own checkpoints, all in that same folder. The callback presets of
``callbacks/`` are composed onto run configs with ``--trainer.callbacks+=callbacks/<preset>.yaml``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import (
    CONF,
    NEEDS_AUTOENCODER,
    PRESETS,
    RUN_CONFIGS,
    STACK_CALLBACKS,
    STACKS,
    Run,
    load_checkpoint,
    read_metrics,
    run_cli,
)
from conftest import TINY

#: Every test here reads real console-script runs (minutes together on 2 cores).
pytestmark = pytest.mark.slow

#: The order of the presets in the real run: StackGrowth last, for the nested override after it.
REAL_RUN_PRESETS = (
    "tied_transpose_sync",
    "layer_freezing",
    "reconstruction_logger",
    "early_stopping",
    "stack_growth",
)

#: Stacked configs: two epochs, one unit per epoch, so the stack grows during the run (the
#: command-line list replaces the config's callbacks; same-class entries keep their other
#: init_args, hence every_n_epochs is given explicitly).
STACK_OVERRIDES = ["--trainer.max_epochs", "2", *STACK_CALLBACKS]


#: The forward network on two CPU processes under DDP, one full epoch of small batches.
DDP_ARGS = [
    "fit", "--config", str(CONF / "forward.yaml"),
    "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
    "--data.train_per_class", "5", "--data.eval_per_class", "3", "--data.batch_size", "8",
]  # fmt: skip


def fit_args(name: str, checkpoint: Path | None = None) -> list[str]:
    args = ["fit", "--config", str(CONF / f"{name}.yaml"), *TINY]
    if name in STACKS:
        args += STACK_OVERRIDES
    if name in NEEDS_AUTOENCODER:
        args += ["--model.init_args.autoencoder_checkpoint", str(checkpoint)]
    return args


def preset_args() -> list[str]:
    """All five presets onto regular_ae.yaml turned into a weakly stacked autoencoder."""
    args = [
        "fit",
        "--config", str(CONF / "regular_ae.yaml"),
        "--model.class_path", "convae_lightning.models.StackedAutoencoder",
        "--model.init_args.mode", "weak",
        *TINY,
        "--trainer.max_epochs", "2",
    ]  # fmt: skip
    for preset in REAL_RUN_PRESETS:
        args.append(f"--trainer.callbacks+={PRESETS / preset}.yaml")
    # A nested key after `+=` sets the last appended callback (here StackGrowth's).
    return [*args, "--trainer.callbacks.init_args.max_epochs_per_unit", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_cache) -> dict[str, Run]:
    """Every run of this module: regular_ae first (builds the cache, gives the autoencoder
    checkpoint of the classifiers), then the rest two at a time (2 cores)."""
    base = tmp_path_factory.mktemp("cli_runs")
    first = run_cli("lightning", fit_args("regular_ae"), base / "regular_ae", cli_cache,
                    "regular_ae")  # fmt: skip
    results = {"regular_ae": first}
    checkpoint = first.run_dir / "checkpoints" / "last.ckpt"
    jobs = {
        name: ("lightning", fit_args(name, checkpoint), name)
        for name in RUN_CONFIGS
        if name != "regular_ae"
    }
    jobs["convae:forward"] = ("convae", fit_args("forward"), "forward")
    jobs["presets"] = ("lightning", preset_args(), "regular_ae")
    jobs["ddp"] = ("lightning", DDP_ARGS, "forward")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            key: pool.submit(run_cli, command, args, base / key.replace(":", "_"), cli_cache, name)
            for key, (command, args, name) in jobs.items()
        }
        results.update({key: future.result() for key, future in futures.items()})
    return results


def config_class_path(name: str) -> str:
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())["model"]["class_path"]


# --------------------------------------------------------------------------- every run config
@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_fit_writes_a_complete_run(runs, name):
    run = runs[name]
    assert run.returncode == 0, run.explain()
    run_dir = run.run_dir
    assert sorted(p.name for p in (run.cwd / "runs").iterdir()) == [name]
    assert sorted(p.name for p in (run.cwd / "runs" / name).iterdir()) == ["version_0"]

    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["state_dict"], "empty state_dict"

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == config_class_path(name)
    assert config["data"]["train_per_class"] == 5
    assert config["data"]["eval_per_class"] == 3
    assert config["trainer"]["limit_train_batches"] == 2
    loggers = {lg["class_path"]: lg["init_args"] for lg in config["trainer"]["logger"]}
    wandb_args = loggers["convae_lightning.loggers.OfflineWandbLogger"]
    assert wandb_args["offline"] is True
    assert loggers["lightning.pytorch.loggers.CSVLogger"]["name"] == name

    rows = read_metrics(run_dir / "metrics.csv")
    val_keys = [k for row in rows for k, v in row.items() if k.startswith("val/") and v != ""]
    assert val_keys, f"no validation metric in {run_dir / 'metrics.csv'}"
    monitor = config["checkpoint"]["monitor"]
    assert any(row.get(f"{monitor}_best") for row in rows), f"{monitor}_best is not logged"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["wall_time_s"] > 0, status

    # W&B ran offline (no WANDB_MODE in the environment), inside the run directory.
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, sorted(p.name for p in (run_dir / "wandb").iterdir())
    assert list(offline[0].glob("run-*.wandb")), f"no .wandb file in {offline[0]}"
    assert not list((run_dir / "wandb").glob("run-*")), "an online W&B run was started"
    assert not (run.cwd / "wandb").exists(), "W&B wrote outside the run directory"


@pytest.mark.parametrize("name", NEEDS_AUTOENCODER)
def test_classifier_configs_load_the_autoencoder_checkpoint(runs, name):
    run = runs[name]
    assert run.returncode == 0, run.explain()
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    source = runs["regular_ae"].run_dir / "checkpoints" / "last.ckpt"
    assert config["model"]["init_args"]["autoencoder_checkpoint"] == str(source)
    # Its convolutions start from the autoencoder's; under `fixed` they stay there.
    autoencoder = load_checkpoint(source)["state_dict"]
    classifier = load_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    key = "encoder.0.conv.weight"
    if name == "fixed_classifier":
        torch.testing.assert_close(classifier[key], autoencoder[key])
    else:
        assert classifier[key].shape == autoencoder[key].shape


@pytest.mark.parametrize("name", STACKS)
def test_stacked_configs_grow(runs, name):
    run = runs[name]
    assert run.returncode == 0, run.explain()
    checkpoints = sorted((run.run_dir / "checkpoints").glob("*.ckpt"))
    depths = {p.name: load_checkpoint(p)["convae"]["num_active_units"] for p in checkpoints}
    # Growth happens at the end of validation, before the epoch's checkpoint is written.
    assert max(depths.values()) >= 2, depths
    growth = next(v for k, v in load_checkpoint(checkpoints[-1])["callbacks"].items()
                  if k.startswith("StackGrowth"))  # fmt: skip
    assert growth["history"][0]["reason"] == "reached max_epochs_per_unit=1"
    images = sorted(p.name for p in (run.run_dir / "reconstructions").glob("*.png"))
    assert images == ["epoch=0.png", "epoch=1.png"]


@pytest.mark.parametrize("name", STACKS)
def test_last_checkpoint_is_the_last_epoch(runs, name):
    """``checkpoints/last.ckpt`` must hold the final state (the conf comments feed it to the
    classifiers). With Lightning >= 2.6 ``save_last=True`` only refreshes it when a top-k
    checkpoint is saved, i.e. when the monitored metric improved: a stack whose error rises after
    growing keeps an older, shallower ``last.ckpt``."""
    run = runs[name]
    assert run.returncode == 0, run.explain()
    checkpoint = load_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 1, "last.ckpt is not from the last epoch"
    # Epoch 1 trained 2 units; the third is added when the next epoch starts (StackGrowth keeps
    # the growth pending in its state, so a checkpoint's depth is the one its scores belong to).
    assert checkpoint["convae"]["num_active_units"] == 2
    growth = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("StackGrowth"))
    assert growth["grow_pending"] is True


def test_convae_fit_is_lightning_fit(runs):
    ours, reference = runs["convae:forward"], runs["forward"]
    assert ours.returncode == 0, ours.explain()
    assert reference.returncode == 0, reference.explain()

    def layout(run: Run) -> list[str]:
        return sorted(
            str(p.relative_to(run.run_dir)) for p in run.run_dir.iterdir() if p.name != "wandb"
        ) + sorted(str(p.relative_to(run.run_dir)) for p in run.run_dir.glob("checkpoints/*"))

    assert layout(ours) == layout(reference)
    assert list((ours.run_dir / "wandb").glob("offline-run-*"))
    ours_cfg = yaml.safe_load((ours.run_dir / "config.yaml").read_text())
    reference_cfg = yaml.safe_load((reference.run_dir / "config.yaml").read_text())
    assert ours_cfg == reference_cfg
    # Same seed, same data, same numbers.
    val = [r for r in read_metrics(reference.run_dir / "metrics.csv") if r["val/loss_balanced"]]
    got = [r for r in read_metrics(ours.run_dir / "metrics.csv") if r["val/loss_balanced"]]
    assert len(val) == len(got) == 1
    assert float(got[0]["val/loss_balanced"]) == pytest.approx(
        float(val[0]["val/loss_balanced"]), rel=1e-4
    )


def test_no_spurious_args_warning(runs):
    """``lightning fit ...`` from the shell must not warn about passing ``args`` and
    ``sys.argv`` together (cli.lightning_main hands sys.argv[1:] to LightningCLI as ``args``)."""
    run = runs["forward"]
    assert run.returncode == 0, run.explain()
    assert "not recommended to provide both args and command line arguments" not in run.stderr


def test_no_warning_that_logs_will_be_deleted(runs):
    """The W&B run must not be started in the run directory before the CSV logger claimed it:
    Lightning then warns "Previous log files in this directory will be deleted"."""
    run = runs["forward"]
    assert run.returncode == 0, run.explain()
    assert "will be deleted" not in run.stderr


# ------------------------------------------------------------------------------------ DDP
def test_ddp_run_covers_the_epoch_once(runs, cli_cache):
    """Under DDP each rank must draw half of the epoch's stratified sample. The DataModule's
    sampler already splits by rank; Lightning's default ``use_distributed_sampler=True`` wraps it
    in a ``DistributedSamplerWrapper`` and splits it again, leaving a quarter per rank."""
    import math

    from convae_lightning.data import TimitDataModule

    run = runs["ddp"]
    assert run.returncode == 0, run.explain()
    dm = TimitDataModule(cache_dir=str(cli_cache), train_per_class=5, eval_per_class=3,
                         batch_size=8, progress=False)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    drawn = len(list(iter(dm.train_dataloader().sampler)))
    expected_steps = math.ceil(math.ceil(drawn / 2) / 8)
    checkpoint = load_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == expected_steps


def test_ddp_run_writes_one_run_directory(runs):
    """Rank 1 must not create a second, empty ``version_1`` next to rank 0's run."""
    run = runs["ddp"]
    assert run.returncode == 0, run.explain()
    assert list(run.run_dir.glob("wandb/offline-run-*"))
    assert sorted(p.name for p in (run.cwd / "runs" / "forward").iterdir()) == ["version_0"]


def test_presets_in_a_real_run(runs):
    """All five presets appended to regular_ae.yaml (as a weakly stacked autoencoder)."""
    run = runs["presets"]
    assert run.returncode == 0, run.explain()
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    callbacks = config["trainer"]["callbacks"]
    assert [cb["class_path"].rsplit(".", 1)[1] for cb in callbacks[-5:]] == [
        "TiedTransposeSync",
        "LayerFreezing",
        "ReconstructionLogger",
        "EarlyStopping",
        "StackGrowth",
    ]
    assert callbacks[-1]["init_args"]["max_epochs_per_unit"] == 1
    assert (run.run_dir / "reconstructions" / "epoch=0.png").is_file()
    assert (run.run_dir / "reconstructions" / "epoch=1.png").is_file()
    state = load_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")["callbacks"]
    freezing = next(v for k, v in state.items() if k.startswith("LayerFreezing"))
    assert freezing["frozen"] == ["encoder.0.conv.weight"]
    assert any(k.startswith("EarlyStopping{'monitor': 'val/loss_balanced'") for k in state)
    growth = next(v for k, v in state.items() if k.startswith("StackGrowth"))
    assert growth["history"], "the stack never grew"


# ------------------------------------------------------------------- two runs in one process
def test_two_runs_in_one_process_get_their_own_offline_wandb_run(tmp_path, monkeypatch, cli_cache):
    import wandb

    from convae_lightning.cli import ConvaeCLI
    from convae_lightning.loggers import OfflineWandbLogger

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(CONF / "regular_ae.yaml"), *TINY]
    args += ["--progress_bar.refresh_rate", "0", "--trainer.enable_model_summary", "false"]

    run_ids = []
    for version in (0, 1):
        cli = ConvaeCLI(args=args)
        assert "WANDB_MODE" not in os.environ, "the first run leaked WANDB_MODE"
        assert wandb.run is None, "the W&B run was not finished"
        logger = next(lg for lg in cli.trainer.loggers if isinstance(lg, OfflineWandbLogger))
        run_dir = tmp_path / "runs" / "regular_ae" / f"version_{version}"
        assert Path(cli.trainer.log_dir) == Path("runs/regular_ae") / f"version_{version}"
        assert Path(logger.save_dir).resolve() == run_dir.resolve()
        offline = list((run_dir / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, offline
        run_ids.append(offline[0].name.rsplit("-", 1)[1])
    assert run_ids[0] != run_ids[1]


def test_console_shows_no_known_noise(runs):
    """No FLOPs column of zeros, no Lightning advert, no W&B banner or 30-line summary, no known
    dependency deprecation; one line says where the offline W&B run is and how to upload it."""
    run = runs["forward"]
    assert run.returncode == 0, run.explain()
    output = run.stdout + run.stderr
    for noise in ("FLOPs", "💡", "Run history", "Run summary", "LeafSpec", "anonymous setting",
                  "wandb: Tracking run", "was deprecated in v4"):  # fmt: skip
        assert noise not in output, noise
    hints = [line for line in output.splitlines() if "wandb sync" in line]
    assert len(hints) == 1, hints
    assert "wandb sync runs/forward/version_0/wandb/offline-run-" in hints[0]


# ------------------------------------------------------- every config from its own checkpoints
#: Evaluation commands log to CSV only (W&B's service costs seconds per process); ``test``
#: keeps the default loggers, so one evaluation continues the run's W&B run.
CSV_ONLY = "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]"
QUICK = [
    "--trainer.logger", CSV_ONLY,
    "--progress_bar.refresh_rate", "0", "--trainer.enable_model_summary", "false",
]  # fmt: skip


def has_predict_step(name: str) -> bool:
    import importlib

    import lightning.pytorch as pl

    module, _, cls = config_class_path(name).rpartition(".")
    model = getattr(importlib.import_module(module), cls)
    return model.predict_step is not pl.LightningModule.predict_step


def checkpoint_commands(name: str, autoencoder: Path) -> dict[str, list[str]]:
    """``fit --ckpt_path last`` one epoch further, and validate/test/predict from the run's
    checkpoints (``last``, and the explicit path), with the arguments of the fit."""
    fit = fit_args(name, autoencoder)
    same = fit[1:]
    epochs = 3 if name in STACKS else 2
    last = f"runs/{name}/version_0/checkpoints/last.ckpt"
    commands = {
        "validate": ["validate", *same, *QUICK, "--ckpt_path", "last"],
        "test": ["test", *same, "--ckpt_path", last],
        "predict": ["predict", *same, *QUICK, "--ckpt_path", "last"],
        "resume": [*fit, "--trainer.max_epochs", str(epochs), "--ckpt_path", "last"],
    }
    if not has_predict_step(name):  # until every model implements predict_step
        del commands["predict"]
    return commands


@pytest.fixture(scope="module")
def from_checkpoints(runs, cli_cache) -> dict[tuple[str, str], Run]:
    """Each config's run, evaluated from its checkpoints (two at a time), then resumed."""
    autoencoder = runs["regular_ae"].run_dir / "checkpoints" / "last.ckpt"
    jobs = {(name, kind): args for name in RUN_CONFIGS
            for kind, args in checkpoint_commands(name, autoencoder).items()}  # fmt: skip
    results = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for phase in (("validate", "test", "predict"), ("resume",)):
            futures = {
                key: pool.submit(run_cli, "convae", args, runs[key[0]].cwd, cli_cache, key[0])
                for key, args in jobs.items()
                if key[1] in phase
            }
            results.update({key: future.result() for key, future in futures.items()})
    return results


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_fit_resumes_from_its_last_checkpoint(from_checkpoints, runs, name):
    run = from_checkpoints[(name, "resume")]
    assert run.returncode == 0, run.explain()
    assert sorted(p.name for p in (run.cwd / "runs" / name).iterdir()) == ["version_0"]
    before = 1 if name in STACKS else 0
    assert load_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")["epoch"] == before + 1
    epochs = {row["epoch"] for row in read_metrics(run.run_dir / "metrics.csv")}
    assert epochs == {str(e) for e in range(before + 2)}, "metrics were not appended"
    status = json.loads((run.run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    assert status["resumed_from"].endswith(f"runs/{name}/version_0/checkpoints/last.ckpt")


@pytest.mark.parametrize("stage", ["validate", "test"])
@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_evaluates_from_its_checkpoint_into_the_run_folder(from_checkpoints, name, stage):
    from convae_lightning.runs import RunRecord

    run = from_checkpoints[(name, stage)]
    assert run.returncode == 0, run.explain()
    assert sorted(p.name for p in (run.cwd / "runs" / name).iterdir()) == ["version_0"]
    results = RunRecord.load(run.run_dir).evaluation(stage, checkpoint="last.ckpt")
    prefix = "val/" if stage == "validate" else "test/"
    assert [k for k in results if k.startswith(prefix)], results
    assert (run.run_dir / f"{stage}_config.yaml").is_file()
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["ckpt_path"] is None


def test_test_continues_the_runs_wandb_run(from_checkpoints):
    run = from_checkpoints[("forward", "test")]
    assert run.returncode == 0, run.explain()
    ids = {p.name.rsplit("-", 1)[1] for p in (run.run_dir / "wandb").glob("offline-run-*")}
    assert len(ids) == 1, ids


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_predict_writes_predictions_beside_the_checkpoint(from_checkpoints, name):
    if (name, "predict") not in from_checkpoints:
        pytest.skip(f"{config_class_path(name)} has no predict_step yet (models branch)")
    run = from_checkpoints[(name, "predict")]
    assert run.returncode == 0, run.explain()
    assert sorted(p.name for p in (run.cwd / "runs" / name).iterdir()) == ["version_0"]
    with np.load(run.run_dir / "predictions.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    rows = len(arrays["labels"])
    assert rows > 0 and (arrays["labels"] >= 0).all()
    assert len(arrays["class_names"]) == 48 and arrays["label_names"].shape == (rows,)
    assert str(arrays["checkpoint"]).endswith("last.ckpt")
    if "Classifier" in config_class_path(name):
        assert arrays["posteriors"].shape == (rows, 48)
        np.testing.assert_allclose(arrays["posteriors"].sum(1), 1.0, rtol=1e-5)
        assert (arrays["predicted"] == arrays["posteriors"].argmax(1)).all()
    else:
        assert arrays["codes"].shape[0] == rows
    if "utterance_ids" in arrays:
        assert arrays["utterance_ids"].shape == (rows,) and arrays["spans"].shape == (rows, 2)
