"""``lightning fit --config conf/<name>.yaml`` (and ``convae fit``) as real subprocesses.

Every run config of ``conf/`` is fitted for one or two tiny epochs on the embedded corpus in a
fresh working directory, with ``WANDB_MODE`` absent: the run must land in
``runs/<config stem>/version_0/`` with its checkpoint, resolved config, CSV metrics and an
*offline* W&B run. The callback presets of ``callbacks/`` are composed onto run configs with
``--trainer.callbacks+=callbacks/<preset>.yaml``.
"""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, cli_env

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PRESETS = REPO / "callbacks"
BIN = Path(sys.executable).parent

#: Every run config of conf/ (thesis_size*.yaml are overlays, not run configs).
RUN_CONFIGS = (
    "forward",
    "regular_ae",
    "strong_stack",
    "weak_stack",
    "inversion",
    "fixed_classifier",
    "pretrained_classifier",
    "baseline_untrained",
)
STACKS = ("strong_stack", "weak_stack")
NEEDS_AUTOENCODER = ("fixed_classifier", "pretrained_classifier")
PRESET_NAMES = (
    "tied_transpose_sync",
    "layer_freezing",
    "stack_growth",
    "reconstruction_logger",
    "early_stopping",
)

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
STACK_OVERRIDES = [
    "--trainer.max_epochs", "2",
    "--trainer.callbacks",
    "[{class_path: convae_lightning.callbacks.StackGrowth, init_args: {max_epochs_per_unit: 1}},"
    " {class_path: convae_lightning.callbacks.TiedTransposeSync},"
    " {class_path: convae_lightning.callbacks.ReconstructionLogger,"
    "  init_args: {every_n_epochs: 1, num_examples: 2}}]",
]  # fmt: skip


#: The forward network on two CPU processes under DDP, one full epoch of small batches.
DDP_ARGS = [
    "fit", "--config", str(CONF / "forward.yaml"),
    "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
    "--data.train_per_class", "5", "--data.eval_per_class", "3", "--data.batch_size", "8",
]  # fmt: skip


@dataclass
class Run:
    """A finished CLI subprocess and where it ran."""

    returncode: int
    stdout: str
    stderr: str
    cwd: Path
    name: str

    @property
    def run_dir(self) -> Path:
        return self.cwd / "runs" / self.name / "version_0"

    def explain(self) -> str:
        return f"exit code {self.returncode}\n--- stderr (tail) ---\n{self.stderr[-4000:]}"


def run_cli(
    command: str, args: list[str], cwd: Path, cache: Path, name: str, timeout: float = 300
) -> Run:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(BIN / command), *args],
        cwd=cwd,
        env=cli_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, cwd, name)


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


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


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


# ------------------------------------------------------------------------------ --print_config
def test_print_config_shows_presets_appended(tmp_path, cli_cache):
    args = ["fit", "--config", str(CONF / "weak_stack.yaml")]
    args += [
        f"--trainer.callbacks+={PRESETS / p}.yaml" for p in PRESET_NAMES if p != "stack_growth"
    ]
    args.append("--print_config")
    run = run_cli("lightning", args, tmp_path, cli_cache, "weak_stack", timeout=120)
    assert run.returncode == 0, run.explain()
    config = yaml.safe_load(run.stdout)
    assert config["model"]["class_path"] == "convae_lightning.models.StackedAutoencoder"
    own = [cb["class_path"] for cb in yaml.safe_load((CONF / "weak_stack.yaml").read_text())
           ["trainer"]["callbacks"]]  # fmt: skip
    appended = [yaml.safe_load((PRESETS / f"{p}.yaml").read_text())["class_path"]
                for p in PRESET_NAMES if p != "stack_growth"]  # fmt: skip
    assert [cb["class_path"] for cb in config["trainer"]["callbacks"]] == own + appended
    freezing = config["trainer"]["callbacks"][len(own) + 1]
    assert freezing["init_args"]["freeze"] == ["encoder.0.conv.weight"]
    assert not (tmp_path / "runs").exists(), "--print_config must not start a run"


# --------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_is_one_callback(preset):
    """Each preset is a single ``class_path``/``init_args`` mapping that builds its callback."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback

    path = PRESETS / f"{preset}.yaml"
    spec = yaml.safe_load(path.read_text())
    assert isinstance(spec, dict)
    assert set(spec) <= {"class_path", "init_args"}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--callback", type=Callback, enable_path=True)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    callback = instantiate(parser.parse_args(["--callback", str(path)])).callback
    module, _, name = spec["class_path"].rpartition(".")
    assert type(callback) is getattr(importlib.import_module(module), name)
    for key, value in (spec.get("init_args") or {}).items():
        assert getattr(callback, key) == value, key


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_every_preset_composes_with_every_config(name, capsys):
    from convae_lightning.cli import ConvaeCLI

    args = ["fit", "--config", str(CONF / f"{name}.yaml")]
    args += [f"--trainer.callbacks+={PRESETS / p}.yaml" for p in PRESET_NAMES]
    with pytest.raises(SystemExit) as exit_info:
        ConvaeCLI(args=[*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    own = yaml.safe_load((CONF / f"{name}.yaml").read_text())["trainer"].get("callbacks") or []
    paths = [cb["class_path"] for cb in config["trainer"]["callbacks"]]
    assert paths[: len(own)] == [cb["class_path"] for cb in own]
    assert paths[len(own) :] == [
        yaml.safe_load((PRESETS / f"{p}.yaml").read_text())["class_path"] for p in PRESET_NAMES
    ]


def print_config(capsys, *configs: str) -> dict:
    """The resolved config of ``fit --config A --config B ... --print_config`` (in-process)."""
    from convae_lightning.cli import ConvaeCLI

    args = ["fit"]
    for name in configs:
        args += ["--config", str(CONF / f"{name}.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        ConvaeCLI(args=[*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_thesis_size_overlay_sizes_the_data(name, capsys):
    config = print_config(capsys, name, "thesis_size")
    data = config["data"]
    assert (data["train_per_class"], data["eval_per_class"], data["batch_size"]) == (500, 200, 100)
    assert config["model"]["class_path"] == config_class_path(name)


@pytest.mark.parametrize("name", STACKS)
def test_thesis_size_overlay_allows_50_epochs_per_unit(name, capsys):
    """thesis_size_stack.yaml restates the stacks' callbacks with up to 50 epochs per unit."""
    config = print_config(capsys, name, "thesis_size_stack")
    growth = next(cb for cb in config["trainer"]["callbacks"]
                  if cb["class_path"].endswith("StackGrowth"))  # fmt: skip
    cap = growth["init_args"]["max_epochs_per_unit"]
    assert cap is None or cap >= 50, f"max_epochs_per_unit={cap}"
    assert config["trainer"]["max_epochs"] >= 4 * 50


@pytest.mark.parametrize("name", [n for n in RUN_CONFIGS if n not in STACKS])
def test_thesis_size_overlay_caps_single_runs_at_50_epochs(name, capsys):
    """The thesis (Appendix A, 5.1) capped training at the fiftieth epoch."""
    config = print_config(capsys, name, "thesis_size")
    assert config["trainer"]["max_epochs"] <= 50


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
